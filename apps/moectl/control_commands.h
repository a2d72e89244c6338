// The moectl subcommands that talk to a running moectld through its control
// socket: status, pause, resume, pin, unpin, mode (docs/levers.md).

#ifndef MOE_APPS_MOECTL_CONTROL_COMMANDS_H_
#define MOE_APPS_MOECTL_CONTROL_COMMANDS_H_

#include <CLI/CLI.hpp>

namespace moe::cli {

void AddControlCommands(CLI::App& app);

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_CONTROL_COMMANDS_H_
