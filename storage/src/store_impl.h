// Private: the Store implementation, split over three files:
//   store.cc            the queue, the writer loop and the writes, Open/Close
//   store_commit.cc     CommitDecision: a decision row ahead of queued steps
//   store_retention.cc  rollups of raw rows; rollup and decision retention
//   store_file.cc       opening the file, WAL checkpoints, noticing the file
//                       replaced under the Store and reopening it
// Members marked "writer" are touched by the writer thread only (and by Open
// before it starts, and Close after it stopped); the rest are under mu_.

#ifndef MOE_STORAGE_SRC_STORE_IMPL_H_
#define MOE_STORAGE_SRC_STORE_IMPL_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <variant>
#include <vector>

#include "moe/storage/store.h"
#include "sqlite_util.h"
#include "step_blob.h"

namespace moe::storage::internal {

using Millis = std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// Most rollups or decisions one retention transaction deletes.
inline constexpr uint64_t kRetentionDeleteChunk = 5000;

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

using Payload = std::variant<telemetry::Hello, PackedStep, EpochRow, DecisionRow, CommandSent,
                             AckUpdate, OutcomeUpdate, LearningSampleRow, RepeatUpdate,
                             UnknownUpdate, OperatorActionRow, ActionLink, EngineGone>;

// One queued write. Tickets increase in enqueue order; the queue is FIFO, so
// "ticket t committed" means every write up to t is.
struct Op {
  uint64_t ticket = 0;
  size_t rows = 1;
  Payload payload;
  size_t bytes = 0;  // step records only: what counts against max_queue_bytes
};

struct BatchCounts {
  uint64_t steps = 0;
  uint64_t rows = 0;
  uint64_t unmatched = 0;  // updates of a decision id not in the file
};

// An open database file: the connection, what the file is, and the highest
// decision id in it.
struct OpenedDb {
  DbHandle db;
  dev_t dev = 0;
  ino_t ino = 0;
  int64_t last_decision_id = 0;
  int64_t last_action_id = 0;  // MAX(operator_actions.id)
  int64_t page_size = 4096;
};

// Opens (creating if needed) `options.path`: checks what the file is, sets
// WAL mode and synchronous=NORMAL, migrates, reads MAX(decisions.id) and the
// file's device and inode. Errors as Store::Open.
Result<OpenedDb> OpenStoreFile(const StoreOptions& options, Clock* clock);

class StoreImpl final : public Store {
 public:
  StoreImpl(const StoreOptions& options, Clock* clock, OpenedDb opened);
  ~StoreImpl() override { (void)Close(); }

  // Prepares the statements and installs the WAL hook on db_.
  Status Prepare();
  void Start();

  void UpsertEngine(const telemetry::Hello& hello) override;
  void AppendStep(const telemetry::StepRecord& record) override;
  void RecordEpoch(const EpochRow& row) override;
  void RecordLearningSample(const LearningSampleRow& row) override;
  int64_t RecordDecision(DecisionRow row) override;
  DecisionCommit CommitDecision(DecisionRow row, Millis timeout) override;
  void RecordCommandSent(int64_t decision_id, uint64_t epoch, int64_t sent_ns) override;
  void RecordAck(int64_t decision_id, const telemetry::Ack& ack) override;
  void RecordOutcome(int64_t decision_id, const DecisionOutcome& outcome) override;
  void RecordRepeat(int64_t decision_id, uint64_t repeats, int64_t last_ns) override;
  void RecordUnknown(std::optional<int64_t> decision_id, const std::string& reason,
                     int64_t ns) override;
  int64_t RecordOperatorAction(OperatorActionRow row) override;
  void LinkOperatorAction(int64_t action_id, int64_t decision_id) override;
  void MarkEngineGone(const std::string& engine_id, int64_t gone_ns) override;
  Status Flush(Millis timeout) override;
  Status RunRetention(Millis timeout) override;
  Status Close() override;
  StoreStats stats() const override;
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
    Statement link_operator_action;
    Statement mark_engine_gone;
    Statement min_raw_time;
    Statement select_raw;
    Statement select_raw_steps;
    Statement select_rollup;
    Statement upsert_rollup;
    Statement delete_raw_loads;
    Statement delete_raw_steps;
    Statement delete_raw_packed_steps;
    Statement delete_old_rollups;
    Statement delete_old_decisions;
  };

