// Private helpers shared by the ZeroMQ transport: the MOE_ZMQ_CHECK macros,
// errno -> Status mapping, CURVE key checks, rate-limited logging.

#ifndef MOE_TELEMETRY_SRC_ZMQ_UTIL_H_
#define MOE_TELEMETRY_SRC_ZMQ_UTIL_H_

#include <zmq.h>

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "moe/common/status.h"

namespace moe::telemetry::internal {

// A Status for a failed ZeroMQ call: the code follows errno (EADDRINUSE,
// EHOSTUNREACH, EAGAIN -> kUnavailable; EINVAL, EPROTONOSUPPORT -> kInvalidArgument;
// ETERM -> kFailedPrecondition; otherwise kIoError).
Status ZmqError(std::string_view statement, std::string_view file, int line, int errnum);

// Path of `file` from the repository root on (no machine-specific prefix).
std::string_view SourceName(std::string_view file);

// Decodes a 40-character Z85 CURVE key into its 32 bytes.
Result<std::array<uint8_t, 32>> DecodeCurveKey(std::string_view what, const std::string& z85);

// True for the 1st..10th event of a kind and every 1000th after, so a flood of
// bad input cannot flood the log.
inline bool ShouldLog(uint64_t count) {
  return count <= 10 || count % 1000 == 0;
}

}  // namespace moe::telemetry::internal

// Runs a cppzmq statement; a thrown zmq::error_t returns a Status (recording
// the statement, file and line) from the enclosing function, which must return
// Status or Result<T>.
#define MOE_ZMQ_CHECK(...)                                                          \
  do {                                                                              \
    try {                                                                           \
      __VA_ARGS__;                                                                  \
    } catch (const ::zmq::error_t& moe_zmq_error_) {                                \
      return ::moe::telemetry::internal::ZmqError(#__VA_ARGS__, __FILE__, __LINE__, \
                                                  moe_zmq_error_.num());            \
    }                                                                               \
  } while (0)

// Runs a libzmq C call that returns -1 on failure (errno in zmq_errno()).
#define MOE_ZMQ_CHECK_RC(...)                                                                     \
  do {                                                                                            \
    if ((__VA_ARGS__) == -1) {                                                                    \
      return ::moe::telemetry::internal::ZmqError(#__VA_ARGS__, __FILE__, __LINE__, zmq_errno()); \
    }                                                                                             \
  } while (0)

#endif  // MOE_TELEMETRY_SRC_ZMQ_UTIL_H_
