// Store: the controller's SQLite database (WAL mode).
//
// One writer: a Store owns the only read-write connection and a writer thread
// that drains a queue of pending writes in batched transactions with prepared
// statements. Calls that enqueue never block on disk and never fail; a write
// that SQLite rejects (busy, I/O error, disk full) stays queued and is retried,
// so a record handed to the Store is either committed or still queued, never
// silently lost. Only if the queue exceeds `max_queue` are new *telemetry*
// rows refused (counted in stats().rejected); decision rows are never refused.
//
// "Rows" below are units of queued work: a StepRecord counts one row per layer
// (at least one); every other write counts one.
//
// Readers (the CLI) open the file with Reader (reader.h), read-only.
//
// WAL: the Store checkpoints the WAL itself (SQLite's automatic checkpoint is
// off): after a commit that leaves more than `wal_checkpoint_bytes` in it, and
// every `checkpoint_interval` while it holds anything. A checkpoint thread
// runs each one on a connection of its own, PASSIVE and without waiting on
// readers, so its copying and fsyncs never hold up a decision row: a
// CommitDecision commits while it runs. Meanwhile the writer holds back step
// batches and retention (they wait in the queue), so the checkpoint reaches
// the end of the WAL, and the next commit reuses the WAL from its start and
// cuts the file to `wal_checkpoint_bytes` (journal_size_limit). A reader that
// holds an old snapshot stops a checkpoint short ("busy"); the next one
// finishes. The writer never holds a statement open between uses, so it never
// pins a snapshot of its own. stats() shows the WAL's size and the
// checkpoints.
//
// The file replaced under the daemon: before and after every commit, and every
// `file_check_interval`, the writer checks that the file at `path` is still
// the one it opened (device and inode of the path against the open file; a
// deleted path counts). When it is not, the writer stops writing to the old
// file, logs an error naming both, checkpoints the old file's WAL into it
// (so the -wal beside the path holds nothing of the old file), closes it, and
// reopens `path` as Open does (creating an empty database if the path is
// gone, applying migrations otherwise). Queued writes, and the batch whose
// commit raced the replacement, are written to the new file: nothing queued
// is lost. Rows committed before the replacement stay in the old file. While
// `path` cannot be opened as a moectl database (another application's file,
// garbage, a newer schema), stats().failing is set, last_error says why,
// writes stay queued (telemetry beyond max_queue is refused and counted) and
// the writer retries with backoff. The daemon only reports it; it does not
// exit (a restart would not bring the old file back).
//
// Schema: numbered migrations recorded in table `schema_migrations`; opening a
// database applies the missing ones in order in one transaction each. See
// docs/storage.md for the tables.
//
// Thread safety: every method of Store may be called from any thread.

#ifndef MOE_STORAGE_STORE_H_
#define MOE_STORAGE_STORE_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "moe/common/clock.h"
#include "moe/common/status.h"
#include "moe/storage/rows.h"
#include "moe/telemetry/types.h"

