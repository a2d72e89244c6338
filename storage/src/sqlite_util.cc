#include "sqlite_util.h"

#include <fmt/format.h>

#include <utility>

namespace moe::storage::internal {

Status SqliteStatus(sqlite3* db, sqlite3_stmt* stmt, int rc, std::string_view call,
                    std::string_view file, int line) {
  StatusCode code = StatusCode::kInternal;
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      code = StatusCode::kUnavailable;
      break;
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN:
      code = StatusCode::kIoError;
      break;
    case SQLITE_NOTADB:
    case SQLITE_CORRUPT:
      code = StatusCode::kCorruption;
      break;
    case SQLITE_READONLY:
    case SQLITE_PERM:
      code = StatusCode::kFailedPrecondition;
      break;
    case SQLITE_CONSTRAINT:
    case SQLITE_TOOBIG:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
      code = StatusCode::kInvalidArgument;
      break;
    default:
      break;
  }
  // sqlite3_errmsg describes the most recent failure on the connection, which
  // is this one: each connection is used by one thread at a time.
  std::string detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  detail += fmt::format(" (code {})", rc);
  if (stmt != nullptr) {
    const char* sql = sqlite3_sql(stmt);
    if (sql != nullptr) {
      // One line: collapse the layout whitespace of multi-line statements.
      std::string compact;
      for (const char* p = sql; *p != '\0'; ++p) {
        bool space = *p == ' ' || *p == '\n' || *p == '\t' || *p == '\r';
        if (space && (compact.empty() || compact.back() == ' ')) continue;
        compact += space ? ' ' : *p;
      }
      if (!compact.empty() && compact.back() == ' ') compact.pop_back();
      detail += fmt::format("; sql: {}", compact);
    }
  }
  return Status::FromCall(code, "SQLite", call, file, line, detail);
}

void DbCloser::operator()(sqlite3* db) const {
  // sqlite3_close_v2 defers the close if a statement is still alive, so a
  // leaked statement cannot make this fail; its result is OK by contract.
  sqlite3_close_v2(db);
}

Result<DbHandle> OpenDatabase(const std::string& path, int flags, int busy_timeout_ms) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  DbHandle db(raw);
  if (rc != SQLITE_OK) {
    return SqliteStatus(db.get(), nullptr, rc, "sqlite3_open_v2(path, ...)", __FILE__, __LINE__)
        .WithContext(fmt::format("opening {}", path));
  }
  MOE_SQLITE_CHECK(db.get(), sqlite3_extended_result_codes(db.get(), 1));
  MOE_SQLITE_CHECK(db.get(), sqlite3_busy_timeout(db.get(), busy_timeout_ms));
  return db;
}

Status Exec(sqlite3* db, std::string_view sql, std::string_view what) {
  std::string text(sql);
  char* error = nullptr;
  int rc = sqlite3_exec(db, text.c_str(), nullptr, nullptr, &error);
  if (error != nullptr) sqlite3_free(error);
  if (rc != SQLITE_OK) {
    return SqliteStatus(db, nullptr, rc, "sqlite3_exec(db, sql)", __FILE__, __LINE__)
        .WithContext(what);
  }
  return Status::Ok();
}

Statement::Statement(Statement&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)),
      stmt_(std::exchange(other.stmt_, nullptr)),
      bind_status_(std::move(other.bind_status_)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    if (stmt_ != nullptr) sqlite3_finalize(stmt_);
    db_ = std::exchange(other.db_, nullptr);
    stmt_ = std::exchange(other.stmt_, nullptr);
    bind_status_ = std::move(other.bind_status_);
  }
  return *this;
}

Statement::~Statement() {
  // sqlite3_finalize repeats the last step's error, already reported by Step.
  if (stmt_ != nullptr) sqlite3_finalize(stmt_);
}

Result<Statement> Statement::Prepare(sqlite3* db, std::string_view sql, bool persistent) {
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()),
                              persistent ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    return SqliteStatus(db, nullptr, rc, "sqlite3_prepare_v3(db, sql, ...)", __FILE__, __LINE__)
        .WithContext(fmt::format("preparing `{}`", sql));
  }
  if (stmt == nullptr) return Status::Internal(fmt::format("empty SQL statement `{}`", sql));
  return Statement(db, stmt);
}

Statement& Statement::Reset() {
  // sqlite3_reset returns the error of the previous step, which Step already
  // reported; the reset itself cannot fail.
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_status_ = Status::Ok();
  return *this;
}

