// The read-only query subcommands of moectl: engines, history, decisions,
// explain, experts. Each opens the database read-only.

#ifndef MOE_APPS_MOECTL_QUERY_COMMANDS_H_
#define MOE_APPS_MOECTL_QUERY_COMMANDS_H_

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "moe/storage/reader.h"

namespace moe::cli {

void AddQueryCommands(CLI::App& app);

// Opens `db` read-only and checks `engine` (unless empty) against it, as the
// query commands do. On failure says why on stderr and throws
// CLI::RuntimeError: 2 for an unknown engine (the message lists the known
// ones), 1 when the file cannot be read as a moectl database.
std::unique_ptr<storage::Reader> OpenQueryDb(const std::string& db, const std::string& engine);

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_QUERY_COMMANDS_H_
