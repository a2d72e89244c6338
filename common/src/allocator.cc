#include "moe/common/allocator.h"

#include <fmt/format.h>
#include <malloc.h>

#include <climits>
#include <cstdlib>
#include <cstring>

namespace moe {

Result<bool> KeepFreedMemory(const AllocatorSettings& settings) {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (tunables != nullptr && std::strstr(tunables, "glibc.malloc.") != nullptr) {
    return false;  // the operator's settings stand
  }
  if (settings.trim_threshold_bytes > INT_MAX || settings.mmap_threshold_bytes > INT_MAX) {
    return Status::InvalidArgument(
        fmt::format("allocator: thresholds must be at most {} bytes, got trim {} and mmap {}",
                    INT_MAX, settings.trim_threshold_bytes, settings.mmap_threshold_bytes));
  }
  if (mallopt(M_TRIM_THRESHOLD, static_cast<int>(settings.trim_threshold_bytes)) != 1) {
    return Status::InvalidArgument(fmt::format("allocator: glibc refused M_TRIM_THRESHOLD = {}",
                                               settings.trim_threshold_bytes));
  }
  if (mallopt(M_MMAP_THRESHOLD, static_cast<int>(settings.mmap_threshold_bytes)) != 1) {
    return Status::InvalidArgument(fmt::format("allocator: glibc refused M_MMAP_THRESHOLD = {}",
                                               settings.mmap_threshold_bytes));
  }
  return true;
}

}  // namespace moe
