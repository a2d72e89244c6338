#include "moe/storage/store.h"

#include "moe/telemetry/load.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>
#include <variant>
#include <vector>

#include "schema.h"
#include "sqlite_util.h"
#include "step_blob.h"

namespace moe::storage {
namespace {

using internal::Statement;
using Millis = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

constexpr Millis kMinBackoff{10};
constexpr Millis kMaxBackoff{2000};
// A retention pass that has a backlog yields to queued writes after this long.
constexpr Millis kRetentionBudget{500};

struct CommandSent {
  int64_t decision_id = 0;
  uint64_t epoch = 0;
  int64_t sent_ns = 0;
};
struct AckUpdate {
  int64_t decision_id = 0;
  telemetry::Ack ack;
};
struct OutcomeUpdate {
  int64_t decision_id = 0;
  DecisionOutcome outcome;
};
struct RepeatUpdate {
  int64_t decision_id = 0;
  uint64_t repeats = 0;
  int64_t last_ns = 0;
};
struct UnknownUpdate {
  std::optional<int64_t> decision_id;
  std::string reason;
  int64_t ns = 0;
};
struct ActionLink {
  int64_t action_id = 0;
  int64_t decision_id = 0;
};
struct EngineGone {
  std::string engine_id;
  int64_t gone_ns = 0;
};

using Payload = std::variant<telemetry::Hello, internal::PackedStep, EpochRow, DecisionRow,
                             CommandSent, AckUpdate, OutcomeUpdate, LearningSampleRow, RepeatUpdate,
                             UnknownUpdate, OperatorActionRow, ActionLink, EngineGone>;

// One queued write. Tickets increase in enqueue order; the queue is FIFO, so
// "ticket t committed" means every write up to t is.
struct Op {
  uint64_t ticket = 0;
  size_t rows = 1;
  Payload payload;
};

struct BatchCounts {
  uint64_t steps = 0;
  uint64_t rows = 0;
};

// Statement texts; every one is prepared once at Open and reused.
constexpr const char* kUpsertEngineHello = R"sql(
INSERT INTO engines(engine_id, backend, num_layers, num_experts, num_shared_experts,
                    num_replicas, num_devices, hidden, first_seen_ns, last_seen_ns, last_epoch)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)
ON CONFLICT(engine_id) DO UPDATE SET
  backend = excluded.backend, num_layers = excluded.num_layers,
  num_experts = excluded.num_experts, num_shared_experts = excluded.num_shared_experts,
  num_replicas = excluded.num_replicas, num_devices = excluded.num_devices,
  hidden = excluded.hidden, gone_ns = NULL,
  first_seen_ns = MIN(first_seen_ns, excluded.first_seen_ns),
  last_epoch = CASE WHEN excluded.last_seen_ns >= last_seen_ns
                    THEN excluded.last_epoch ELSE last_epoch END,
  last_seen_ns = MAX(last_seen_ns, excluded.last_seen_ns))sql";

constexpr const char* kTouchEngineStep = R"sql(
INSERT INTO engines(engine_id, num_layers, num_experts, first_seen_ns, last_seen_ns,
                    last_step, last_epoch)
VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)
ON CONFLICT(engine_id) DO UPDATE SET
  first_seen_ns = MIN(first_seen_ns, excluded.first_seen_ns), gone_ns = NULL,
  last_step = CASE WHEN excluded.last_seen_ns >= last_seen_ns
                   THEN excluded.last_step ELSE last_step END,
  last_epoch = CASE WHEN excluded.last_seen_ns >= last_seen_ns
                    THEN excluded.last_epoch ELSE last_epoch END,
  last_seen_ns = MAX(last_seen_ns, excluded.last_seen_ns))sql";

constexpr const char* kInsertStep = R"sql(
INSERT INTO steps(engine_id, step, seq, timestamp_ns, epoch, step_us, timing_on_device,
                  num_layers, layers, loads)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10))sql";

constexpr const char* kUpsertEpoch = R"sql(
INSERT INTO epochs(engine_id, epoch, created_ns, knobs_json, decision_id)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT(engine_id, epoch) DO UPDATE SET
  created_ns = excluded.created_ns, knobs_json = excluded.knobs_json,
  decision_id = excluded.decision_id)sql";

constexpr const char* kInsertLearningSample = R"sql(
INSERT INTO learning_samples(engine_id, epoch, knob, created_ns, regime, value, reward, steps)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8))sql";

constexpr const char* kInsertDecision = R"sql(
INSERT INTO decisions(id, engine_id, created_ns, policy, layer, knob, inputs_json,
                      proposal_json, verdict, verdict_reason, command_json, status, epoch,
                      sent_ns, acked_ns, applied_at_step, ack_error, outcome_json,
                      reward_before, reward_after, measured_ns, predicted_gain, prediction_json)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
        ?19, ?20, ?21, ?22, ?23))sql";

constexpr const char* kUpdateSent =
    "UPDATE decisions SET status = 'sent', epoch = ?2, sent_ns = ?3 WHERE id = ?1";

constexpr const char* kUpdateAck = R"sql(
UPDATE decisions SET status = ?2, acked_ns = ?3, applied_at_step = ?4, ack_error = ?5,
                     epoch = COALESCE(epoch, ?6)
WHERE id = ?1)sql";

constexpr const char* kUpdateRepeat =
    "UPDATE decisions SET repeats = ?2, last_repeat_ns = ?3 WHERE id = ?1";

constexpr const char* kInsertOperatorAction = R"sql(
INSERT INTO operator_actions(id, created_ns, engine_id, action, knob, value, until_ns, mode, uid,
                             who, reason, result, decision_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13))sql";

