#include "moe/common/version.h"

#ifndef MOE_VERSION
#error "MOE_VERSION must be defined by the build (CMake's project version)"
#endif

namespace moe {

std::string_view Version() {
  return MOE_VERSION;
}

std::string VersionLine(std::string_view program) {
  return std::string(program) + " " + std::string(Version());
}

}  // namespace moe
