// Process-wide logging setup. Libraries log through spdlog's default logger;
// programs call InitLogging once from main().

#ifndef MOE_COMMON_LOGGING_H_
#define MOE_COMMON_LOGGING_H_

#include <string_view>

#include "moe/common/status.h"

namespace moe {

// Sets the default spdlog logger's name and level. `level` is one of
// trace, debug, info, warn, error, critical, off. When `journal_style` is true
// (stderr is the systemd journal) lines carry no timestamp, since journald adds
// its own.
Status InitLogging(std::string_view program, std::string_view level, bool journal_style);

}  // namespace moe

#endif  // MOE_COMMON_LOGGING_H_