constexpr const char* kUpdateUnknown = R"sql(
UPDATE decisions SET status = 'unknown', measured_ns = ?3,
  ack_error = CASE WHEN ack_error = '' THEN ?2 ELSE ack_error || '; ' || ?2 END
WHERE (?1 IS NULL AND status IN ('sent', 'acked'))
   OR (id = ?1 AND status IN ('sent', 'acked', 'failed')))sql";

constexpr const char* kLinkOperatorAction =
    "UPDATE operator_actions SET decision_id = ?2 WHERE id = ?1";

constexpr const char* kMarkEngineGone = "UPDATE engines SET gone_ns = ?2 WHERE engine_id = ?1";

constexpr const char* kUpdateOutcome = R"sql(
UPDATE decisions SET status = 'measured', outcome_json = ?2, reward_before = ?3,
                     reward_after = ?4, measured_ns = ?5
WHERE id = ?1)sql";

// Raw rows are in `steps` (one per step, migration 5) and, written before
// migration 5, in `step_layers` with `expert_loads`.
constexpr const char* kMinRawTime =
    "SELECT MIN(t) FROM (SELECT MIN(timestamp_ns) AS t FROM steps WHERE timestamp_ns < ?1 "
    "UNION ALL SELECT MIN(timestamp_ns) FROM step_layers WHERE timestamp_ns < ?1)";

constexpr const char* kDeleteRawPackedSteps = "DELETE FROM steps WHERE timestamp_ns < ?1";

constexpr const char* kSelectRollup =
    "SELECT {} FROM rollups WHERE engine_id = ?1 AND layer = ?2 AND bucket_ns = ?3";

constexpr const char* kDeleteRawLoads =
    "DELETE FROM expert_loads WHERE step_layer_id IN "
    "(SELECT id FROM step_layers WHERE timestamp_ns < ?1)";

constexpr const char* kDeleteRawSteps = "DELETE FROM step_layers WHERE timestamp_ns < ?1";

class StoreImpl final : public Store {
 public:
  StoreImpl(const StoreOptions& options, Clock* clock, internal::DbHandle db,
            int64_t last_decision_id, int64_t last_action_id)
      : options_(options), clock_(clock), db_(std::move(db)) {
    stats_.last_decision_id = last_decision_id;
    stats_.last_action_id = last_action_id;
    next_retention_mono_ = clock_->MonotonicNanos() + RetentionIntervalNanos();
  }

  ~StoreImpl() override { (void)Close(); }

  Status Prepare();
  void Start() {
    writer_ = std::thread([this] { WriterLoop(); });
  }

  void UpsertEngine(const telemetry::Hello& hello) override {
    telemetry::Hello copy = hello;
    if (copy.timestamp_ns == 0) copy.timestamp_ns = clock_->NowNanos();
    std::lock_guard lock(mu_);
    EnqueueLocked(std::move(copy), 1);
  }

  void AppendStep(const telemetry::StepRecord& record) override {
    size_t rows = std::max<size_t>(1, record.layers.size());
    // Packed on the caller's thread, outside the lock: the queue holds the
    // row as written, a fraction of the record's size.
    internal::PackedStep packed = internal::PackStep(record);
    std::lock_guard lock(mu_);
    if (!closed_ && queued_rows_ + inflight_rows_ >= options_.max_queue) {
      ++stats_.rejected;
      // Log the first refusal and then every power of two, not every one.
      if ((stats_.rejected & (stats_.rejected - 1)) == 0) {
        spdlog::warn("storage: write queue full ({} rows pending); refused {} step records so far",
                     queued_rows_ + inflight_rows_, stats_.rejected);
      }
      return;
    }
    EnqueueLocked(std::move(packed), rows);
  }

  void RecordEpoch(const EpochRow& row) override {
    std::lock_guard lock(mu_);
    EnqueueLocked(row, 1);
  }

  void RecordLearningSample(const LearningSampleRow& row) override {
    std::lock_guard lock(mu_);
    EnqueueLocked(row, 1);
  }

  int64_t RecordDecision(DecisionRow row) override {
    std::lock_guard lock(mu_);
    row.id = ++stats_.last_decision_id;
    int64_t id = row.id;
    EnqueueLocked(std::move(row), 1);
    return id;
  }

  void RecordCommandSent(int64_t decision_id, uint64_t epoch, int64_t sent_ns) override {
    std::lock_guard lock(mu_);
    EnqueueLocked(CommandSent{decision_id, epoch, sent_ns}, 1);
  }

  void RecordAck(int64_t decision_id, const telemetry::Ack& ack) override {
    std::lock_guard lock(mu_);
    EnqueueLocked(AckUpdate{decision_id, ack}, 1);
  }

  void RecordOutcome(int64_t decision_id, const DecisionOutcome& outcome) override {
    std::lock_guard lock(mu_);
    EnqueueLocked(OutcomeUpdate{decision_id, outcome}, 1);
  }

  void RecordRepeat(int64_t decision_id, uint64_t repeats, int64_t last_ns) override {
    std::lock_guard lock(mu_);
    EnqueueLocked(RepeatUpdate{decision_id, repeats, last_ns}, 1);
  }

  void RecordUnknown(std::optional<int64_t> decision_id, const std::string& reason,
                     int64_t ns) override {
    std::lock_guard lock(mu_);
    EnqueueLocked(UnknownUpdate{decision_id, reason, ns}, 1);
  }

