// The Store's file: opening it, WAL checkpoints, and noticing the file at the
// path replaced or deleted under the Store (store.h says what then happens).

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>

#include "schema.h"
#include "store_impl.h"

namespace moe::storage::internal {

Result<OpenedDb> OpenStoreFile(const StoreOptions& options, Clock* clock) {
  std::filesystem::path parent = std::filesystem::path(options.path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    if (ec) {
      return Status::IoError(fmt::format("cannot create directory {} for the database: {}",
                                         parent.string(), ec.message()));
    }
  }
  OpenedDb opened;
  MOE_ASSIGN_OR_RETURN(opened.db,
                       OpenDatabase(options.path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE,
                                    static_cast<int>(options.busy_timeout.count())));
  sqlite3* db = opened.db.get();
  // Check what the file is before changing anything in it.
  MOE_ASSIGN_OR_RETURN(int version, ReadSchemaVersion(db, options.path));
  if (version > kLatestSchemaVersion) {
    return Status::FailedPrecondition(
        fmt::format("{} has schema version {}, newer than this binary knows ({}); upgrade moectld "
                    "or point it at another database",
                    options.path, version, kLatestSchemaVersion));
  }
  {
    MOE_ASSIGN_OR_RETURN(Statement wal, Statement::Prepare(db, "PRAGMA journal_mode=WAL"));
    MOE_ASSIGN_OR_RETURN(bool row, wal.Step());
    std::string mode = row ? wal.ColumnText(0) : "";
    if (mode != "wal") {
      return Status::FailedPrecondition(fmt::format(
          "cannot put {} in WAL mode (journal_mode is '{}'); use a file on a local disk",
          options.path, mode));
    }
  }
  MOE_RETURN_IF_ERROR(Exec(db, "PRAGMA synchronous=NORMAL", "setting synchronous"));
  // A WAL that restarts from its start after a checkpoint is cut to this size.
  MOE_RETURN_IF_ERROR(
      Exec(db, fmt::format("PRAGMA journal_size_limit={}", options.wal_checkpoint_bytes),
           "setting journal_size_limit"));
  MOE_RETURN_IF_ERROR(Migrate(db, options.path, clock->NowNanos()));
  for (auto [table, out] : {std::pair{"decisions", &opened.last_decision_id},
                            std::pair{"operator_actions", &opened.last_action_id}}) {
    MOE_ASSIGN_OR_RETURN(
        Statement max_id,
        Statement::Prepare(db, fmt::format("SELECT COALESCE(MAX(id), 0) FROM {}", table)));
    MOE_ASSIGN_OR_RETURN(bool row, max_id.Step());
    if (row) *out = max_id.ColumnInt(0);
  }
  {
    MOE_ASSIGN_OR_RETURN(Statement page_size, Statement::Prepare(db, "PRAGMA page_size"));
    MOE_ASSIGN_OR_RETURN(bool row, page_size.Step());
    if (row) opened.page_size = page_size.ColumnInt(0);
  }
  // The file exists now (migrations wrote to it). SQLite keeps its own
  // descriptor; the Store compares the path with this identity from now on.
  struct stat st {};
  if (::stat(options.path.c_str(), &st) != 0) {
    return Status::IoError(
        fmt::format("{} vanished while it was being opened: {}", options.path, strerror(errno)));
  }
  opened.dev = st.st_dev;
  opened.ino = st.st_ino;
  return opened;
}

int StoreImpl::WalHook(void* self, sqlite3* /*db*/, const char* /*name*/, int num_frames) {
  auto* store = static_cast<StoreImpl*>(self);
  auto frames = static_cast<uint64_t>(std::max(num_frames, 0));
  // Fewer frames than last time: the WAL was restarted from its start.
  store->wal_frames_new_ += frames >= store->wal_frames_ ? frames - store->wal_frames_ : frames;
  store->wal_frames_ = frames;
  return SQLITE_OK;
}

bool StoreImpl::CheckFileReplaced() {
  next_file_check_ = SteadyClock::now() + options_.file_check_interval;
  if (replaced_) return true;
  if (!db_) return false;
  std::string what;
  struct stat st {};
  if (::stat(options_.path.c_str(), &st) != 0) {
    what = fmt::format("is gone ({})", strerror(errno));
  } else if (st.st_dev != file_dev_ || st.st_ino != file_ino_) {
    what = fmt::format("is another file (device {} inode {}; the open one is device {} inode {})",
                       st.st_dev, st.st_ino, file_dev_, file_ino_);
  } else {
    // SQLite's own test: the path against the descriptor it writes through.
    int moved = 0;
    if (sqlite3_file_control(db_.get(), "main", SQLITE_FCNTL_HAS_MOVED, &moved) == SQLITE_OK &&
        moved != 0) {
      what = "is no longer the file SQLite has open";
    }
  }
  if (what.empty()) return false;
  replaced_ = true;
  std::lock_guard lock(mu_);
  ++stats_.file_replaced;
  stats_.failing = true;
  stats_.last_error =
      fmt::format("the database file {} {}: stopped writing to the old file", options_.path, what);
  spdlog::error("storage: {}; {} writes stay queued and go to the file now at the path",
                stats_.last_error, queue_.size() + inflight_ops_);
  return true;
}

Status StoreImpl::Reopen() {
  std::lock_guard pass_guard(checkpoint_file_mu_);  // no pass holds the old file
  if (db_) {
    // Whatever the old file's WAL still holds goes into the old file first:
    // the -wal beside the path must hold nothing of it when the new file is
    // opened there (SQLite would replay it onto the new file).
    Status emptied = Checkpoint();
    if (!emptied.ok()) {
      return emptied.WithContext(fmt::format(
          "emptying the WAL of the replaced file before opening the new {}", options_.path));
    }
    stmts_.reset();
    db_.reset();
  }
  Result<OpenedDb> opened = OpenStoreFile(options_, clock_);
  if (!opened.ok()) {
    return opened.status().WithContext(
        fmt::format("reopening {} after it was replaced", options_.path));
  }
  db_ = std::move(opened->db);
  file_dev_ = opened->dev;
  file_ino_ = opened->ino;
  page_size_ = opened->page_size;
  wal_frames_ = 0;
  Status prepared = Prepare();
  if (!prepared.ok()) {
    stmts_.reset();
    db_.reset();
    return prepared.WithContext(fmt::format("reopening {}", options_.path));
  }
  replaced_ = false;
  std::lock_guard lock(mu_);
  // Ids already handed out stay; new ones continue above both files' ids.
  stats_.last_decision_id = std::max(stats_.last_decision_id, opened->last_decision_id);
  stats_.last_action_id = std::max(stats_.last_action_id, opened->last_action_id);
  ++stats_.reopened;
  spdlog::error("storage: reopened {} (device {} inode {}, schema {}); {} queued writes go there",
                options_.path, file_dev_, file_ino_, kLatestSchemaVersion,
                queue_.size() + inflight_ops_);
  return Status::Ok();
}

void StoreImpl::MaybeCheckpoint(bool force) {
  if (!db_) return;
  auto now = SteadyClock::now();
  uint64_t wal_bytes = NoteWalSize();  // the size before it shrinks, for wal_bytes_max
  bool big = wal_frames_ * static_cast<uint64_t>(page_size_) >= options_.wal_checkpoint_bytes;
  // `force`: also a WAL file that is not empty though no frame is counted (one
  // left by a crash, or backfilled but not yet truncated because of a reader).
  bool due = now >= next_checkpoint_ && (wal_frames_ > 0 || (force && wal_bytes > 0));
  if (!big && !due) return;
  next_checkpoint_ = now + options_.checkpoint_interval;
  std::lock_guard lock(mu_);
  if (CheckpointingLocked()) return;
  checkpoint_requested_ = true;
  checkpoint_cv_.notify_one();
}

void StoreImpl::CheckpointerLoop() {
  std::unique_lock lock(mu_);
  for (;;) {
    checkpoint_cv_.wait(lock, [&] { return abandon_ || checkpoint_requested_; });
    if (abandon_) return;
    checkpoint_requested_ = false;
    checkpoint_running_ = true;
    lock.unlock();
    Status status;
    {
      std::lock_guard pass_guard(checkpoint_file_mu_);
      if (!replaced_) status = CheckpointPass(file_dev_, file_ino_);
    }
    lock.lock();
    checkpoint_running_ = false;
    if (!status.ok() && status.code() != StatusCode::kUnavailable) {
      ++stats_.write_errors;
      stats_.last_error = status.ToString();
      spdlog::warn("storage: checkpoint of {} failed: {}", options_.path, stats_.last_error);
    }
    work_cv_.notify_all();  // step batches go on
  }
}

Status StoreImpl::CheckpointPass(dev_t dev, ino_t ino) {
  // No busy handler: a reader holding an old snapshot stops the pass at once,
  // after it has copied what it could.
  MOE_ASSIGN_OR_RETURN(DbHandle db, OpenDatabase(options_.path, SQLITE_OPEN_READWRITE, 0));
  // The file at the path must still be the writer's (Reopen waits for the
  // pass, so it cannot change until the pass ends).
  struct stat st {};
  if (::stat(options_.path.c_str(), &st) != 0 || st.st_dev != dev || st.st_ino != ino) {
    return Status::Unavailable(fmt::format("{} is being replaced", options_.path));
  }
  // A read opens the WAL on this connection; the read ends with the statement.
  MOE_RETURN_IF_ERROR(Exec(db.get(), "PRAGMA schema_version", "opening the WAL to checkpoint"));
  int num_log = -1;
  int num_done = -1;
  int rc =
      sqlite3_wal_checkpoint_v2(db.get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &num_log, &num_done);
  Status status;
  {
    std::lock_guard lock(mu_);
    ++stats_.checkpoints;
    if (rc == SQLITE_OK && num_done >= num_log) {
      ++stats_.checkpoints_truncated;
    } else if (rc == SQLITE_OK || (rc & 0xff) == SQLITE_BUSY) {
      ++stats_.checkpoints_busy;
      status = Status::Unavailable(
          fmt::format("a reader of {} holds an old snapshot ({} of {} WAL frames checkpointed)",
                      options_.path, num_done, num_log));
    } else {
      status = SqliteStatus(db.get(), nullptr, rc, "sqlite3_wal_checkpoint_v2(db, PASSIVE)",
                            __FILE__, __LINE__);
    }
  }
  NoteWalSize();
  return status;
}

Status StoreImpl::Checkpoint() {
  sqlite3* db = db_.get();
  next_checkpoint_ = SteadyClock::now() + options_.checkpoint_interval;
  // No busy handler: a reader holding an old snapshot makes TRUNCATE return
  // SQLITE_BUSY at once, after backfilling what it could (as PASSIVE does).
  sqlite3_busy_timeout(db, 0);
  int num_log = -1;
  int num_done = -1;
  int rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_TRUNCATE, &num_log, &num_done);
  sqlite3_busy_timeout(db, static_cast<int>(options_.busy_timeout.count()));
  Status status;
  {
    std::lock_guard lock(mu_);
    ++stats_.checkpoints;
    if (rc == SQLITE_OK) {
      ++stats_.checkpoints_truncated;
      wal_frames_ = 0;
    } else if ((rc & 0xff) == SQLITE_BUSY) {
      ++stats_.checkpoints_busy;
      status = Status::Unavailable(
          fmt::format("a reader of {} holds an old snapshot ({} of {} WAL frames checkpointed)",
                      options_.path, num_done, num_log));
    } else {
      status = SqliteStatus(db, nullptr, rc, "sqlite3_wal_checkpoint_v2(db, TRUNCATE)", __FILE__,
                            __LINE__);
      ++stats_.write_errors;
      stats_.last_error = status.ToString();
      spdlog::warn("storage: checkpoint of {} failed: {}", options_.path, stats_.last_error);
    }
  }
  std::error_code ec;
  const uint64_t wal_bytes = std::filesystem::file_size(options_.path + "-wal", ec);
  if (!ec) {
    std::lock_guard lock(mu_);
    stats_.wal_bytes = wal_bytes;
    stats_.wal_bytes_max = std::max(stats_.wal_bytes_max, wal_bytes);
  }
  return status;
}

uint64_t StoreImpl::NoteWalSize() {
  std::error_code ec;
  uint64_t size = std::filesystem::file_size(options_.path + "-wal", ec);
  if (ec) size = 0;
  std::lock_guard lock(mu_);
  stats_.wal_bytes = size;
  stats_.wal_bytes_max = std::max(stats_.wal_bytes_max, size);
  stats_.wal_pages_written += wal_frames_new_;
  wal_frames_new_ = 0;
  return size;
}

}  // namespace moe::storage::internal
