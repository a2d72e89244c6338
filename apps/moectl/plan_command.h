// `moectl plan`: runs the replication planner offline on a JSON file of
// per-layer expert loads and prints one plan per layer as JSON (the contract
// in DESIGN.md, "Replication planner contract"; details in docs/planner.md).

#ifndef MOE_APPS_MOECTL_PLAN_COMMAND_H_
#define MOE_APPS_MOECTL_PLAN_COMMAND_H_

#include <CLI/CLI.hpp>

namespace moe::cli {

// Registers the `plan` subcommand on `app`. Its callback writes the plans to
// stdout; on bad input it prints what is wrong (file, field, fix) to stderr
// and exits with status 1.
void AddPlanCommand(CLI::App& app);

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_PLAN_COMMAND_H_