  int64_t RecordOperatorAction(OperatorActionRow row) override {
    std::lock_guard lock(mu_);
    row.id = ++stats_.last_action_id;
    int64_t id = row.id;
    EnqueueLocked(std::move(row), 1);
    return id;
  }

  void LinkOperatorAction(int64_t action_id, int64_t decision_id) override {
    std::lock_guard lock(mu_);
    EnqueueLocked(ActionLink{action_id, decision_id}, 1);
  }

  void MarkEngineGone(const std::string& engine_id, int64_t gone_ns) override {
    std::lock_guard lock(mu_);
    EnqueueLocked(EngineGone{engine_id, gone_ns}, 1);
  }

  Status Flush(Millis timeout) override;
  Status RunRetention(Millis timeout) override;
  Status Close() override;

  StoreStats stats() const override {
    std::lock_guard lock(mu_);
    StoreStats copy = stats_;
    copy.pending = queue_.size() + inflight_ops_;
    return copy;
  }

  const std::string& path() const override { return options_.path; }

 private:
  struct Statements {
    Statement begin;
    Statement commit;
    Statement rollback;
    Statement upsert_engine_hello;
    Statement touch_engine_step;
    Statement insert_step;
    Statement upsert_epoch;
    Statement insert_learning_sample;
    Statement insert_decision;
    Statement update_sent;
    Statement update_ack;
    Statement update_outcome;
    Statement update_repeat;
    Statement update_unknown;
    Statement insert_operator_action;
    Statement mark_engine_gone;
    Statement link_operator_action;
    Statement min_raw_time;
    Statement select_raw;
    Statement select_raw_steps;
    Statement select_rollup;
    Statement upsert_rollup;
    Statement delete_raw_loads;
    Statement delete_raw_steps;
    Statement delete_raw_packed_steps;
  };

  int64_t RetentionIntervalNanos() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(options_.retention_interval)
        .count();
  }

  void EnqueueLocked(Payload payload, size_t rows);
  void TakeBatchLocked(std::vector<Op>* batch);
  void WriterLoop();
  Status WriteBatch(const std::vector<Op>& batch, BatchCounts* counts);
  Status ApplyOp(const Op& op, BatchCounts* counts);
  Status ApplyStep(const internal::PackedStep& step, BatchCounts* counts);
  Status ApplyDecisionUpdate(Statement& stmt, int64_t decision_id, std::string_view what,
                             BatchCounts* counts);
  Status RetentionPass(bool bounded, uint64_t* num_rolled);
  Status RetentionChunk(int64_t horizon_ns, uint64_t* num_rolled, bool* more);
  Status InTransaction(const std::function<Status()>& body);

  const StoreOptions options_;
  Clock* const clock_;
  internal::DbHandle db_;
  std::unique_ptr<Statements> stmts_;  // used by the writer thread only
  std::thread writer_;
  int64_t next_retention_mono_ = 0;  // writer thread only

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // wakes the writer
  std::condition_variable done_cv_;  // wakes Flush, RunRetention and Close
  std::deque<Op> queue_;
  size_t queued_rows_ = 0;
  size_t inflight_rows_ = 0;  // in the writer's current (possibly failing) batch
  size_t inflight_ops_ = 0;
  uint64_t next_ticket_ = 0;           // last ticket handed out
  uint64_t committed_ticket_ = 0;      // every write up to this ticket is done
  uint64_t isolate_until_ticket_ = 0;  // writes up to here go one per transaction
  int flush_waiters_ = 0;
  uint64_t retention_requested_ = 0;
  uint64_t retention_done_ = 0;
  Status retention_status_;
  bool stopping_ = false;  // Close has begun: drain, then exit
  bool abandon_ = false;   // Close gives up: exit now
  bool closed_ = false;    // writes are no longer accepted
  uint64_t ignored_after_close_ = 0;
  StoreStats stats_;

  std::mutex close_mu_;
  bool close_done_ = false;
  Status close_status_;
};

