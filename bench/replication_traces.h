// Demand traces for replication_bench: per-step, per-layer, per-expert
// token-slots (before capacity), read at run time from the real routing in
// ../shared/real-routing/ (each folder's steps JSON; see its SOURCE.md) or
// generated (a synthetic shifting workload).

#ifndef MOE_BENCH_REPLICATION_TRACES_H_
#define MOE_BENCH_REPLICATION_TRACES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "moe/common/status.h"

namespace moe::bench {

struct DemandTrace {
  std::string name;
  std::string source;  // where it came from (a path relative to the data folder, or "generated")
  uint32_t num_experts = 0;
  uint32_t top_k = 0;
  std::vector<double> tokens;                            // [step] tokens of the step
  std::vector<std::vector<std::vector<double>>> demand;  // [step][layer][expert]
  size_t num_layers() const { return demand.empty() ? 0 : demand[0].size(); }
};

// Reads the steps files `files` (relative to `data_dir`, each
// {"experts", "top_k"?, "tokens_per_step", "steps": [step][layer][expert]})
// and concatenates their steps in order. `default_top_k` is used where a file
// has no "top_k". Every file must have the same experts and layers.
Result<DemandTrace> ReadStepsTrace(const std::string& name, const std::string& data_dir,
                                   const std::vector<std::string>& files, uint32_t default_top_k);

// Options of the synthetic shifting workload.
struct SyntheticOptions {
  uint32_t num_experts = 64;
  uint32_t top_k = 6;
  uint32_t num_layers = 4;
  uint32_t num_steps = 320;
  uint32_t tokens_per_step = 512;
  // Steps per phase: each phase draws a new popularity ranking (a domain
  // shift); inside a phase one expert's popularity ramps up from nothing.
  uint32_t phase_steps = 40;
  uint64_t seed = 7;
};

// The synthetic trace: in every phase and layer, expert popularity is 0.3
// uniform + 0.7 Zipf(1) over a ranking drawn at the phase start, plus one
// "rising" expert whose weight grows linearly over the phase to 4x the mean;
// each step draws tokens_per_step * top_k token-slots from it (a SplitMix64
// stream, so the trace is the same on every platform).
DemandTrace SyntheticShiftTrace(const SyntheticOptions& options);

}  // namespace moe::bench

#endif  // MOE_BENCH_REPLICATION_TRACES_H_