void Statement::NoteBindError(int rc, std::string_view call, int line) {
  if (!SqliteOk(rc) && bind_status_.ok()) {
    bind_status_ = SqliteStatus(db_, stmt_, rc, call, __FILE__, line);
  }
}

Statement& Statement::BindInt(int index, int64_t value) {
  NoteBindError(sqlite3_bind_int64(stmt_, index, value), "sqlite3_bind_int64(stmt, index, value)",
                __LINE__);
  return *this;
}

Statement& Statement::BindReal(int index, double value) {
  NoteBindError(sqlite3_bind_double(stmt_, index, value), "sqlite3_bind_double(stmt, index, value)",
                __LINE__);
  return *this;
}

Statement& Statement::BindText(int index, std::string_view value) {
  NoteBindError(
      sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
      "sqlite3_bind_text64(stmt, index, value, ...)", __LINE__);
  return *this;
}

Statement& Statement::BindBlob(int index, const void* data, size_t size) {
  // A zero-length blob must still be a BLOB, not NULL: pass a non-null pointer.
  static const char kEmpty = 0;
  NoteBindError(
      sqlite3_bind_blob64(stmt_, index, size == 0 ? &kEmpty : data, size, SQLITE_TRANSIENT),
      "sqlite3_bind_blob64(stmt, index, data, size, ...)", __LINE__);
  return *this;
}

Statement& Statement::BindNull(int index) {
  NoteBindError(sqlite3_bind_null(stmt_, index), "sqlite3_bind_null(stmt, index)", __LINE__);
  return *this;
}

Result<bool> Statement::Step() {
  if (!bind_status_.ok()) return bind_status_;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteStatus(db_, stmt_, rc, "sqlite3_step(stmt)", __FILE__, __LINE__);
}

Status Statement::Run() {
  while (true) {
    Result<bool> row = Step();
    if (!row.ok() || !*row) {
      // The step's error is in `row`; sqlite3_reset would only repeat it.
      if (stmt_ != nullptr) sqlite3_reset(stmt_);
      if (!row.ok()) return row.status();
      return Status::Ok();
    }
  }
}

bool Statement::ColumnIsNull(int index) const {
  return sqlite3_column_type(stmt_, index) == SQLITE_NULL;
}

int64_t Statement::ColumnInt(int index) const {
  return sqlite3_column_int64(stmt_, index);
}

double Statement::ColumnReal(int index) const {
  return sqlite3_column_double(stmt_, index);
}

std::string Statement::ColumnText(int index) const {
  const unsigned char* text = sqlite3_column_text(stmt_, index);
  int size = sqlite3_column_bytes(stmt_, index);
  if (text == nullptr) return {};
  return std::string(reinterpret_cast<const char*>(text), static_cast<size_t>(size));
}

std::string_view Statement::ColumnBlob(int index) const {
  const void* data = sqlite3_column_blob(stmt_, index);
  int size = sqlite3_column_bytes(stmt_, index);
  if (data == nullptr) return {};
  return std::string_view(static_cast<const char*>(data), static_cast<size_t>(size));
}

namespace {

template <typename T>
std::string EncodeLittleEndian(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    uint64_t v = values[i];
    for (size_t b = 0; b < sizeof(T); ++b) {
      out[i * sizeof(T) + b] = static_cast<char>((v >> (8 * b)) & 0xff);
    }
  }
  return out;
}

}  // namespace

std::string EncodeU32(const std::vector<uint32_t>& values) {
  return EncodeLittleEndian(values);
}
std::string EncodeU64(const std::vector<uint64_t>& values) {
  return EncodeLittleEndian(values);
}

Status AddBlob(std::string_view blob, size_t width, std::vector<uint64_t>* sums) {
  if (width == 0 || blob.size() % width != 0) {
    return Status::Corruption(
        fmt::format("expert load blob of {} bytes is not a multiple of {}", blob.size(), width));
  }
  size_t count = blob.size() / width;
  if (sums->size() < count) sums->resize(count, 0);
  for (size_t i = 0; i < count; ++i) {
    uint64_t v = 0;
    for (size_t b = 0; b < width; ++b) {
      v |= static_cast<uint64_t>(static_cast<unsigned char>(blob[i * width + b])) << (8 * b);
    }
    (*sums)[i] += v;
  }
  return Status::Ok();
}

}  // namespace moe::storage::internal
