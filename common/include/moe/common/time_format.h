// Time values as operators type and read them.
//
// Times are int64 nanoseconds since the Unix epoch, UTC.

#ifndef MOE_COMMON_TIME_FORMAT_H_
#define MOE_COMMON_TIME_FORMAT_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "moe/common/status.h"

namespace moe {

// Formats `unix_nanos` as ISO 8601 UTC with milliseconds:
// "2026-11-23T01:27:30.123Z".
std::string FormatIsoTime(int64_t unix_nanos);

// Parses a duration such as "90s", "10m", "2h", "1d", "250ms" into nanoseconds.
// A bare number is seconds. Fails with kInvalidArgument naming the text.
Result<int64_t> ParseDuration(std::string_view text);

// Parses a time argument as given to `--since`/`--until`:
//   - relative: "-10m", "-2h", "-1d" (before `now_unix_nanos`), "now";
//   - absolute ISO 8601: "2026-11-23", "2026-11-23T01:27", "2026-11-23T01:27:30",
//     optionally with fractional seconds and a trailing "Z" or "+hh:mm" offset
//     ('T' may be a space). Without an offset, UTC is assumed.
//   - an integer with 16+ digits: Unix nanoseconds.
Result<int64_t> ParseTimeArg(std::string_view text, int64_t now_unix_nanos);

}  // namespace moe

#endif  // MOE_COMMON_TIME_FORMAT_H_
