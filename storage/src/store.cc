#include "moe/storage/store.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "schema.h"
#include "setting_text.h"
#include "store_impl.h"

namespace moe::storage::internal {
namespace {

constexpr Millis kMinBackoff{10};
constexpr Millis kMaxBackoff{2000};

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

// Epoch history is append-only (migration 8): a row is added unless the
// newest row of that engine and epoch says the same (a Hello re-sent after a
// reconnect), and none is ever overwritten.
constexpr const char* kUpsertEpoch = R"sql(
INSERT INTO epochs(engine_id, epoch, created_ns, knobs_json, decision_id)
SELECT ?1, ?2, ?3, ?4, ?5
WHERE NOT EXISTS (SELECT 1 FROM epochs WHERE engine_id = ?1 AND epoch = ?2
                  AND knobs_json = ?4 AND decision_id = ?5
                  AND id = (SELECT MAX(id) FROM epochs WHERE engine_id = ?1 AND epoch = ?2)))sql";

constexpr const char* kInsertLearningSample = R"sql(
INSERT INTO learning_samples(engine_id, epoch, knob, created_ns, regime, value, reward, steps,
                             setting)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9))sql";

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

constexpr const char* kUpdateUnknown = R"sql(
UPDATE decisions SET status = 'unknown', measured_ns = ?3,
  ack_error = CASE WHEN ack_error = '' THEN ?2 ELSE ack_error || '; ' || ?2 END
WHERE (?1 IS NULL AND status IN ('sent', 'acked'))
   OR (id = ?1 AND status IN ('sent', 'acked', 'failed')))sql";

constexpr const char* kInsertOperatorAction = R"sql(
INSERT INTO operator_actions(id, created_ns, engine_id, action, knob, value, until_ns, mode, uid,
                             who, reason, result, decision_id)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13))sql";

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

constexpr const char* kDeleteRawPackedSteps = "DELETE FROM steps WHERE id = ?1";

constexpr const char* kSelectRollup =
    "SELECT {} FROM rollups WHERE engine_id = ?1 AND layer = ?2 AND bucket_ns = ?3";

constexpr const char* kDeleteRawLoads =
    "DELETE FROM expert_loads WHERE step_layer_id IN "
    "(SELECT id FROM step_layers WHERE timestamp_ns < ?1)";

constexpr const char* kDeleteRawSteps = "DELETE FROM step_layers WHERE timestamp_ns < ?1";

// Retention of rollups and decisions, one chunk of kRetentionDeleteChunk rows
// per transaction. A decision in flight (sent or acked, not measured) stays.
constexpr const char* kDeleteOldRollups =
    "DELETE FROM rollups WHERE rowid IN "
    "(SELECT rowid FROM rollups WHERE bucket_ns < ?1 LIMIT {})";
constexpr const char* kDeleteOldDecisions =
    "DELETE FROM decisions WHERE id IN "
    "(SELECT id FROM decisions WHERE created_ns < ?1 "
    "AND NOT (status IN ('sent', 'acked') AND measured_ns IS NULL) LIMIT {})";

}  // namespace

StoreImpl::StoreImpl(const StoreOptions& options, Clock* clock, OpenedDb opened)
    : options_(options),
      clock_(clock),
      db_(std::move(opened.db)),
      file_dev_(opened.dev),
      file_ino_(opened.ino),
      page_size_(opened.page_size) {
  stats_.last_decision_id = opened.last_decision_id;
  stats_.last_action_id = opened.last_action_id;
  next_retention_mono_ = clock_->MonotonicNanos() + RetentionIntervalNanos();
  next_checkpoint_ = SteadyClock::now() + options_.checkpoint_interval;
  next_file_check_ = SteadyClock::now() + options_.file_check_interval;
}

void StoreImpl::Start() {
  writer_ = std::thread([this] { WriterLoop(); });
  checkpointer_ = std::thread([this] { CheckpointerLoop(); });
}

void StoreImpl::UpsertEngine(const telemetry::Hello& hello) {
  telemetry::Hello copy = hello;
  if (copy.timestamp_ns == 0) copy.timestamp_ns = clock_->NowNanos();
  std::lock_guard lock(mu_);
  EnqueueLocked(std::move(copy), 1);
}

