// moe-engine's configuration: TOML files (configs/engine.toml, a model preset
// in configs/models/, a scenario in configs/scenarios/) read into the engine
// library's plain Options structs plus the program's own settings. Every key
// is validated; an error names file:line:col.

#ifndef MOE_APPS_MOE_ENGINE_ENGINE_CONFIG_H_
#define MOE_APPS_MOE_ENGINE_ENGINE_CONFIG_H_

#include <cstdint>
#include <string>

#include "moe/common/status.h"
#include "moe/engine/options.h"
#include "moe/engine/workload.h"

namespace moe::engine_app {

// The program's settings beside the engine's Options.
struct AppOptions {
  std::string engine_id = "engine-0";   // telemetry identity and command routing id
  std::string backend = "cpu";          // "cpu" or "cuda"
  int blas_threads = 1;                 // CPU backend BLAS threads (0 = OpenBLAS default)
  int cuda_device = 0;                  // CUDA device ordinal
  std::string gemm_precision = "fp32";  // CUDA GEMM arithmetic: "fp32", "tf32" or "bf16"
  bool grouped_gemm_fallback = false;   // CUDA: one GEMM per expert if cuBLAS refuses grouped ones
  int64_t step_interval_ms = 0;         // minimum time between step starts (pacing)
  int64_t heartbeat_ms = 1000;          // heartbeat when no step was published for this long
  int64_t hello_interval_ms = 5000;     // the Hello (epoch and knobs in force) re-sent this often
  int64_t progress_ms = 5000;           // progress line cadence on stderr
  bool telemetry_enabled = true;        // publish telemetry and accept commands
  std::string telemetry_endpoint = "tcp://127.0.0.1:5555";  // controller's PULL socket
  std::string command_endpoint = "tcp://127.0.0.1:5556";    // controller's ROUTER socket
  int send_queue = 1000;  // messages queued per channel before drops
  // Lockstep: after each step, wait for the controller's Sync of it (at most
  // await_timeout_ms, then run on until it answers again). For benchmarks and
  // simulations, with a controller on a step clock (`step_clock`).
  bool await_controller = false;
  int64_t await_timeout_ms = 5000;
  // CURVE (Z85 keys): this engine's key pair and the controller's public key;
  // all empty = plain TCP. The engine accepts commands only from that key.
  std::string curve_public_key;
  std::string curve_secret_key;
  std::string controller_public_key;
  std::string scenario;  // scenario file (relative to the config file)
};

struct EngineConfig {
  AppOptions app;
  engine::Options engine;
};

// Loads an engine config (tables: [engine], [telemetry], [model], [parallel],
// [knobs], [probe]; optional `model_preset` naming a model file whose [model],
// [parallel] and [knobs] tables are read first, the config's own tables then
// overriding them).
Result<EngineConfig> LoadEngineConfig(const std::string& path);

// Reads [model], [parallel] and [knobs] of a model preset file into `options`.
Status LoadModelPreset(const std::string& path, engine::Options* options);

// A scenario's routing trace ([trace] table): replayed instead of the
// router's selection (routing_trace.h).
struct TraceOptions {
  std::string path;  // JSON Lines trace (relative to the scenario file); empty = none
  bool loop = true;  // past the trace's end: start over (false: the router takes over)
};

struct Scenario {
  engine::ScenarioOptions workload;
  TraceOptions trace;
};

// Loads a scenario file (top-level keys, [[keyframe]] tables and an optional
// [trace] table). The trace file itself is read by LoadRoutingTrace().
Result<Scenario> LoadScenario(const std::string& path);

}  // namespace moe::engine_app

#endif  // MOE_APPS_MOE_ENGINE_ENGINE_CONFIG_H_
