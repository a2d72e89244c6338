// moectl: the operator CLI. Queries the controller's database read-only
// (engines, history, decisions, explain, experts) and runs the replication
// planner offline (plan), and makes CURVE keys (keygen). `moectl --help` lists the commands.

#include <CLI/CLI.hpp>

#include "keygen_command.h"
#include "plan_command.h"
#include "query_commands.h"

int main(int argc, char** argv) {
  CLI::App app{"moectl: operate and audit the moectl MoE controller"};
  app.require_subcommand(1);
  moe::cli::AddQueryCommands(app);
  moe::cli::AddPlanCommand(app);
  moe::cli::AddKeygenCommand(app);
  CLI11_PARSE(app, argc, argv);
  return 0;
}