namespace moe::storage {

struct StoreOptions {
  // Database file; created with its directory if missing.
  std::string path;
  // Most rows written in one transaction (a single larger StepRecord still
  // goes in whole).
  size_t batch_rows = 2000;
  // The writer commits at least this often while rows are pending.
  std::chrono::milliseconds flush_interval{200};
  // Pending rows (queued or in a failing transaction) beyond which a new
  // StepRecord is refused (counted in stats().rejected). Other writes are
  // never refused.
  size_t max_queue = 200000;
  // Bytes of pending step records (packed, as queued: a fraction of the
  // record's decoded size) beyond which a new StepRecord is refused the same
  // way, so a few huge records cannot hold hundreds of MB. A record is always
  // taken into an empty queue.
  size_t max_queue_bytes = size_t{256} << 20;
  // Raw per-step rows older than this (by their timestamp, against
  // Clock::NowNanos, rounded down to a whole minute) are rolled up into
  // per-minute rows and deleted; 0 keeps raw rows forever.
  std::chrono::seconds raw_retention{0};
  // Rollup rows whose minute started longer ago than this are deleted; 0
  // keeps them forever. When both are set it must not be shorter than
  // raw_retention (rollups would be deleted as soon as they are made).
  std::chrono::seconds rollup_retention{0};
  // Decisions created longer ago than this are deleted; 0 keeps them forever.
  // A decision still in flight (status "sent" or "acked" and no outcome
  // measured) is never deleted, whatever its age. Epochs and learning samples
  // are always kept (the learner reads them at start).
  std::chrono::seconds decision_retention{0};
  // How often the writer runs a retention pass (by Clock::MonotonicNanos),
  // when any retention above is set. A pass is a series of transactions of
  // at most batch_rows rows, alternated with write batches: it runs on this
  // interval even while the queue never empties, and keeps pace with it.
  std::chrono::seconds retention_interval{10};
  // A WAL checkpoint runs after a commit that leaves the WAL above this size,
  // and every checkpoint_interval while the WAL holds any frame.
  uint64_t wal_checkpoint_bytes = 4u << 20;
  std::chrono::milliseconds checkpoint_interval{1000};
  // How often an idle writer checks that the file at `path` is the one it
  // opened (it also checks before and after every commit).
  std::chrono::milliseconds file_check_interval{1000};
  // How long SQLite waits on a lock held by another connection before
  // reporting busy (the write is then retried with backoff).
  std::chrono::milliseconds busy_timeout{2000};
  // How long Close (and the destructor) keeps retrying pending writes before
  // giving up on them.
  std::chrono::milliseconds close_timeout{10000};
};

struct StoreStats {
  uint64_t steps_written = 0;    // StepRecords committed
  uint64_t rows_written = 0;     // rows of any table committed
  uint64_t transactions = 0;     // committed write transactions
  uint64_t pending = 0;          // writes queued, not yet committed
  uint64_t write_errors = 0;     // failed attempts (retried)
  std::string last_error;        // text of the most recent failed attempt
  bool failing = false;          // the latest write attempt failed; cleared by the next commit
  int64_t last_decision_id = 0;  // highest id handed out by RecordDecision
  int64_t last_action_id = 0;    // highest id handed out by RecordOperatorAction

  // Writes refused or lost, each counted once (see lost()).
  uint64_t rejected = 0;             // telemetry refused because the queue was full
  uint64_t discarded = 0;            // writes SQLite rejects for good (constraint, too big)
  uint64_t abandoned_at_close = 0;   // still queued when Close gave up
  uint64_t ignored_after_close = 0;  // handed to the Store after Close
  uint64_t unmatched_updates = 0;    // sent/ack/outcome for a decision id not in the file
  // Every write refused or lost: the sum of the five counters above.
  uint64_t lost() const {
    return rejected + discarded + abandoned_at_close + ignored_after_close + unmatched_updates;
  }

  // Retention.
  uint64_t retention_runs = 0;     // retention passes that committed
  uint64_t rows_rolled_up = 0;     // raw rows (step x layer) folded into rollups
  uint64_t rollups_deleted = 0;    // rollup rows past rollup_retention
  uint64_t decisions_deleted = 0;  // decisions past decision_retention

  // WAL and checkpoints (see the top of this file).
  uint64_t wal_bytes = 0;              // size of the -wal file at the last look
  uint64_t wal_bytes_max = 0;          // the largest size seen
  uint64_t wal_pages_written = 0;      // WAL frames appended by commits, all told
  uint64_t checkpoints = 0;            // checkpoints run
  uint64_t checkpoints_truncated = 0;  // of which reached the WAL's end (it restarts)
  uint64_t checkpoints_busy = 0;       // of which a reader kept from finishing

  // The file at `path` replaced or deleted under the Store.
  uint64_t file_replaced = 0;  // times the writer found it was no longer the file it had open
  uint64_t reopened = 0;       // times it then opened the file at `path`
};

class Store {
 public:
  // Opens (creating if needed) the database, sets WAL mode, applies
  // migrations, and starts the writer thread. `clock` must outlive the Store.
  // Errors: kInvalidArgument (empty path, zero batch_rows), kFailedPrecondition
  // (the file is not a moectl database, or its schema is newer than this
  // binary knows), kCorruption (not an SQLite file), kIoError and others from
  // SQLite.
  static Result<std::unique_ptr<Store>> Open(const StoreOptions& options, Clock* clock);
  virtual ~Store() = default;  // implementations Close() (see Close)

