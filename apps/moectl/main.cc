// moectl: the operator CLI. Queries the controller's database read-only
// (engines, history, decisions, explain, experts, levers) and draws its
// figures (plot), pulls operator levers on a running moectld (status, pause,
// resume, pin, unpin, mode), runs the replication planner offline (plan),
// makes CURVE keys (keygen), and runs the closed-loop benchmark (bench
// closed-loop). `moectl --help` lists the commands.
//
// Exit status: 0 ok, 1 failure, 2 usage (see apps/cli/parse_args.h).

#include <CLI/CLI.hpp>

#include "bench_command.h"
#include "control_commands.h"
#include "keygen_command.h"
#include "parse_args.h"
#include "plan_command.h"
#include "plot_command.h"
#include "query_commands.h"

int main(int argc, char** argv) {
  CLI::App app{"moectl: operate and audit the moectl MoE controller", "moectl"};
  moe::cli::AddVersionFlag(app, "moectl");
  app.require_subcommand(1);
  moe::cli::AddQueryCommands(app);
  moe::cli::AddControlCommands(app);
  moe::cli::AddPlotCommand(app);
  moe::cli::AddPlanCommand(app);
  moe::cli::AddKeygenCommand(app);
  moe::cli::AddBenchCommand(app);
  if (std::optional<int> code = moe::cli::ParseArgs(app, argc, argv)) return *code;
  return moe::cli::kExitOk;
}
