// The parts of controller_bench, one function per figure it reports (see
// controller_bench.cc for the command line and what each one measures).

#ifndef MOE_BENCH_CONTROLLER_BENCH_H_
#define MOE_BENCH_CONTROLLER_BENCH_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/common/status.h"
#include "moe/controller/options.h"
#include "synthetic_engine.h"

namespace moe::bench {

struct CycleOptions {
  int num_cycles = 2000;
  int warmup_cycles = 20;
  // Steps the engine runs between two cycles (one cadence).
  int steps_per_cycle = 16;
};

struct IngestOptions {
  int num_engines = 8;
  std::vector<double> rates = {2000};  // offered steps/s, all engines together
  double seconds = 5;
};

struct MemoryOptions {
  std::vector<int> engine_counts = {1, 2, 4, 8};
  std::string moectld_path;
  std::string config_path;  // controller.toml moectld starts with
};

// Each costly policy called once on a snapshot of `num_steps` synthetic steps.
nlohmann::json TimePolicies(const controller::ControllerOptions& options, const ModelShape& shape,
                            int num_steps);

// Control cycles (snapshot to command) of an in-process Controller with a
// fake clock, fed over ZeroMQ by one SyntheticEngine.
Result<nlohmann::json> RunCycles(const controller::ControllerOptions& base, const ModelShape& shape,
                                 const CycleOptions& options, const std::string& dir);

// Ingest: engines on their own threads publish at `rate` steps/s into one
// in-process Controller (real clock, real SQLite); counts what was stored.
Result<nlohmann::json> RunIngest(const controller::ControllerOptions& base, const ModelShape& shape,
                                 const IngestOptions& options, double rate, const std::string& dir);

// Memory: the resident set of a moectld process as engines join.
Result<nlohmann::json> RunMemory(const ModelShape& shape, const MemoryOptions& options,
                                 uint64_t window_steps, const std::string& dir);

// Percentile `p` (0..100) of `values` by the nearest-rank method; 0 if empty.
double Percentile(std::vector<double> values, double p);

// Polls `done` every `every` until it holds or `timeout` passes.
bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds timeout,
             std::chrono::microseconds every = std::chrono::microseconds(200));

}  // namespace moe::bench

#endif  // MOE_BENCH_CONTROLLER_BENCH_H_