void StoreImpl::AppendStep(const telemetry::StepRecord& record) {
  size_t rows = std::max<size_t>(1, record.layers.size());
  // Packed on the caller's thread, outside the lock: the queue holds the
  // row as written, a fraction of the record's size.
  PackedStep packed = PackStep(record);
  const size_t bytes =
      sizeof(Op) + packed.engine_id.size() + packed.layers.size() + packed.loads.size();
  std::lock_guard lock(mu_);
  const size_t pending_bytes = queued_bytes_ + inflight_bytes_;
  if (!closed_ && (queued_rows_ + inflight_rows_ >= options_.max_queue ||
                   (pending_bytes > 0 && pending_bytes + bytes > options_.max_queue_bytes))) {
    ++stats_.rejected;
    // Log the first refusal and then every power of two, not every one.
    if ((stats_.rejected & (stats_.rejected - 1)) == 0) {
      spdlog::warn(
          "storage: write queue full ({} rows, {} bytes pending); refused {} step records so far",
          queued_rows_ + inflight_rows_, pending_bytes, stats_.rejected);
    }
    return;
  }
  EnqueueLocked(std::move(packed), rows, bytes);
}

void StoreImpl::RecordEpoch(const EpochRow& row) {
  std::lock_guard lock(mu_);
  EnqueueLocked(row, 1);
}

void StoreImpl::RecordLearningSample(const LearningSampleRow& row) {
  std::lock_guard lock(mu_);
  EnqueueLocked(row, 1);
}

int64_t StoreImpl::RecordDecision(DecisionRow row) {
  std::lock_guard lock(mu_);
  row.id = ++stats_.last_decision_id;
  int64_t id = row.id;
  EnqueueLocked(std::move(row), 1);
  return id;
}

void StoreImpl::RecordCommandSent(int64_t decision_id, uint64_t epoch, int64_t sent_ns) {
  std::lock_guard lock(mu_);
  EnqueueLocked(CommandSent{decision_id, epoch, sent_ns}, 1);
}

void StoreImpl::RecordAck(int64_t decision_id, const telemetry::Ack& ack) {
  std::lock_guard lock(mu_);
  EnqueueLocked(AckUpdate{decision_id, ack}, 1);
}

void StoreImpl::RecordOutcome(int64_t decision_id, const DecisionOutcome& outcome) {
  std::lock_guard lock(mu_);
  EnqueueLocked(OutcomeUpdate{decision_id, outcome}, 1);
}

void StoreImpl::RecordRepeat(int64_t decision_id, uint64_t repeats, int64_t last_ns) {
  std::lock_guard lock(mu_);
  EnqueueLocked(RepeatUpdate{decision_id, repeats, last_ns}, 1);
}

void StoreImpl::RecordUnknown(std::optional<int64_t> decision_id, const std::string& reason,
                              int64_t ns) {
  std::lock_guard lock(mu_);
  EnqueueLocked(UnknownUpdate{decision_id, reason, ns}, 1);
}

int64_t StoreImpl::RecordOperatorAction(OperatorActionRow row) {
  std::lock_guard lock(mu_);
  row.id = ++stats_.last_action_id;
  int64_t id = row.id;
  EnqueueLocked(std::move(row), 1);
  return id;
}

void StoreImpl::LinkOperatorAction(int64_t action_id, int64_t decision_id) {
  std::lock_guard lock(mu_);
  EnqueueLocked(ActionLink{action_id, decision_id}, 1);
}

void StoreImpl::MarkEngineGone(const std::string& engine_id, int64_t gone_ns) {
  std::lock_guard lock(mu_);
  EnqueueLocked(EngineGone{engine_id, gone_ns}, 1);
}