  bool RetentionEnabled() const {
    return options_.raw_retention.count() > 0 || options_.rollup_retention.count() > 0 ||
           options_.decision_retention.count() > 0;
  }
  int64_t RetentionIntervalNanos() const {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(options_.retention_interval)
        .count();
  }

  // store.cc
  void EnqueueLocked(Payload payload, size_t rows, size_t bytes = 0);
  // Takes the next batch: an urgent row with the writes it must follow
  // (*urgent set; see urgent_), else queued writes up to batch_rows.
  void TakeBatchLocked(std::vector<Op>* batch, bool* urgent);
  // Puts a failed batch back into queue_ in ticket order.
  void RequeueLocked(std::vector<Op>* batch);
  // Every write with a ticket up to this one is committed (or discarded):
  // the lowest ticket still queued or in flight, less one.
  uint64_t CommittedThroughLocked() const;
  void WriterLoop();
  // Writes `batch` in one transaction. With `yield_to_urgent`, stops before
  // the next op once a CommitDecision waits (urgent_waiting_) and commits
  // what it applied: *applied ops, from the front (all of them otherwise).
  Status WriteBatch(const std::vector<Op>& batch, BatchCounts* counts, bool yield_to_urgent = false,
                    size_t* applied = nullptr);
  Status ApplyOp(const Op& op, BatchCounts* counts);
  Status ApplyStep(const PackedStep& step, BatchCounts* counts);
  Status ApplyDecisionUpdate(Statement& stmt, int64_t decision_id, std::string_view what,
                             BatchCounts* counts);
  Status InTransaction(const std::function<Status()>& body);

  // store_retention.cc
  struct RetentionCounts {
    uint64_t rolled = 0;
    uint64_t rollups_deleted = 0;
    uint64_t decisions_deleted = 0;
  };
  // One transaction of the retention pass in progress (horizons from
  // retention_now_ns_); `*done` when the pass has nothing left. The writer
  // alternates these with write batches, so retention keeps pace with any
  // write rate without holding writes back.
  Status RetentionStep(RetentionCounts* counts, bool* done);
  Status RetentionChunk(int64_t horizon_ns, uint64_t* num_rolled, bool* more);
  // Deletes up to one chunk of rows by `stmt` (bound to `horizon_ns`) in one
  // transaction; `*more` when the chunk was full.
  Status DeleteChunk(Statement& stmt, int64_t horizon_ns, uint64_t* num_deleted, bool* more);

  // store_file.cc
  static int WalHook(void* self, sqlite3* db, const char* name, int num_frames);
  // True (and logged, counted, replaced_ set) when the file at path is no
  // longer the open one. Idempotent while replaced_.
  bool CheckFileReplaced();
  // Releases the replaced file and opens the one at path (writer thread).
  Status Reopen();
  // Asks the checkpointer for a pass when the WAL is over
  // wal_checkpoint_bytes or the interval has passed (`force`: whenever the
  // WAL holds anything).
  void MaybeCheckpoint(bool force);
  // The checkpointer thread: each pass opens a connection of its own, runs a
  // PASSIVE checkpoint (SQLite copies WAL frames into the file and syncs it
  // without taking the write lock, so a CommitDecision commits meanwhile),
  // and closes it. While a pass runs the writer holds back step batches and
  // retention, so the pass reaches the end of the WAL and the next commit
  // restarts it from its start (cut to journal_size_limit).
  void CheckpointerLoop();
  Status CheckpointPass(dev_t dev, ino_t ino);
  // True while the writer must leave the WAL to the checkpointer (under mu_).
  bool CheckpointingLocked() const { return checkpoint_requested_ || checkpoint_running_; }
  // One TRUNCATE checkpoint on the writer's connection that does not wait on
  // readers, for a replaced file and at close: OK when the WAL is now empty,
  // kUnavailable when a reader kept it from finishing.
  Status Checkpoint();
  uint64_t NoteWalSize();  // stats_.wal_bytes from the -wal file; returns it