Status StoreImpl::Prepare() {
  stmts_ = std::make_unique<Statements>();
  sqlite3* db = db_.get();
  auto prep = [db](Statement* out, std::string_view sql) -> Status {
    MOE_ASSIGN_OR_RETURN(*out, Statement::Prepare(db, sql, /*persistent=*/true));
    return Status::Ok();
  };
  Statements& s = *stmts_;
  MOE_RETURN_IF_ERROR(prep(&s.begin, "BEGIN IMMEDIATE"));
  MOE_RETURN_IF_ERROR(prep(&s.commit, "COMMIT"));
  MOE_RETURN_IF_ERROR(prep(&s.rollback, "ROLLBACK"));
  MOE_RETURN_IF_ERROR(prep(&s.upsert_engine_hello, kUpsertEngineHello));
  MOE_RETURN_IF_ERROR(prep(&s.touch_engine_step, kTouchEngineStep));
  MOE_RETURN_IF_ERROR(prep(&s.insert_step, kInsertStep));
  MOE_RETURN_IF_ERROR(prep(&s.upsert_epoch, kUpsertEpoch));
  MOE_RETURN_IF_ERROR(prep(&s.insert_learning_sample, kInsertLearningSample));
  MOE_RETURN_IF_ERROR(prep(&s.insert_decision, kInsertDecision));
  MOE_RETURN_IF_ERROR(prep(&s.update_sent, kUpdateSent));
  MOE_RETURN_IF_ERROR(prep(&s.update_ack, kUpdateAck));
  MOE_RETURN_IF_ERROR(prep(&s.update_outcome, kUpdateOutcome));
  MOE_RETURN_IF_ERROR(prep(&s.update_repeat, kUpdateRepeat));
  MOE_RETURN_IF_ERROR(prep(&s.update_unknown, kUpdateUnknown));
  MOE_RETURN_IF_ERROR(prep(&s.insert_operator_action, kInsertOperatorAction));
  MOE_RETURN_IF_ERROR(prep(&s.mark_engine_gone, kMarkEngineGone));
  MOE_RETURN_IF_ERROR(prep(&s.link_operator_action, kLinkOperatorAction));
  MOE_RETURN_IF_ERROR(prep(&s.min_raw_time, kMinRawTime));
  MOE_RETURN_IF_ERROR(prep(&s.select_raw, fmt::format("SELECT {}, tokens FROM step_layers LEFT "
                                                      "JOIN expert_loads ON step_layer_id = id "
                                                      "WHERE timestamp_ns < ?1",
                                                      internal::kStepColumns)));
  MOE_RETURN_IF_ERROR(
      prep(&s.select_raw_steps, fmt::format("SELECT {}, layers, loads FROM steps WHERE "
                                            "timestamp_ns < ?1",
                                            internal::kPackedStepColumns)));
  MOE_RETURN_IF_ERROR(
      prep(&s.select_rollup, fmt::format(fmt::runtime(kSelectRollup), internal::kRollupColumns)));
  std::string placeholders;
  for (int i = 1; i <= 3 + internal::kNumRollupColumns; ++i) {
    placeholders += fmt::format("{}?{}", i == 1 ? "" : ", ", i);
  }
  MOE_RETURN_IF_ERROR(
      prep(&s.upsert_rollup, fmt::format("INSERT OR REPLACE INTO rollups(engine_id, layer, "
                                         "bucket_ns, {}) VALUES ({})",
                                         internal::kRollupColumns, placeholders)));
  MOE_RETURN_IF_ERROR(prep(&s.delete_raw_loads, kDeleteRawLoads));
  MOE_RETURN_IF_ERROR(prep(&s.delete_raw_steps, kDeleteRawSteps));
  MOE_RETURN_IF_ERROR(prep(&s.delete_raw_packed_steps, kDeleteRawPackedSteps));
  return Status::Ok();
}

void StoreImpl::EnqueueLocked(Payload payload, size_t rows) {
  if (closed_) {
    ++ignored_after_close_;
    if ((ignored_after_close_ & (ignored_after_close_ - 1)) == 0) {
      spdlog::error("storage: {} writes to {} ignored: the store is closed", ignored_after_close_,
                    options_.path);
    }
    return;
  }
  queue_.push_back(Op{++next_ticket_, rows, std::move(payload)});
  queued_rows_ += rows;
  if (queued_rows_ >= options_.batch_rows) work_cv_.notify_one();
}

void StoreImpl::TakeBatchLocked(std::vector<Op>* batch) {
  size_t rows = 0;
  while (!queue_.empty()) {
    Op& op = queue_.front();
    if (!batch->empty() &&
        (rows + op.rows > options_.batch_rows || batch->front().ticket <= isolate_until_ticket_)) {
      break;
    }
    rows += op.rows;
    batch->push_back(std::move(op));
    queue_.pop_front();
  }
  queued_rows_ -= rows;
  inflight_rows_ = rows;
  inflight_ops_ = batch->size();
}

void StoreImpl::WriterLoop() {
  std::vector<Op> batch;
  Millis backoff = kMinBackoff;  // the wait before the next retry
  Millis retry_wait = kMinBackoff;
  bool failing = false;
  auto next_tick = SteadyClock::now() + options_.flush_interval;
  std::unique_lock lock(mu_);
  while (true) {
    if (failing) {
      work_cv_.wait_for(lock, retry_wait, [&] { return abandon_; });
    } else {
      work_cv_.wait_until(lock, next_tick, [&] {
        return abandon_ || retention_requested_ > retention_done_ ||
               (!queue_.empty() &&
                (stopping_ || flush_waiters_ > 0 || queued_rows_ >= options_.batch_rows));
      });
    }
    if (abandon_) break;
    if (SteadyClock::now() >= next_tick) next_tick = SteadyClock::now() + options_.flush_interval;

    if (batch.empty()) TakeBatchLocked(&batch);
    if (!batch.empty()) {
      lock.unlock();
      BatchCounts counts;
      Status status = WriteBatch(batch, &counts);
      lock.lock();
      if (status.ok()) {
        committed_ticket_ = batch.back().ticket;
        stats_.steps_written += counts.steps;
        stats_.rows_written += counts.rows;
        ++stats_.transactions;
        stats_.failing = false;
        batch.clear();
        inflight_rows_ = inflight_ops_ = 0;
        failing = false;
        backoff = kMinBackoff;
        done_cv_.notify_all();
        continue;
      }
      ++stats_.write_errors;
      stats_.last_error = status.ToString();
      if (status.code() == StatusCode::kInvalidArgument) {
        // Retrying cannot fix a data error. Find the culprit by writing the
        // batch one write per transaction; a single culprit is discarded.
        if (batch.size() == 1) {
          spdlog::error("storage: discarding a write that SQLite rejects: {}", stats_.last_error);
          committed_ticket_ = batch.back().ticket;
          batch.clear();
          inflight_rows_ = inflight_ops_ = 0;
          done_cv_.notify_all();
          continue;
        }
        isolate_until_ticket_ = batch.back().ticket;
        for (auto it = batch.rbegin(); it != batch.rend(); ++it) {
          queued_rows_ += it->rows;
          queue_.push_front(std::move(*it));
        }
        batch.clear();
        inflight_rows_ = inflight_ops_ = 0;
        continue;
      }
      stats_.failing = true;
      spdlog::warn("storage: write of {} records to {} failed (attempt {}; retrying in {} ms): {}",
                   batch.size(), options_.path, stats_.write_errors, backoff.count(),
                   stats_.last_error);
      failing = true;
      retry_wait = backoff;
      backoff = std::min(backoff * 2, kMaxBackoff);
      continue;
    }
    bool requested = retention_requested_ > retention_done_;
    bool due =
        options_.raw_retention.count() > 0 && clock_->MonotonicNanos() >= next_retention_mono_;
    if (requested || due) {
      uint64_t request = retention_requested_;
      lock.unlock();
      uint64_t num_rolled = 0;
      // A requested pass runs to the end; a periodic one yields to writes.
      Status status = options_.raw_retention.count() > 0
                          ? RetentionPass(/*bounded=*/!requested, &num_rolled)
                          : Status::Ok();
      lock.lock();
      next_retention_mono_ = clock_->MonotonicNanos() + RetentionIntervalNanos();
      if (status.ok()) {
        if (options_.raw_retention.count() > 0) ++stats_.retention_runs;
        stats_.rows_rolled_up += num_rolled;
      } else {
        ++stats_.write_errors;
        stats_.last_error = status.ToString();
        spdlog::warn("storage: retention pass on {} failed (will retry): {}", options_.path,
                     stats_.last_error);
      }
      retention_status_ = status;
      retention_done_ = request;
      done_cv_.notify_all();
    }
  }
}