StoreStats StoreImpl::stats() const {
  std::lock_guard lock(mu_);
  StoreStats copy = stats_;
  copy.pending = queue_.size() + urgent_.size() + inflight_ops_;
  return copy;
}

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
  MOE_RETURN_IF_ERROR(prep(&s.link_operator_action, kLinkOperatorAction));
  MOE_RETURN_IF_ERROR(prep(&s.mark_engine_gone, kMarkEngineGone));
  MOE_RETURN_IF_ERROR(prep(&s.min_raw_time, kMinRawTime));
  MOE_RETURN_IF_ERROR(prep(&s.select_raw, fmt::format("SELECT {}, tokens FROM step_layers LEFT "
                                                      "JOIN expert_loads ON step_layer_id = id "
                                                      "WHERE timestamp_ns < ?1",
                                                      kStepColumns)));
  MOE_RETURN_IF_ERROR(
      prep(&s.select_raw_steps, fmt::format("SELECT {}, layers, loads, id FROM steps WHERE "
                                            "timestamp_ns < ?1 ORDER BY timestamp_ns, id",
                                            kPackedStepColumns)));
  MOE_RETURN_IF_ERROR(
      prep(&s.select_rollup, fmt::format(fmt::runtime(kSelectRollup), kRollupColumns)));
  std::string placeholders;
  for (int i = 1; i <= 3 + kNumRollupColumns; ++i) {
    placeholders += fmt::format("{}?{}", i == 1 ? "" : ", ", i);
  }
  MOE_RETURN_IF_ERROR(
      prep(&s.upsert_rollup, fmt::format("INSERT OR REPLACE INTO rollups(engine_id, layer, "
                                         "bucket_ns, {}) VALUES ({})",
                                         kRollupColumns, placeholders)));
  MOE_RETURN_IF_ERROR(prep(&s.delete_raw_loads, kDeleteRawLoads));
  MOE_RETURN_IF_ERROR(prep(&s.delete_raw_steps, kDeleteRawSteps));
  MOE_RETURN_IF_ERROR(prep(&s.delete_raw_packed_steps, kDeleteRawPackedSteps));
  MOE_RETURN_IF_ERROR(prep(&s.delete_old_rollups,
                           fmt::format(fmt::runtime(kDeleteOldRollups), kRetentionDeleteChunk)));
  MOE_RETURN_IF_ERROR(prep(&s.delete_old_decisions,
                           fmt::format(fmt::runtime(kDeleteOldDecisions), kRetentionDeleteChunk)));
  // The writer checkpoints itself (store.h); this also turns SQLite's
  // automatic checkpoint off.
  sqlite3_wal_hook(db, &StoreImpl::WalHook, this);
  return Status::Ok();
}

void StoreImpl::EnqueueLocked(Payload payload, size_t rows, size_t bytes) {
  if (closed_) {
    uint64_t n = ++stats_.ignored_after_close;
    if ((n & (n - 1)) == 0) {
      spdlog::error("storage: {} writes to {} ignored: the store is closed", n, options_.path);
    }
    return;
  }
  queue_.push_back(Op{++next_ticket_, rows, std::move(payload), bytes});
  queued_rows_ += rows;
  queued_bytes_ += bytes;
  if (queued_rows_ >= options_.batch_rows) work_cv_.notify_one();
}

void StoreImpl::TakeBatchLocked(std::vector<Op>* batch, bool* urgent) {
  // A write SQLite rejected is being isolated: that goes first.
  const bool isolating = !queue_.empty() && queue_.front().ticket <= isolate_until_ticket_;
  *urgent = !urgent_.empty() && !isolating;
  if (*urgent) {
    Op decision = std::move(urgent_.front());
    urgent_.pop_front();
    // The writes queued before it that are not step records, in order.
    auto before = std::find_if(queue_.begin(), queue_.end(),
                               [&](const Op& op) { return op.ticket > decision.ticket; });
    auto steps = std::stable_partition(queue_.begin(), before, [](const Op& op) {
      return !std::holds_alternative<PackedStep>(op.payload);
    });
    size_t rows = 1;
    for (auto it = queue_.begin(); it != steps; ++it) {
      rows += it->rows;
      queued_rows_ -= it->rows;
      batch->push_back(std::move(*it));
    }
    queue_.erase(queue_.begin(), steps);
    batch->push_back(std::move(decision));
    inflight_rows_ = rows;
    inflight_bytes_ = 0;
    inflight_ops_ = batch->size();
    inflight_min_ticket_ = batch->front().ticket;
    return;
  }
  size_t rows = 0;
  size_t bytes = 0;
  while (!queue_.empty()) {
    Op& op = queue_.front();
    if (!batch->empty() &&
        (rows + op.rows > options_.batch_rows || batch->front().ticket <= isolate_until_ticket_)) {
      break;
    }
    rows += op.rows;
    bytes += op.bytes;
    batch->push_back(std::move(op));
    queue_.pop_front();
  }
  queued_rows_ -= rows;
  inflight_rows_ = rows;
  queued_bytes_ -= bytes;
  inflight_bytes_ = bytes;
  inflight_ops_ = batch->size();
  inflight_min_ticket_ = batch->empty() ? 0 : batch->front().ticket;
}

