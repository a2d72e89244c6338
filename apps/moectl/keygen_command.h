// moectl keygen: a CURVE key pair for the ZeroMQ channels.

#ifndef MOE_APPS_MOECTL_KEYGEN_COMMAND_H_
#define MOE_APPS_MOECTL_KEYGEN_COMMAND_H_

#include <CLI/CLI.hpp>

namespace moe::cli {

void AddKeygenCommand(CLI::App& app);

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_KEYGEN_COMMAND_H_
