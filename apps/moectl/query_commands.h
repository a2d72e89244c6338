// The read-only query subcommands of moectl: engines, history, decisions,
// explain, experts. Each opens the database read-only.

#ifndef MOE_APPS_MOECTL_QUERY_COMMANDS_H_
#define MOE_APPS_MOECTL_QUERY_COMMANDS_H_

#include <CLI/CLI.hpp>

namespace moe::cli {

void AddQueryCommands(CLI::App& app);

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_QUERY_COMMANDS_H_
