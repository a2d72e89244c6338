// The version of moectl, from the CMake project version: one string that
// moectl, moectld and moe-engine print for --version.

#ifndef MOE_COMMON_VERSION_H_
#define MOE_COMMON_VERSION_H_

#include <string>
#include <string_view>

namespace moe {

// "0.1.0"
std::string_view Version();

// What `program --version` prints: "moectl 0.1.0".
std::string VersionLine(std::string_view program);

}  // namespace moe

#endif  // MOE_COMMON_VERSION_H_
