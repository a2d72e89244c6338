// One synthetic engine on its own thread, publishing at a fixed rate over
// real ZeroMQ: what controller_bench's ingest section runs, and what the
// reliability load test (tests/reliability/load_test.cc) points at moectld.

#ifndef MOE_BENCH_INGEST_ENGINE_H_
#define MOE_BENCH_INGEST_ENGINE_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>

#include "moe/common/status.h"
#include "synthetic_engine.h"

namespace moe::bench {

struct IngestEngineResult {
  uint64_t sent = 0;      // steps handed to the link
  uint64_t dropped = 0;   // of which the link dropped (its queue full)
  uint64_t commands = 0;  // commands taken and acked
  double cpu_s = 0;       // the engine thread's CPU time
  Status status;          // the first error, if any
};

// Runs engine `id` (a SyntheticEngine of `shape` and `seed`): connects to the
// controller's endpoints, waits until `start`, publishes `steps_per_s` steps
// a second for `seconds` (steps numbered from 1), takes and acks commands
// every 16 steps, then counts itself in `finished` and keeps its sockets open
// until `close` holds. Meant to be a thread's body; `out` is written by this
// thread only and read once it is joined.
void RunIngestEngine(const std::string& id, const ModelShape& shape, uint64_t seed,
                     const std::string& telemetry_endpoint, const std::string& command_endpoint,
                     double steps_per_s, double seconds,
                     std::chrono::steady_clock::time_point start, std::atomic<int>* finished,
                     const std::atomic<bool>* close, IngestEngineResult* out);

}  // namespace moe::bench

#endif  // MOE_BENCH_INGEST_ENGINE_H_
