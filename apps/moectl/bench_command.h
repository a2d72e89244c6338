// `moectl bench closed-loop`: every contender (static default, static oracle,
// dynamic capacity, expert bias, periodic EPLB, the shipped controller) on the
// same token stream, each with real moe-engine and moectld processes over
// loopback, judged by one cost model and one reward. docs/controller.md,
// "Closed-loop benchmark".

#ifndef MOE_APPS_MOECTL_BENCH_COMMAND_H_
#define MOE_APPS_MOECTL_BENCH_COMMAND_H_

#include <CLI/CLI.hpp>

namespace moe::cli {

void AddBenchCommand(CLI::App& app);

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_BENCH_COMMAND_H_
