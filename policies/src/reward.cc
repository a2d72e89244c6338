#include "moe/policies/reward.h"

#include <fmt/format.h>

#include <algorithm>

namespace moe::policies {

Status Validate(const RewardParams& p) {
  if (!(p.slo_us > 0)) return Status::InvalidArgument("reward: slo_us must be > 0");
  const std::pair<const char*, double> weights[] = {
      {"latency_weight", p.latency_weight},     {"slo_weight", p.slo_weight},
      {"drop_weight", p.drop_weight},           {"quality_weight", p.quality_weight},
      {"migration_weight", p.migration_weight}, {"capacity_weight", p.capacity_weight}};
  for (const auto& [name, w] : weights) {
    if (!(w >= 0)) return Status::InvalidArgument(fmt::format("reward: {} must be >= 0", name));
  }
  return Status::Ok();
}

RewardTerms Terms(const OutcomeFigures& f, const RewardParams& p) {
  RewardTerms t;
  const bool modelled = f.balanced_latency_us > 0 && f.model_latency_us > 0;
  const double latency_us = modelled                 ? f.model_latency_us
                            : f.critical_path_us > 0 ? f.critical_path_us
                                                     : f.step_us;
  if (modelled) {
    t.latency = -p.latency_weight * (f.model_latency_us / f.balanced_latency_us - 1.0);
    t.migration = -p.migration_weight * f.migration_us / f.balanced_latency_us;
  }
  t.slo = -p.slo_weight * std::max(0.0, latency_us / p.slo_us - 1.0);
  t.drops = -p.drop_weight * f.drop_rate;
  t.quality = -p.quality_weight * f.quality_error.value_or(0.0);
  t.capacity = -p.capacity_weight * f.capacity_factor;
  return t;
}

double Reward(const OutcomeFigures& f, const RewardParams& p) {
  const RewardTerms t = Terms(f, p);
  return t.latency + t.slo + t.drops + t.quality + t.migration + t.capacity;
}

}  // namespace moe::policies
