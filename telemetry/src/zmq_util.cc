#include "zmq_util.h"

#include <fmt/format.h>

#include <cerrno>

namespace moe::telemetry::internal {

std::string_view SourceName(std::string_view file) {
  const size_t pos = file.rfind("telemetry/src/");
  return pos == std::string_view::npos ? file : file.substr(pos);
}

Status ZmqError(std::string_view statement, std::string_view file, int line, int errnum) {
  StatusCode code = StatusCode::kIoError;
  switch (errnum) {
    case EADDRINUSE:
    case EHOSTUNREACH:
    case EAGAIN:
    case ECONNREFUSED:
      code = StatusCode::kUnavailable;
      break;
    case EINVAL:
    case EPROTONOSUPPORT:
    case ENOCOMPATPROTO:
    case EADDRNOTAVAIL:
    case ENODEV:
      code = StatusCode::kInvalidArgument;
      break;
    case ETERM:
      code = StatusCode::kFailedPrecondition;
      break;
    default:
      break;
  }
  return Status::FromCall(code, "ZeroMQ", statement, SourceName(file), line, zmq_strerror(errnum));
}

Result<std::array<uint8_t, 32>> DecodeCurveKey(std::string_view what, const std::string& z85) {
  std::array<uint8_t, 32> key{};
  if (z85.size() != 40 || zmq_z85_decode(key.data(), z85.c_str()) == nullptr) {
    return Status::InvalidArgument(fmt::format(
        "{} is not a CURVE key: expected 40 Z85 characters, got {} characters", what, z85.size()));
  }
  return key;
}

}  // namespace moe::telemetry::internal
