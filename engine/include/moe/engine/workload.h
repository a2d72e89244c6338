// Workload: the hidden states fed to the engine each step, from a scenario.
//
// Tokens come from a mixture of D "domains". Each domain has a seeded mean
// direction in hidden space, so the router sends different domains to
// different experts; a token is its domain's mean plus Gaussian noise. The
// domain proportions follow a schedule of keyframes over steps, interpolated
// linearly between keyframes (held after the last one, or repeated every
// `cycle_steps`), so expert load really shifts during a run. Tokens per step
// and per-device slowdown are step functions of the same keyframes.
//
// Thread safety: Generate() is const and deterministic in (scenario seed,
// step); one Workload may be shared by threads.

#ifndef MOE_ENGINE_WORKLOAD_H_
#define MOE_ENGINE_WORKLOAD_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "moe/common/status.h"

namespace moe::engine {

struct Keyframe {
  uint64_t step = 0;                    // where this keyframe sits on the schedule
  std::vector<double> mix;              // [num_domains] domain weights (>= 0, normalised on use)
  uint32_t tokens_per_step = 0;         // from this step on (0 = keep the previous value)
  std::vector<double> device_slowdown;  // from this step on, [D] factors (empty = keep)
};

struct ScenarioOptions {
  std::string name = "steady";      // for logs
  uint64_t seed = 7;                // seeds domain means, token noise and domain draws
  uint32_t num_domains = 4;         // domains D
  double domain_scale = 1.0;        // std of each entry of a domain's mean direction
  double noise_scale = 0.5;         // std of each entry of a token's noise
  uint32_t tokens_per_step = 256;   // tokens per step before any keyframe says otherwise
  uint64_t cycle_steps = 0;         // repeat the schedule every N steps (0 = hold the end)
  std::vector<Keyframe> keyframes;  // sorted by step; empty = uniform mix forever
};

// Checks ranges, keyframe order and mix sizes.
Status ValidateScenario(const ScenarioOptions& scenario);

// One step of workload.
struct WorkloadStep {
  std::vector<float> hidden;  // [num_tokens, H]
  int num_tokens = 0;
  std::vector<uint32_t> domain_tokens;  // [num_domains] tokens drawn from each domain
  std::vector<double> device_slowdown;  // factors in force (may be empty)
};

class Workload {
 public:
  // Validates `scenario`; `hidden` is the model's hidden size.
  static Result<std::unique_ptr<Workload>> Create(const ScenarioOptions& scenario, uint32_t hidden);
  virtual ~Workload() = default;

  // The step's tokens; `num_tokens` > 0 overrides the schedule's count (a
  // replayed trace fixes each step's tokens).
  virtual WorkloadStep Generate(uint64_t step, uint32_t num_tokens) const = 0;
  WorkloadStep Generate(uint64_t step) const { return Generate(step, 0); }
  // Normalised domain proportions at `step`.
  virtual std::vector<double> Mix(uint64_t step) const = 0;
  virtual const ScenarioOptions& scenario() const = 0;
};

}  // namespace moe::engine

#endif  // MOE_ENGINE_WORKLOAD_H_
