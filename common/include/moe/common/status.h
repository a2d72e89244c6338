// Status and Result<T>: how every recoverable failure in moectl is reported.
//
// A Status is either OK or carries a code and a human-readable message that
// says what failed, where, and (when known) how to fix it. Result<T> holds
// either a T or a non-OK Status. Neither throws; no exception crosses a
// library boundary.
//
// Thread safety: Status and Result are values; distinct objects may be used
// from distinct threads without synchronisation.

#ifndef MOE_COMMON_STATUS_H_
#define MOE_COMMON_STATUS_H_

#include <cassert>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace moe {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,     // the caller passed something malformed or out of range
  kNotFound,            // a named thing (file, engine, row) does not exist
  kAlreadyExists,       // a thing that must be unique exists already
  kFailedPrecondition,  // the system is not in a state where the call can run
  kOutOfRange,          // a value is outside its documented range
  kUnsupported,         // the backend or build lacks the requested feature
  kUnavailable,         // a transient failure: retrying may succeed
  kTimeout,             // a deadline passed before the call completed
  kCorruption,          // stored or received data is malformed
  kIoError,             // the operating system or a library reported an I/O error
  kInternal,            // a library call failed in a way the caller cannot fix
};

// Returns a stable lowercase name such as "invalid_argument".
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  // An OK status.
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }
  static Status InvalidArgument(std::string msg) {
    return {StatusCode::kInvalidArgument, std::move(msg)};
  }
  static Status NotFound(std::string msg) { return {StatusCode::kNotFound, std::move(msg)}; }
  static Status AlreadyExists(std::string msg) {
    return {StatusCode::kAlreadyExists, std::move(msg)};
  }
  static Status FailedPrecondition(std::string msg) {
    return {StatusCode::kFailedPrecondition, std::move(msg)};
  }
  static Status OutOfRange(std::string msg) { return {StatusCode::kOutOfRange, std::move(msg)}; }
  static Status Unsupported(std::string msg) { return {StatusCode::kUnsupported, std::move(msg)}; }
  static Status Unavailable(std::string msg) { return {StatusCode::kUnavailable, std::move(msg)}; }
  static Status Timeout(std::string msg) { return {StatusCode::kTimeout, std::move(msg)}; }
  static Status Corruption(std::string msg) { return {StatusCode::kCorruption, std::move(msg)}; }
  static Status IoError(std::string msg) { return {StatusCode::kIoError, std::move(msg)}; }
  static Status Internal(std::string msg) { return {StatusCode::kInternal, std::move(msg)}; }

  // A status for a failed third-party call, recording the statement text and
  // its source position; used by the MOE_*_CHECK macros of each library.
  static Status FromCall(StatusCode code, std::string_view library, std::string_view statement,
                         std::string_view file, int line, std::string_view detail);

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "ok", or "<code>: <message>".
  std::string ToString() const;

  // A copy whose message is prefixed with `context: `. OK stays OK.
  Status WithContext(std::string_view context) const;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

// Holds either a value or a non-OK Status. Accessing the value of an error
// Result is a broken invariant (asserted).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : data_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : data_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(data_).ok() && "Result constructed from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(data_); }
  // OK when a value is held.
  Status status() const { return ok() ? Status::Ok() : std::get<Status>(data_); }

  T& value() & {
    assert(ok());
    return std::get<T>(data_);
  }
  const T& value() const& {
    assert(ok());
    return std::get<T>(data_);
  }
  T&& value() && {
    assert(ok());
    return std::get<T>(std::move(data_));
  }
  T value_or(T fallback) const { return ok() ? std::get<T>(data_) : std::move(fallback); }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  std::variant<T, Status> data_;
};

}  // namespace moe

#define MOE_STATUS_CONCAT_INNER_(a, b) a##b
#define MOE_STATUS_CONCAT_(a, b) MOE_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (a Status); returns it from the enclosing function if not OK.
#define MOE_RETURN_IF_ERROR(expr)              \
  do {                                         \
    ::moe::Status moe_status_ = (expr);        \
    if (!moe_status_.ok()) return moe_status_; \
  } while (0)

// Evaluates `rexpr` (a Result<T>); on error returns its Status, else moves the
// value into `lhs` (which may be a declaration such as `auto x`).
#define MOE_ASSIGN_OR_RETURN(lhs, rexpr) \
  MOE_ASSIGN_OR_RETURN_IMPL_(MOE_STATUS_CONCAT_(moe_result_, __LINE__), lhs, rexpr)
#define MOE_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                               \
  if (!tmp.ok()) return tmp.status();               \
  lhs = std::move(tmp).value()

#endif  // MOE_COMMON_STATUS_H_
