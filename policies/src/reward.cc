#include "moe/policies/reward.h"

#include <algorithm>

namespace moe::policies {

Status Validate(const RewardParams& p) {
  if (!(p.slo_us > 0)) return Status::InvalidArgument("reward: slo_us must be > 0");
  if (p.latency_weight < 0 || p.drop_weight < 0 || p.quality_weight < 0 || p.capacity_weight < 0) {
    return Status::InvalidArgument("reward: weights must be >= 0");
  }
  return Status::Ok();
}

double Reward(const OutcomeFigures& f, const RewardParams& p) {
  const double latency_us = f.critical_path_us > 0 ? f.critical_path_us : f.step_us;
  double latency_excess = std::max(0.0, latency_us / p.slo_us - 1.0);
  return -p.latency_weight * latency_excess - p.drop_weight * f.drop_rate -
         p.quality_weight * f.quality_error.value_or(0.0) - p.capacity_weight * f.capacity_factor;
}

}  // namespace moe::policies
