// The controller config the end-to-end and reliability tests start moectld
// with: a quick
// cadence, outcome and guard for runs of a few seconds, capacity bands that a
// shifting scenario crosses, telemetry and commands on the test's loopback
// endpoints and the database in its temporary directory. Each test appends
// the tables of its own (metrics, control socket, policies, ...).

#ifndef MOE_TESTS_SUPPORT_DAEMON_CONFIG_H_
#define MOE_TESTS_SUPPORT_DAEMON_CONFIG_H_

#include <fmt/format.h>

#include <string>

namespace moe::testing {

struct DaemonConfig {
  std::string db;
  std::string telemetry;
  std::string commands;
  std::string log_level = "info";
  std::string progress_interval = "1s";  // "0s": no progress lines
  std::string cadence = "200ms";
  std::string ack_timeout = "3s";
  int window_steps = 32;
  std::string tables;  // further TOML tables, appended as they are
};

inline std::string DaemonToml(const DaemonConfig& c) {
  return fmt::format(R"(log_level = "{}"
cadence = "{}"
ack_timeout = "{}"
outcome_steps = 6
window_steps = {}
progress_interval = "{}"

[transport]
telemetry = "{}"
commands = "{}"

[storage]
path = "{}"
flush_interval = "50ms"

[policies.capacity]
target_low = 0.001
target_high = 0.01
min_steps = 4

[policies.guard]
cooldown = "300ms"
stale_after = "5s"
min_steps_in_epoch = 4
rollback = false
)",
                     c.log_level, c.cadence, c.ack_timeout, c.window_steps, c.progress_interval,
                     c.telemetry, c.commands, c.db) +
         c.tables;
}

}  // namespace moe::testing

#endif  // MOE_TESTS_SUPPORT_DAEMON_CONFIG_H_
