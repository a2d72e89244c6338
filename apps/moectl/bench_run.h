// Closed-loop benchmark, runs: one contender = one real `moectld` and one real
// `moe-engine` over loopback ZeroMQ, on the scenario's token stream, each run
// with its own directory and SQLite database, which is then read back.

#ifndef MOE_APPS_MOECTL_BENCH_RUN_H_
#define MOE_APPS_MOECTL_BENCH_RUN_H_

#include <cstdint>
#include <map>
#include <optional>
#include <ostream>
#include <string>

#include "bench_analysis.h"
#include "moe/common/status.h"

namespace moe::cli::bench {

struct BenchSetup {
  std::string engine_bin;     // moe-engine
  std::string moectld_bin;    // moectld
  std::string engine_config;  // engine TOML
  std::string model_preset;   // optional --model preset (a replay's shape)
  std::string scenario;       // scenario TOML
  std::string out_dir;        // one subdirectory per run
  uint64_t steps = 240;
  // Steps every contender runs first on the same tokens, not counted: a
  // deployed controller is never cold when the workload moves, and the
  // engine's first steps reach a controller before its link is up.
  uint64_t warmup_steps = 16;
  // Each step's length on the controller's clock. In lockstep (the default)
  // the engine awaits the controller after every step and the controller's
  // clock is its step count times this (`step_clock`), so every cadence and
  // cooldown counts steps and decisions land at the same steps on any
  // machine; with wall_clock, the engine's pacing instead (the verdict then
  // moves with the machine's speed).
  int64_t step_interval_ms = 15;
  bool wall_clock = false;
  int64_t cadence_ms = 100;       // controller policy cadence
  double react_drop_rate = 0.02;  // a step dropping this much runs the pipeline at once
  // Every contender's engine runs this capacity scope ("slot": each replica
  // has its own buffer, as in expert-parallel serving; "expert": split).
  std::string capacity_scope = "slot";
  // The controller's cost model: given, it runs on it (`[cost_model] source
  // = "fixed"`, stragglers still measured against it), so its decisions do
  // not move with the machine's load; nullopt: it fits one online from the
  // run's measured times, as shipped.
  std::optional<policies::CostModel> controller_cost_model;
};

// One run: the engine's starting knobs, the controller's policies file, and
// keys of that file to override ("table.key" -> integer value).
struct RunSpec {
  std::string contender;
  std::string label;
  KnobPoint knobs;
  std::string policies_file;
  std::map<std::string, int64_t> overrides;
};

// The model shape and starting knobs the engine config and preset give.
Result<ModelShape> ReadShape(const BenchSetup& setup, KnobPoint* knobs);

// True when the scenario replays a routing trace (bias and noise are fixed).
Result<bool> ScenarioReplays(const std::string& scenario);

// The device slowdowns the scenario's keyframes inject (a straggler), by the
// step they start at; empty when none does. The engine applies them to its
// measured device times, and the bench to its cost model's (Summarise).
Result<DeviceSlowdowns> ScenarioSlowdowns(const std::string& scenario);

// The cost model's calibration workload, written to `path`: the scenario's
// token domains (a replay's trace: a synthetic stream of four domains)
// through kCalibrationLevels steps of token count, from a quarter of the
// scenario's tokens to three times them, each held kCalibrationHold steps
// after the warm-up. Rows per device then span a range wide enough to fit a
// slope, which the contenders' own steps (all near one operating point) are
// not.
inline constexpr int kCalibrationLevels = 6;
inline constexpr uint64_t kCalibrationHold = 10;
Status WriteCalibrationScenario(const BenchSetup& setup, const std::string& path);

// Runs `spec` and reads its database. Progress lines go to `progress`.
Result<RunData> RunContender(const BenchSetup& setup, const RunSpec& spec, const ModelShape& shape,
                             std::ostream& progress);

}  // namespace moe::cli::bench

#endif  // MOE_APPS_MOECTL_BENCH_RUN_H_