Status StoreImpl::InTransaction(const std::function<Status()>& body) {
  Statements& s = *stmts_;
  MOE_RETURN_IF_ERROR(s.begin.Reset().Run());
  Status status = body();
  if (status.ok()) status = s.commit.Reset().Run();
  if (!status.ok() && sqlite3_get_autocommit(db_.get()) == 0) {
    Status rollback = s.rollback.Reset().Run();
    if (!rollback.ok()) {
      spdlog::error("storage: rollback on {} failed: {}", options_.path, rollback.ToString());
    }
  }
  return status;
}

Status StoreImpl::WriteBatch(const std::vector<Op>& batch, BatchCounts* counts) {
  Status status = InTransaction([&]() -> Status {
    for (const Op& op : batch)
      MOE_RETURN_IF_ERROR(ApplyOp(op, counts));
    return Status::Ok();
  });
  if (!status.ok()) *counts = BatchCounts{};
  return status;
}

Status StoreImpl::ApplyOp(const Op& op, BatchCounts* counts) {
  Statements& s = *stmts_;
  if (const auto* hello = std::get_if<telemetry::Hello>(&op.payload)) {
    ++counts->rows;
    return s.upsert_engine_hello.Reset()
        .BindText(1, hello->engine_id)
        .BindText(2, hello->backend)
        .BindInt(3, hello->num_layers)
        .BindInt(4, hello->num_experts)
        .BindInt(5, hello->num_shared_experts)
        .BindInt(6, hello->num_replicas)
        .BindInt(7, hello->num_devices)
        .BindInt(8, hello->hidden)
        .BindInt(9, hello->timestamp_ns)
        .BindU64(10, hello->epoch)
        .Run();
  }
  if (const auto* step = std::get_if<internal::PackedStep>(&op.payload)) {
    return ApplyStep(*step, counts);
  }
  if (const auto* epoch = std::get_if<EpochRow>(&op.payload)) {
    ++counts->rows;
    return s.upsert_epoch.Reset()
        .BindText(1, epoch->engine_id)
        .BindU64(2, epoch->epoch)
        .BindInt(3, epoch->created_ns)
        .BindText(4, epoch->knobs_json)
        .BindInt(5, epoch->decision_id)
        .Run();
  }
  if (const auto* sample = std::get_if<LearningSampleRow>(&op.payload)) {
    ++counts->rows;
    return s.insert_learning_sample.Reset()
        .BindText(1, sample->engine_id)
        .BindU64(2, sample->epoch)
        .BindText(3, sample->knob)
        .BindInt(4, sample->created_ns)
        .BindText(5, sample->regime)
        .BindReal(6, sample->value)
        .BindReal(7, sample->reward)
        .BindU64(8, sample->steps)
        .Run();
  }
  if (const auto* d = std::get_if<DecisionRow>(&op.payload)) {
    ++counts->rows;
    return s.insert_decision.Reset()
        .BindInt(1, d->id)
        .BindText(2, d->engine_id)
        .BindInt(3, d->created_ns)
        .BindText(4, d->policy)
        .BindInt(5, d->layer)
        .BindText(6, d->knob)
        .BindText(7, d->inputs_json)
        .BindText(8, d->proposal_json)
        .BindText(9, d->verdict)
        .BindText(10, d->verdict_reason)
        .BindText(11, d->command_json)
        .BindText(12, d->status)
        .BindOptionalInt(13, d->epoch)
        .BindOptionalInt(14, d->sent_ns)
        .BindOptionalInt(15, d->acked_ns)
        .BindOptionalInt(16, d->applied_at_step)
        .BindText(17, d->ack_error)
        .BindText(18, d->outcome_json)
        .BindOptionalReal(19, d->reward_before)
        .BindOptionalReal(20, d->reward_after)
        .BindOptionalInt(21, d->measured_ns)
        .BindOptionalReal(22, d->predicted_gain)
        .BindText(23, d->prediction_json)
        .Run();
  }
  if (const auto* sent = std::get_if<CommandSent>(&op.payload)) {
    s.update_sent.Reset()
        .BindInt(1, sent->decision_id)
        .BindU64(2, sent->epoch)
        .BindInt(3, sent->sent_ns);
    return ApplyDecisionUpdate(s.update_sent, sent->decision_id, "command sent", counts);
  }
  if (const auto* update = std::get_if<AckUpdate>(&op.payload)) {
    const telemetry::Ack& ack = update->ack;
    s.update_ack.Reset()
        .BindInt(1, update->decision_id)
        .BindText(2, ack.applied ? "acked" : "failed")
        .BindInt(3, ack.timestamp_ns)
        .BindOptionalInt(4,
                         ack.applied ? std::optional<uint64_t>(ack.applied_at_step) : std::nullopt)
        .BindText(5, ack.error)
        .BindU64(6, ack.epoch);
    return ApplyDecisionUpdate(s.update_ack, update->decision_id, "ack", counts);
  }
  if (const auto* update = std::get_if<OutcomeUpdate>(&op.payload)) {
    const DecisionOutcome& outcome = update->outcome;
    s.update_outcome.Reset()
        .BindInt(1, update->decision_id)
        .BindText(2, outcome.outcome_json)
        .BindOptionalReal(3, outcome.reward_before)
        .BindOptionalReal(4, outcome.reward_after)
        .BindInt(5, outcome.measured_ns);
    return ApplyDecisionUpdate(s.update_outcome, update->decision_id, "outcome", counts);
  }
  if (const auto* update = std::get_if<RepeatUpdate>(&op.payload)) {
    s.update_repeat.Reset()
        .BindInt(1, update->decision_id)
        .BindU64(2, update->repeats)
        .BindInt(3, update->last_ns);
    return ApplyDecisionUpdate(s.update_repeat, update->decision_id, "repeat", counts);
  }
  if (const auto* update = std::get_if<UnknownUpdate>(&op.payload)) {
    MOE_RETURN_IF_ERROR(s.update_unknown.Reset()
                            .BindOptionalInt(1, update->decision_id)
                            .BindText(2, update->reason)
                            .BindInt(3, update->ns)
                            .Run());
    counts->rows += static_cast<uint64_t>(sqlite3_changes(db_.get()));
    return Status::Ok();
  }
  if (const auto* a = std::get_if<OperatorActionRow>(&op.payload)) {
    ++counts->rows;
    return s.insert_operator_action.Reset()
        .BindInt(1, a->id)
        .BindInt(2, a->created_ns)
        .BindText(3, a->engine_id)
        .BindText(4, a->action)
        .BindText(5, a->knob)
        .BindOptionalReal(6, a->value)
        .BindOptionalInt(7, a->until_ns)
        .BindText(8, a->mode)
        .BindInt(9, a->uid)
        .BindText(10, a->who)
        .BindText(11, a->reason)
        .BindText(12, a->result)
        .BindOptionalInt(13, a->decision_id)
        .Run();
  }
  if (const auto* link = std::get_if<ActionLink>(&op.payload)) {
    MOE_RETURN_IF_ERROR(s.link_operator_action.Reset()
                            .BindInt(1, link->action_id)
                            .BindInt(2, link->decision_id)
                            .Run());
    counts->rows += static_cast<uint64_t>(sqlite3_changes(db_.get()));
    return Status::Ok();
  }
  if (const auto* gone = std::get_if<EngineGone>(&op.payload)) {
    MOE_RETURN_IF_ERROR(
        s.mark_engine_gone.Reset().BindText(1, gone->engine_id).BindInt(2, gone->gone_ns).Run());
    counts->rows += static_cast<uint64_t>(sqlite3_changes(db_.get()));
    return Status::Ok();
  }
  return Status::Internal("unknown queued write");
}

