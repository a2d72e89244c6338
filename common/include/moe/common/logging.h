// Process-wide logging setup. Libraries log through spdlog's default logger;
// programs call InitLogging once from main().
//
// Two line formats:
//   terminal / file  "2026-12-01T23:40:12.345+00:00 info  moectld: text"
//                    (the time in UTC, with its offset written out)
//   journal          "<6>moectld: text": an sd-daemon(3) priority prefix
//                    (<2> critical, <3> error, <4> warn, <6> info, <7> debug
//                    and trace) and no time, which journald records itself

#ifndef MOE_COMMON_LOGGING_H_
#define MOE_COMMON_LOGGING_H_

#include <string_view>

#include "moe/common/status.h"

namespace moe {

// Sets the default spdlog logger (to stderr): its name, level and format.
// `level` is one of trace, debug, info, warn, error, critical, off (else
// kInvalidArgument). `journal_style` picks the journal format (pass
// StderrIsJournal()). May be called again; the latest call wins.
Status InitLogging(std::string_view program, std::string_view level, bool journal_style);

// True when stderr is connected to the systemd journal: $JOURNAL_STREAM is
// set and names the device and inode ("DEV:INO", decimal) of file
// descriptor 2 (systemd.exec(5): a process that redirected its stderr
// elsewhere keeps the variable but no longer matches).
bool StderrIsJournal();

}  // namespace moe

#endif  // MOE_COMMON_LOGGING_H_