  // Enqueue writes; all return at once. After Close they are ignored (logged).
  // UpsertEngine records the engine's shape; AppendStep also creates the
  // engine's row if no Hello was stored, and advances its last_seen_ns,
  // last_step and last_epoch.
  virtual void UpsertEngine(const telemetry::Hello& hello) = 0;
  virtual void AppendStep(const telemetry::StepRecord& record) = 0;
  virtual void RecordEpoch(const EpochRow& row) = 0;
  // Enqueues what the learner took from one epoch.
  virtual void RecordLearningSample(const LearningSampleRow& row) = 0;

  // Assigns the decision a new id (larger than any in the database), enqueues
  // it, and returns the id.
  virtual int64_t RecordDecision(DecisionRow row) = 0;
  // Records the decision as RecordDecision does, but ahead of every queued
  // write (none of which can depend on a decision not yet made), in a
  // transaction of its own, and waits until it is committed or `timeout`
  // passes: what the controller does before it sends the decision's command,
  // so a command is never sent before its row is durable, and the wait is one
  // small commit, not the telemetry queued before it. `status` is OK when
  // committed; kTimeout leaves the row queued (it is written later);
  // kFailedPrecondition when the store is closed. Call from one thread at a
  // time (the writer takes one such row per transaction).
  struct DecisionCommit {
    int64_t id = 0;
    Status status;
  };
  virtual DecisionCommit CommitDecision(DecisionRow row, std::chrono::milliseconds timeout) = 0;
  // Updates of an existing decision, by id.
  virtual void RecordCommandSent(int64_t decision_id, uint64_t epoch, int64_t sent_ns) = 0;
  virtual void RecordAck(int64_t decision_id, const telemetry::Ack& ack) = 0;
  virtual void RecordOutcome(int64_t decision_id, const DecisionOutcome& outcome) = 0;
  // The rejection `decision_id` was repeated: `repeats` more times in all,
  // the latest at `last_ns` (DecisionRow::repeats).
  virtual void RecordRepeat(int64_t decision_id, uint64_t repeats, int64_t last_ns) = 0;

  // Closes decision `decision_id` if it is "sent", "acked" or "failed" (an
  // ack timeout), or every decision that is "sent" or "acked" when absent, as
  // "unknown": its outcome will never be measured (the engine went away, or
  // the controller restarted). `reason` goes to
  // ack_error, `ns` to measured_ns.
  virtual void RecordUnknown(std::optional<int64_t> decision_id, const std::string& reason,
                             int64_t ns) = 0;

  // Assigns the lever a new id (larger than any in the database), enqueues
  // it, and returns the id.
  virtual int64_t RecordOperatorAction(OperatorActionRow row) = 0;
  // Lever `action_id` caused decision `decision_id` (operator_actions.decision_id).
  virtual void LinkOperatorAction(int64_t action_id, int64_t decision_id) = 0;
  // The engine went silent for its expiry: its row gets gone_ns (cleared
  // again by its next Hello or step). Creates no row for an unknown engine.
  virtual void MarkEngineGone(const std::string& engine_id, int64_t gone_ns) = 0;

  // Blocks until every write enqueued before the call (CommitDecision's
  // too) is committed, or the timeout passes (kTimeout; the writes stay
  // queued).
  virtual Status Flush(std::chrono::milliseconds timeout = std::chrono::seconds(10)) = 0;

  // Commits what is queued, then runs one retention pass on the writer thread
  // and waits for it (OK at once when no retention is set). The writer also runs
  // passes on its own every retention_interval; this is for tests and tools.
  virtual Status RunRetention(std::chrono::milliseconds timeout = std::chrono::seconds(30)) = 0;

  // Flushes (retrying for up to close_timeout), then stops the writer thread
  // and closes the database. Returns kUnavailable naming the number of writes
  // that could not be committed, if any. Idempotent: later calls return the
  // first call's status.
  virtual Status Close() = 0;

  virtual StoreStats stats() const = 0;
  virtual const std::string& path() const = 0;
};

}  // namespace moe::storage

#endif  // MOE_STORAGE_STORE_H_