Status StoreImpl::ApplyDecisionUpdate(Statement& stmt, int64_t decision_id, std::string_view what,
                                      BatchCounts* counts) {
  MOE_RETURN_IF_ERROR(stmt.Run());
  int changed = sqlite3_changes(db_.get());
  if (changed == 0) {
    // Not an error worth retrying: the id was never recorded here.
    spdlog::warn("storage: {} for unknown decision {} ignored", what, decision_id);
  }
  counts->rows += static_cast<uint64_t>(changed);
  return Status::Ok();
}

Status StoreImpl::ApplyStep(const internal::PackedStep& step, BatchCounts* counts) {
  Statements& s = *stmts_;
  MOE_RETURN_IF_ERROR(s.touch_engine_step.Reset()
                          .BindText(1, step.engine_id)
                          .BindInt(2, step.num_layers)
                          .BindInt(3, step.num_experts)
                          .BindInt(4, step.timestamp_ns)
                          .BindU64(5, step.step)
                          .BindU64(6, step.epoch)
                          .Run());
  ++counts->rows;
  MOE_RETURN_IF_ERROR(s.insert_step.Reset()
                          .BindText(1, step.engine_id)
                          .BindU64(2, step.step)
                          .BindU64(3, step.seq)
                          .BindInt(4, step.timestamp_ns)
                          .BindU64(5, step.epoch)
                          .BindReal(6, step.step_us)
                          .BindInt(7, step.timing_on_device ? 1 : 0)
                          .BindInt(8, step.num_layers)
                          .BindBlob(9, step.layers.data(), step.layers.size())
                          .BindBlob(10, step.loads.data(), step.loads.size())
                          .Run());
  ++counts->rows;
  ++counts->steps;
  return Status::Ok();
}

