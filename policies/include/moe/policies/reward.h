// Reward: how good the steps under one setting were, as one number (higher is
// better). Configured in TOML; used to judge every decision's outcome and by
// the guard's rollback.
//
//   reward = - latency_weight * max(0, latency_us / slo_us - 1)
//            - drop_weight    * drop_rate
//            - quality_weight * quality_error
//            - capacity_weight * capacity_factor
//
// latency_us is the step's critical path (the sum over layers of router +
// dispatch + slowest device + modelled all-to-all + combine, as the engine
// reports it): what an expert-parallel group's step takes when its devices
// run in parallel, so balancing devices shows in it. Without per-layer
// timing it is the step's wall time.

#ifndef MOE_POLICIES_REWARD_H_
#define MOE_POLICIES_REWARD_H_

#include <cstdint>
#include <optional>

#include "moe/common/status.h"

namespace moe::policies {

struct RewardParams {
  double slo_us = 50'000;  // step latency objective, microseconds
  double latency_weight = 1.0;
  double drop_weight = 10.0;
  double quality_weight = 5.0;
  double capacity_weight = 0.02;  // memory/padding cost of capacity
};

Status Validate(const RewardParams& params);

// Mean figures of the steps that ran under one epoch.
struct OutcomeFigures {
  uint64_t steps = 0;
  double drop_rate = 0;
  double step_us = 0;               // wall time of a step
  double critical_path_us = 0;      // sum over layers of the layer's critical path (0: unknown)
  double max_over_mean = 0;         // expert load imbalance, mean over layers
  double device_max_over_mean = 0;  // device load imbalance, mean over layers
  std::optional<double> quality_error;
  double capacity_factor = 0;
};

double Reward(const OutcomeFigures& figures, const RewardParams& params);

}  // namespace moe::policies

#endif  // MOE_POLICIES_REWARD_H_