void StoreImpl::WriterLoop() {
  std::vector<Op> batch;
  bool batch_urgent = false;     // batch holds one CommitDecision row
  Millis backoff = kMinBackoff;  // the wait before the next retry
  Millis retry_wait = kMinBackoff;
  bool failing = false;
  auto next_tick = SteadyClock::now() + options_.flush_interval;
  std::unique_lock lock(mu_);
  std::unique_lock db_lock(db_mu_, std::defer_lock);
  // Under the lock: records a failed attempt; the writer retries after a backoff.
  auto note_failure = [&](const Status& status, std::string_view what) {
    ++stats_.write_errors;
    stats_.last_error = status.ToString();
    stats_.failing = true;
    spdlog::warn("storage: {} {} failed (attempt {}; retrying in {} ms): {}", what, options_.path,
                 stats_.write_errors, backoff.count(), stats_.last_error);
    failing = true;
    retry_wait = backoff;
    backoff = std::min(backoff * 2, kMaxBackoff);
  };
  while (true) {
    if (db_lock.owns_lock()) db_lock.unlock();  // a CommitDecision may write while it waits
    if (failing) {
      work_cv_.wait_for(lock, retry_wait, [&] { return abandon_; });
    } else {
      work_cv_.wait_until(lock, next_tick, [&] {
        if (abandon_ || !urgent_.empty()) return true;
        if (CheckpointingLocked()) return false;  // woken when the pass ends
        return replaced_ || retention_active_ || retention_requested_ > retention_done_ ||
               (!queue_.empty() &&
                (stopping_ || flush_waiters_ > 0 || queued_rows_ >= options_.batch_rows));
      });
    }
    if (abandon_) break;
    lock.unlock();
    db_lock.lock();
    lock.lock();
    if (abandon_) break;
    if (SteadyClock::now() >= next_tick) next_tick = SteadyClock::now() + options_.flush_interval;

    // The file first: nothing is written to a file that is no longer at the path.
    if (replaced_ || SteadyClock::now() >= next_file_check_) {
      lock.unlock();
      bool replaced = CheckFileReplaced();
      Status reopened = replaced ? Reopen() : Status::Ok();
      lock.lock();
      if (!reopened.ok()) {
        note_failure(reopened, "reopening");
        continue;
      }
      if (replaced) {
        stats_.failing = false;
        failing = false;
        backoff = kMinBackoff;
      }
    }

    // While a checkpoint pass runs only a decision row is written.
    if (batch.empty() && (!CheckpointingLocked() || !urgent_.empty())) {
      TakeBatchLocked(&batch, &batch_urgent);
    }
    if (!batch.empty()) {
      lock.unlock();
      BatchCounts counts;
      size_t applied = 0;
      Status status = WriteBatch(batch, &counts, /*yield_to_urgent=*/!batch_urgent, &applied);
      // An urgent row's waiter is woken first; a later batch checkpoints.
      if (status.ok() && !batch_urgent && urgent_waiting_.load() == 0) {
        MaybeCheckpoint(/*force=*/false);
      }
      lock.lock();
      if (status.ok() && applied < batch.size()) {
        // Cut short for a CommitDecision: the rest goes back, in order.
        std::vector<Op> rest(
            std::make_move_iterator(batch.begin() + static_cast<std::ptrdiff_t>(applied)),
            std::make_move_iterator(batch.end()));
        batch.erase(batch.begin() + static_cast<std::ptrdiff_t>(applied), batch.end());
        RequeueLocked(&rest);
      }
      if (status.ok()) {
        if (batch_urgent) urgent_committed_ticket_ = batch.back().ticket;
        inflight_min_ticket_ = 0;
        stats_.steps_written += counts.steps;
        stats_.rows_written += counts.rows;
        stats_.unmatched_updates += counts.unmatched;
        ++stats_.transactions;
        stats_.failing = false;
        batch.clear();
        inflight_rows_ = inflight_ops_ = inflight_bytes_ = 0;
        failing = false;
        backoff = kMinBackoff;
        done_cv_.notify_all();
        // On to retention when it is due: a queue that never empties must not
        // keep it from running.
      } else if (replaced_) {
        // The batch stays and goes to the file now at the path.
        continue;
      } else if (status.code() == StatusCode::kInvalidArgument) {
        ++stats_.write_errors;
        stats_.last_error = status.ToString();
        // Retrying cannot fix a data error. Find the culprit by writing the
        // batch one write per transaction; a single culprit is discarded.
        if (batch.size() == 1) {
          ++stats_.discarded;
          spdlog::error("storage: discarding a write that SQLite rejects ({} so far): {}",
                        stats_.discarded, stats_.last_error);
          if (std::holds_alternative<DecisionRow>(batch.back().payload)) {
            discarded_decision_ticket_ = batch.back().ticket;
          }
          inflight_min_ticket_ = 0;
          batch.clear();
          inflight_rows_ = inflight_ops_ = inflight_bytes_ = 0;
          done_cv_.notify_all();
          continue;
        }
        isolate_until_ticket_ = batch.back().ticket;
        RequeueLocked(&batch);  // an urgent row among them goes the ordinary way now
        inflight_rows_ = inflight_ops_ = inflight_bytes_ = 0;
        inflight_min_ticket_ = 0;
        continue;
      } else {
        note_failure(status, fmt::format("write of {} records to", batch.size()));
        continue;
      }
    }
    bool requested = retention_requested_ > retention_done_;
    bool due = RetentionEnabled() && clock_->MonotonicNanos() >= next_retention_mono_;
    if (CheckpointingLocked()) continue;
    if (!retention_active_ && (requested || due)) {
      retention_active_ = true;
      retention_stage_ = 0;
      retention_now_ns_ = clock_->NowNanos();
      retention_pass_request_ = retention_requested_;
    }
    if (retention_active_) {
      lock.unlock();
      RetentionCounts counts;
      bool done = true;
      Status status = RetentionEnabled() ? RetentionStep(&counts, &done) : Status::Ok();
      if (status.ok()) MaybeCheckpoint(/*force=*/false);
      lock.lock();
      stats_.rows_rolled_up += counts.rolled;
      stats_.rollups_deleted += counts.rollups_deleted;
      stats_.decisions_deleted += counts.decisions_deleted;
      if (!status.ok()) {
        ++stats_.write_errors;
        stats_.last_error = status.ToString();
        spdlog::warn("storage: retention pass on {} failed (will retry): {}", options_.path,
                     stats_.last_error);
      } else if (done && RetentionEnabled()) {
        ++stats_.retention_runs;
      }
      if (!status.ok() || done) {
        retention_active_ = false;
        next_retention_mono_ = clock_->MonotonicNanos() + RetentionIntervalNanos();
        retention_status_ = status;
        retention_done_ = retention_pass_request_;
        done_cv_.notify_all();
      }
    }
    if (SteadyClock::now() >= next_checkpoint_) {
      lock.unlock();
      MaybeCheckpoint(/*force=*/true);
      lock.lock();
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

Status StoreImpl::WriteBatch(const std::vector<Op>& batch, BatchCounts* counts,
                             bool yield_to_urgent, size_t* applied) {
  const Status replaced =
      Status::Unavailable(fmt::format("the database file {} was replaced", options_.path));
  size_t num_applied = 0;
  Status status = InTransaction([&]() -> Status {
    for (const Op& op : batch) {
      if (yield_to_urgent && num_applied > 0 && urgent_waiting_.load() > 0) break;
      MOE_RETURN_IF_ERROR(ApplyOp(op, counts));
      ++num_applied;
    }
    // The last look before COMMIT: nothing is committed to a file that is no
    // longer at the path.
    if (CheckFileReplaced()) return replaced;
    return Status::Ok();
  });
  // And the first after it: a replacement that raced the COMMIT left the
  // batch in the old file, so it is kept and written to the new one.
  if (status.ok() && CheckFileReplaced()) status = replaced;
  if (!status.ok()) *counts = BatchCounts{};
  if (applied != nullptr) *applied = status.ok() ? num_applied : 0;
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
  if (const auto* step = std::get_if<PackedStep>(&op.payload)) {
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
        .BindText(9, SettingJson(sample->setting.empty() ? std::vector<double>{sample->value}
                                                         : sample->setting))
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
  // The updates below may match no row (nothing in flight, an engine or a
  // lever the file does not hold): that is no lost write.
  auto changes = [&](Statement& stmt) -> Status {
    MOE_RETURN_IF_ERROR(stmt.Run());
    counts->rows += static_cast<uint64_t>(sqlite3_changes(db_.get()));
    return Status::Ok();
  };
  if (const auto* update = std::get_if<UnknownUpdate>(&op.payload)) {
    return changes(s.update_unknown.Reset()
                       .BindOptionalInt(1, update->decision_id)
                       .BindText(2, update->reason)
                       .BindInt(3, update->ns));
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
    return changes(
        s.link_operator_action.Reset().BindInt(1, link->action_id).BindInt(2, link->decision_id));
  }
  if (const auto* gone = std::get_if<EngineGone>(&op.payload)) {
    return changes(
        s.mark_engine_gone.Reset().BindText(1, gone->engine_id).BindInt(2, gone->gone_ns));
  }
  return Status::Internal("unknown queued write");
}

Status StoreImpl::ApplyDecisionUpdate(Statement& stmt, int64_t decision_id, std::string_view what,
                                      BatchCounts* counts) {
  MOE_RETURN_IF_ERROR(stmt.Run());
  int changed = sqlite3_changes(db_.get());
  if (changed == 0) {
    ++counts->unmatched;
    // Not an error worth retrying: the id was never recorded here.
    spdlog::warn("storage: {} for unknown decision {} ignored", what, decision_id);
  }
  counts->rows += static_cast<uint64_t>(changed);
  return Status::Ok();
}

Status StoreImpl::ApplyStep(const PackedStep& step, BatchCounts* counts) {
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

Status StoreImpl::Flush(Millis timeout) {
  std::unique_lock lock(mu_);
  const uint64_t target = next_ticket_;
  auto done = [&] { return CommittedThroughLocked() >= target; };
  if (done()) return Status::Ok();
  if (abandon_) {
    return Status::FailedPrecondition(fmt::format("store {} is closed with {} writes uncommitted",
                                                  options_.path, queue_.size() + inflight_ops_));
  }
  ++flush_waiters_;
  work_cv_.notify_one();
  done_cv_.wait_for(lock, timeout, [&] { return done() || abandon_; });
  --flush_waiters_;
  if (done()) return Status::Ok();
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
                      [&] { return queue_.empty() && urgent_.empty() && inflight_ops_ == 0; });
    closed_ = true;
    abandon_ = true;
    work_cv_.notify_all();
    done_cv_.notify_all();
    checkpoint_cv_.notify_all();
  }
  if (writer_.joinable()) writer_.join();
  if (checkpointer_.joinable()) checkpointer_.join();
  {
    std::lock_guard lock(mu_);
    num_lost = queue_.size() + urgent_.size() + inflight_ops_;
    stats_.abandoned_at_close += num_lost;
    if (num_lost > 0) {
      close_status_ = Status::Unavailable(
          fmt::format("closing {}: {} writes could not be committed within {} ms; last error: {}",
                      options_.path, num_lost, options_.close_timeout.count(), stats_.last_error));
      spdlog::error("storage: {}", close_status_.message());
    }
  }
  // No CommitDecision writes any more (closed_), none is still writing.
  std::lock_guard db_guard(db_mu_);
  // A replaced file that could not be released: its WAL must not be left
  // beside the path (closing a moved file does not checkpoint it).
  if (replaced_ && db_ && !Checkpoint().ok()) {
    spdlog::error("storage: {}-wal still holds frames of the replaced file", options_.path);
  }
  // Statements first, so closing the connection really closes it (and
  // checkpoints the WAL).
  stmts_.reset();
  db_.reset();
  close_done_ = true;
  return close_status_;
}

}  // namespace moe::storage::internal

namespace moe::storage {

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
  if (options.rollup_retention.count() < 0 || options.decision_retention.count() < 0) {
    return Status::InvalidArgument("storage: rollup_retention and decision_retention must be >= 0");
  }
  if (options.raw_retention.count() > 0 && options.rollup_retention.count() > 0 &&
      options.rollup_retention < options.raw_retention) {
    return Status::InvalidArgument(fmt::format(
        "storage: rollup_retention ({} s) must not be shorter than raw_retention ({} s): "
        "rollups would be deleted as soon as they are made",
        options.rollup_retention.count(), options.raw_retention.count()));
  }
  if (options.checkpoint_interval.count() <= 0 || options.file_check_interval.count() <= 0) {
    return Status::InvalidArgument(
        "storage: checkpoint_interval and file_check_interval must be > 0");
  }
  MOE_ASSIGN_OR_RETURN(internal::OpenedDb opened, internal::OpenStoreFile(options, clock));
  const int64_t last_decision_id = opened.last_decision_id;
  auto store = std::make_unique<internal::StoreImpl>(options, clock, std::move(opened));
  MOE_RETURN_IF_ERROR(store->Prepare());
  store->Start();
  spdlog::info("storage: opened {} (schema {}, last decision id {})", options.path,
               internal::kLatestSchemaVersion, last_decision_id);
  return std::unique_ptr<Store>(std::move(store));
}

}  // namespace moe::storage