Status StoreImpl::RetentionPass(bool bounded, uint64_t* num_rolled) {
  int64_t retention_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.raw_retention).count();
  int64_t horizon = internal::FloorToMinute(clock_->NowNanos() - retention_ns);
  auto start = SteadyClock::now();
  while (true) {
    bool more = false;
    MOE_RETURN_IF_ERROR(RetentionChunk(horizon, num_rolled, &more));
    if (!more || (bounded && SteadyClock::now() - start > kRetentionBudget)) return Status::Ok();
  }
}

// Rolls the raw rows of the oldest minute before `horizon_ns` into rollups and
// deletes them, in one transaction: a row is either raw or counted in a rollup.
Status StoreImpl::RetentionChunk(int64_t horizon_ns, uint64_t* num_rolled, bool* more) {
  Statements& s = *stmts_;
  uint64_t rolled = 0;
  Status status = InTransaction([&]() -> Status {
    MOE_ASSIGN_OR_RETURN(bool row, s.min_raw_time.Reset().BindInt(1, horizon_ns).Step());
    if (!row || s.min_raw_time.ColumnIsNull(0)) {
      *more = false;
      return Status::Ok();
    }
    int64_t bucket = internal::FloorToMinute(s.min_raw_time.ColumnInt(0));
    int64_t chunk_end = std::min(horizon_ns, bucket + internal::kNanosPerMinute);
    *more = chunk_end < horizon_ns;

    std::map<std::pair<std::string, uint32_t>, internal::RollupAgg> aggs;
    s.select_raw.Reset().BindInt(1, chunk_end);
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool has_row, s.select_raw.Step());
      if (!has_row) break;
      StepRow step = internal::ReadStepRow(s.select_raw, 0);
      std::vector<uint64_t> tokens;
      MOE_RETURN_IF_ERROR(internal::AddBlob(s.select_raw.ColumnBlob(24), 4, &tokens));
      aggs[{step.engine_id, step.layer}].Merge(
          internal::RollupAgg::FromStep(step, std::move(tokens)));
      ++rolled;
    }
    s.select_raw.Reset();
    s.select_raw_steps.Reset().BindInt(1, chunk_end);
    while (true) {
      MOE_ASSIGN_OR_RETURN(bool has_row, s.select_raw_steps.Step());
      if (!has_row) break;
      const StepRow step = internal::ReadPackedStep(s.select_raw_steps, 0);
      const int first_blob = internal::kNumPackedStepColumns;
      std::vector<StepRow> layers;
      MOE_RETURN_IF_ERROR(
          internal::UnpackLayers(s.select_raw_steps.ColumnBlob(first_blob), step, std::nullopt,
                                 [&](StepRow& figures) { layers.push_back(figures); }));
      // Both blobs hold the record's layers in the same order.
      size_t index = 0;
      Status paired;
      MOE_RETURN_IF_ERROR(internal::UnpackLoads(
          s.select_raw_steps.ColumnBlob(first_blob + 1), step, std::nullopt,
          [&](uint32_t layer, const std::vector<uint64_t>& tokens) {
            if (index >= layers.size() || layers[index].layer != layer) {
              paired = Status::Corruption(
                  fmt::format("step {} of engine {}: loads of layer {} do not match its figures",
                              step.step, step.engine_id, layer));
              return;
            }
            const StepRow& figures = layers[index++];
            aggs[{figures.engine_id, figures.layer}].Merge(
                internal::RollupAgg::FromStep(figures, tokens));
            ++rolled;
          }));
      MOE_RETURN_IF_ERROR(paired);
      for (; index < layers.size(); ++index) {  // a layer without loads
        aggs[{layers[index].engine_id, layers[index].layer}].Merge(
            internal::RollupAgg::FromStep(layers[index], {}));
        ++rolled;
      }
    }
    s.select_raw_steps.Reset();

    for (auto& [key, agg] : aggs) {
      MOE_ASSIGN_OR_RETURN(bool existing, s.select_rollup.Reset()
                                              .BindText(1, key.first)
                                              .BindInt(2, key.second)
                                              .BindInt(3, bucket)
                                              .Step());
      if (existing) {
        MOE_ASSIGN_OR_RETURN(internal::RollupAgg old, internal::ReadRollup(s.select_rollup, 0));
        agg.Merge(old);
      }
      s.select_rollup.Reset();
      s.upsert_rollup.Reset().BindText(1, key.first).BindInt(2, key.second).BindInt(3, bucket);
      internal::BindRollup(s.upsert_rollup, 4, agg);
      MOE_RETURN_IF_ERROR(s.upsert_rollup.Run());
    }
    MOE_RETURN_IF_ERROR(s.delete_raw_loads.Reset().BindInt(1, chunk_end).Run());
    MOE_RETURN_IF_ERROR(s.delete_raw_steps.Reset().BindInt(1, chunk_end).Run());
    MOE_RETURN_IF_ERROR(s.delete_raw_packed_steps.Reset().BindInt(1, chunk_end).Run());
    return Status::Ok();
  });
  if (status.ok()) *num_rolled += rolled;
  return status;
}

Status StoreImpl::Flush(Millis timeout) {
  std::unique_lock lock(mu_);
  uint64_t target = next_ticket_;
  if (committed_ticket_ >= target) return Status::Ok();
  if (abandon_) {
    return Status::FailedPrecondition(fmt::format("store {} is closed with {} writes uncommitted",
                                                  options_.path, queue_.size() + inflight_ops_));
  }
  ++flush_waiters_;
  work_cv_.notify_one();
  done_cv_.wait_for(lock, timeout, [&] { return committed_ticket_ >= target || abandon_; });
  --flush_waiters_;
  if (committed_ticket_ >= target) return Status::Ok();
  return Status::Timeout(
      fmt::format("{} writes to {} still pending after {} ms (they stay queued){}{}",
                  queue_.size() + inflight_ops_, options_.path, timeout.count(),
                  stats_.last_error.empty() ? "" : "; last error: ", stats_.last_error));
}