  const StoreOptions options_;
  Clock* const clock_;

  // writer: the members below are the writer thread's, and a CommitDecision
  // that writes its row on the caller's thread while the writer waits (both
  // hold db_mu_ meanwhile; lock order db_mu_, then mu_, or try_lock).
  std::mutex db_mu_;
  DbHandle db_;
  std::unique_ptr<Statements> stmts_;
  dev_t file_dev_ = 0;
  ino_t file_ino_ = 0;
  int64_t page_size_ = 4096;
  // db_ is not the file at path: write nothing to it (atomic: the writer's
  // wait reads it without db_mu_).
  std::atomic<bool> replaced_{false};
  uint64_t wal_frames_ = 0;      // frames in the WAL after the latest commit
  uint64_t wal_frames_new_ = 0;  // frames appended since stats_ last took them
  SteadyClock::time_point next_checkpoint_{};
  SteadyClock::time_point next_file_check_{};
  int64_t next_retention_mono_ = 0;
  bool retention_active_ = false;  // a pass is in progress
  int retention_stage_ = 0;
  int64_t retention_now_ns_ = 0;         // the pass's Clock::NowNanos at its start
  uint64_t retention_pass_request_ = 0;  // retention_requested_ when it started
  std::thread writer_;
  std::thread checkpointer_;
  // Held by the checkpointer for a pass, and by the writer while it swaps the
  // file (Reopen, Close): a pass never holds a file the writer is releasing.
  // Lock order: db_mu_, checkpoint_file_mu_, mu_.
  std::mutex checkpoint_file_mu_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // wakes the writer
  std::condition_variable done_cv_;  // wakes Flush, RunRetention and Close
  std::deque<Op> queue_;
  // CommitDecision's rows. Each goes in a transaction of its own with the
  // writes queued before it that are not step records (step records depend
  // on no decision and no decision on them; every other write keeps its
  // order), ahead of those step records.
  std::deque<Op> urgent_;
  uint64_t urgent_committed_ticket_ = 0;    // the latest CommitDecision row committed
  uint64_t discarded_decision_ticket_ = 0;  // the latest decision row SQLite rejected
  uint64_t inflight_min_ticket_ = 0;        // lowest ticket of the batch in flight; 0: none
  std::atomic<int> urgent_waiting_{0};      // CommitDecision calls waiting on the writer
  size_t queued_rows_ = 0;
  size_t inflight_rows_ = 0;   // in the writer's current (possibly failing) batch
  size_t queued_bytes_ = 0;    // Op::bytes queued
  size_t inflight_bytes_ = 0;  // Op::bytes in the writer's current batch
  size_t inflight_ops_ = 0;
  uint64_t next_ticket_ = 0;           // last ticket handed out
  uint64_t isolate_until_ticket_ = 0;  // writes up to here go one per transaction
  int flush_waiters_ = 0;
  uint64_t retention_requested_ = 0;
  uint64_t retention_done_ = 0;
  Status retention_status_;
  bool stopping_ = false;                  // Close has begun: drain, then exit
  bool checkpoint_requested_ = false;      // the writer asked for a pass
  bool checkpoint_running_ = false;        // a pass is running
  std::condition_variable checkpoint_cv_;  // wakes the checkpointer
  bool abandon_ = false;                   // Close gives up: exit now
  bool closed_ = false;                    // writes are no longer accepted
  StoreStats stats_;

  std::mutex close_mu_;
  bool close_done_ = false;
  Status close_status_;
};

}  // namespace moe::storage::internal

#endif  // MOE_STORAGE_SRC_STORE_IMPL_H_
