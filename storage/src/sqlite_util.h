// Private helpers around the SQLite C API: the checking macro, a connection
// handle and a prepared statement. Nothing here leaves storage/.

#ifndef MOE_STORAGE_SRC_SQLITE_UTIL_H_
#define MOE_STORAGE_SRC_SQLITE_UTIL_H_

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/common/status.h"

namespace moe::storage::internal {

// Turns a failed SQLite result code into a Status that names the call, its
// source position and sqlite3_errmsg (and the SQL text when `stmt` is given).
// Busy/locked map to kUnavailable, I/O and disk-full to kIoError, "not a
// database"/corrupt to kCorruption, read-only to kFailedPrecondition.
Status SqliteStatus(sqlite3* db, sqlite3_stmt* stmt, int rc, std::string_view call,
                    std::string_view file, int line);

// True when `rc` is a success code (OK, ROW or DONE).
inline bool SqliteOk(int rc) {
  return rc == SQLITE_OK || rc == SQLITE_ROW || rc == SQLITE_DONE;
}

}  // namespace moe::storage::internal

// Evaluates `call`, an sqlite3_* call on connection `db` returning a result
// code; if it failed, returns a Status recording the statement, file, line and
// sqlite3_errmsg from the enclosing function.
#define MOE_SQLITE_CHECK(db, call)                                                        \
  do {                                                                                    \
    int moe_sqlite_rc_ = (call);                                                          \
    if (!::moe::storage::internal::SqliteOk(moe_sqlite_rc_)) {                            \
      return ::moe::storage::internal::SqliteStatus((db), nullptr, moe_sqlite_rc_, #call, \
                                                    __FILE__, __LINE__);                  \
    }                                                                                     \
  } while (0)

namespace moe::storage::internal {

// Owns an sqlite3 connection; closes it (finalising nothing: statements must be
// destroyed first).
struct DbCloser {
  void operator()(sqlite3* db) const;
};
using DbHandle = std::unique_ptr<sqlite3, DbCloser>;

// Opens `path` with `flags` (SQLITE_OPEN_*), extended result codes on and the
// busy timeout set.
Result<DbHandle> OpenDatabase(const std::string& path, int flags, int busy_timeout_ms);

// Runs one or more SQL statements that return no rows we need.
Status Exec(sqlite3* db, std::string_view sql, std::string_view what);

// A prepared statement, prepared once and reused: Reset(), Bind*(), Step().
// Bind errors are sticky and reported by the next Step(), so calls chain.
class Statement {
 public:
  Statement() = default;
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // `persistent`: the statement is kept for the life of the connection.
  static Result<Statement> Prepare(sqlite3* db, std::string_view sql, bool persistent = false);

  // Ready for a new execution: resets and clears bindings.
  Statement& Reset();

  // Parameters are 1-based. Unsigned 64-bit values are stored bit for bit as
  // SQLite's signed INTEGER and read back with ColumnU64.
  Statement& BindInt(int index, int64_t value);
  Statement& BindU64(int index, uint64_t value) {
    return BindInt(index, static_cast<int64_t>(value));
  }
  Statement& BindReal(int index, double value);
  Statement& BindText(int index, std::string_view value);
  Statement& BindBlob(int index, const void* data, size_t size);
  Statement& BindNull(int index);
  template <typename T>
  Statement& BindOptionalInt(int index, const std::optional<T>& value) {
    return value ? BindInt(index, static_cast<int64_t>(*value)) : BindNull(index);
  }
  Statement& BindOptionalReal(int index, const std::optional<double>& value) {
    return value ? BindReal(index, *value) : BindNull(index);
  }

  // Executes one step: true when a row is available, false when done. A
  // statement left on a row holds a read transaction (a WAL snapshot) open
  // until it is reset: reset it after use (ResetOnExit).
  Result<bool> Step();
  // Steps to completion, expecting no rows to matter, then resets the
  // statement (bindings kept; sqlite3_changes still reports its changes).
  Status Run();

  // Columns are 0-based.
  bool ColumnIsNull(int index) const;
  int64_t ColumnInt(int index) const;
  uint64_t ColumnU64(int index) const { return static_cast<uint64_t>(ColumnInt(index)); }
  double ColumnReal(int index) const;
  std::string ColumnText(int index) const;
  // The bytes of a BLOB column (empty for NULL).
  std::string_view ColumnBlob(int index) const;
  template <typename T>
  std::optional<T> ColumnOptionalInt(int index) const {
    if (ColumnIsNull(index)) return std::nullopt;
    return static_cast<T>(ColumnInt(index));
  }
  std::optional<double> ColumnOptionalReal(int index) const {
    if (ColumnIsNull(index)) return std::nullopt;
    return ColumnReal(index);
  }

  sqlite3_stmt* get() const { return stmt_; }

 private:
  Statement(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  void NoteBindError(int rc, std::string_view call, int line);

  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  Status bind_status_;
};

// Resets a statement when the scope ends, however it ends.
class ResetOnExit {
 public:
  explicit ResetOnExit(Statement& stmt) : stmt_(stmt) {}
  ResetOnExit(const ResetOnExit&) = delete;
  ResetOnExit& operator=(const ResetOnExit&) = delete;
  ~ResetOnExit() { stmt_.Reset(); }

 private:
  Statement& stmt_;
};

// Little-endian packing of per-expert token counts (the expert_loads and
// rollups BLOBs): 4 bytes per expert for raw steps, 8 for rollup sums.
std::string EncodeU32(const std::vector<uint32_t>& values);
std::string EncodeU64(const std::vector<uint64_t>& values);
// Adds the counts in `blob` (of `width` 4 or 8 bytes each) into `sums`,
// growing it as needed. kCorruption when the size is not a multiple of width.
Status AddBlob(std::string_view blob, size_t width, std::vector<uint64_t>* sums);

}  // namespace moe::storage::internal

#endif  // MOE_STORAGE_SRC_SQLITE_UTIL_H_