Status StoreImpl::RunRetention(Millis timeout) {
  auto deadline = SteadyClock::now() + timeout;
  MOE_RETURN_IF_ERROR(Flush(timeout));
  std::unique_lock lock(mu_);
  if (abandon_) return Status::FailedPrecondition("store is closed");
  uint64_t request = ++retention_requested_;
  work_cv_.notify_one();
  if (!done_cv_.wait_until(lock, deadline,
                           [&] { return retention_done_ >= request || abandon_; })) {
    return Status::Timeout(fmt::format("retention pass on {} did not finish within {} ms",
                                       options_.path, timeout.count()));
  }
  if (retention_done_ < request) return Status::FailedPrecondition("store closed");
  return retention_status_;
}

Status StoreImpl::Close() {
  std::lock_guard close_lock(close_mu_);
  if (close_done_) return close_status_;
  size_t num_lost = 0;
  {
    std::unique_lock lock(mu_);
    stopping_ = true;
    work_cv_.notify_all();
    done_cv_.wait_for(lock, options_.close_timeout,
                      [&] { return queue_.empty() && inflight_ops_ == 0; });
    closed_ = true;
    abandon_ = true;
    work_cv_.notify_all();
    done_cv_.notify_all();
  }
  if (writer_.joinable()) writer_.join();
  {
    std::lock_guard lock(mu_);
    num_lost = queue_.size() + inflight_ops_;
    if (num_lost > 0) {
      close_status_ = Status::Unavailable(
          fmt::format("closing {}: {} writes could not be committed within {} ms; last error: {}",
                      options_.path, num_lost, options_.close_timeout.count(), stats_.last_error));
      spdlog::error("storage: {}", close_status_.message());
    }
  }
  // Statements first, so closing the connection really closes it (and
  // checkpoints the WAL).
  stmts_.reset();
  db_.reset();
  close_done_ = true;
  return close_status_;
}

}  // namespace

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& options, Clock* clock) {
  if (options.path.empty()) return Status::InvalidArgument("storage: empty database path");
  if (clock == nullptr) return Status::InvalidArgument("storage: null clock");
  if (options.batch_rows == 0) return Status::InvalidArgument("storage: batch_rows must be > 0");
  if (options.flush_interval.count() <= 0) {
    return Status::InvalidArgument("storage: flush_interval must be > 0");
  }
  if (options.raw_retention.count() < 0 || options.retention_interval.count() <= 0) {
    return Status::InvalidArgument(
        "storage: raw_retention must be >= 0 and retention_interval > 0");
  }
  std::filesystem::path parent = std::filesystem::path(options.path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return Status::IoError(fmt::format("cannot create directory {} for the database: {}",
                                         parent.string(), ec.message()));
    }
  }
  MOE_ASSIGN_OR_RETURN(
      internal::DbHandle db,
      internal::OpenDatabase(options.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                             static_cast<int>(options.busy_timeout.count())));
  // Check what the file is before changing anything in it.
  MOE_ASSIGN_OR_RETURN(int version, internal::ReadSchemaVersion(db.get(), options.path));
  if (version > internal::kLatestSchemaVersion) {
    return Status::FailedPrecondition(
        fmt::format("{} has schema version {}, newer than this binary knows ({}); upgrade moectld "
                    "or point it at another database",
                    options.path, version, internal::kLatestSchemaVersion));
  }
  {
    MOE_ASSIGN_OR_RETURN(Statement wal, Statement::Prepare(db.get(), "PRAGMA journal_mode=WAL"));
    MOE_ASSIGN_OR_RETURN(bool row, wal.Step());
    std::string mode = row ? wal.ColumnText(0) : "";
    if (mode != "wal") {
      return Status::FailedPrecondition(fmt::format(
          "cannot put {} in WAL mode (journal_mode is '{}'); use a file on a local disk",
          options.path, mode));
    }
  }
  MOE_RETURN_IF_ERROR(internal::Exec(db.get(), "PRAGMA synchronous=NORMAL", "setting synchronous"));
  MOE_RETURN_IF_ERROR(internal::Migrate(db.get(), options.path, clock->NowNanos()));

  auto max_id = [&db](const char* table) -> Result<int64_t> {
    MOE_ASSIGN_OR_RETURN(
        Statement stmt,
        Statement::Prepare(db.get(), fmt::format("SELECT COALESCE(MAX(id), 0) FROM {}", table)));
    MOE_ASSIGN_OR_RETURN(bool row, stmt.Step());
    return row ? stmt.ColumnInt(0) : 0;
  };
  MOE_ASSIGN_OR_RETURN(int64_t last_decision_id, max_id("decisions"));
  MOE_ASSIGN_OR_RETURN(int64_t last_action_id, max_id("operator_actions"));

  auto store =
      std::make_unique<StoreImpl>(options, clock, std::move(db), last_decision_id, last_action_id);
  MOE_RETURN_IF_ERROR(store->Prepare());
  store->Start();
  spdlog::info("storage: opened {} (schema {}, last decision id {})", options.path,
               internal::kLatestSchemaVersion, last_decision_id);
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace moe::storage
