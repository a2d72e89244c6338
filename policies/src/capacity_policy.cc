#include "moe/policies/capacity_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moe::policies {

Status Validate(const CapacityPolicyParams& p) {
  if (!(p.target_low >= 0 && p.target_low < p.target_high && p.target_high <= 1)) {
    return Status::InvalidArgument(
        fmt::format("capacity policy: need 0 <= target_low < target_high <= 1, got target_low={} "
                    "target_high={}",
                    p.target_low, p.target_high));
  }
  if (!(p.gain > 0) || !(p.min_increase > 0) || !(p.decrease_step > 0)) {
    return Status::InvalidArgument(
        "capacity policy: gain, min_increase and decrease_step must be > 0");
  }
  return Status::Ok();
}

std::optional<Proposal> ProposeCapacity(const EngineSnapshot& snapshot,
                                        const CapacityPolicyParams& params) {
  double cf = snapshot.knobs.capacity_factor;
  if (cf <= 0 || snapshot.steps_in_epoch < params.min_steps) return std::nullopt;
  double drop = snapshot.drop_rate;
  Proposal proposal;
  proposal.policy = "capacity";
  proposal.knob = knob::kCapacityFactor;
  proposal.current = cf;
  if (drop > params.target_high) {
    double factor = 1 + params.gain * (drop - params.target_high);
    double target = std::max(cf * factor, cf + params.min_increase);
    proposal.value = std::round(target * 100) / 100;
    proposal.reason = fmt::format("drop rate {:.4f} above target band [{}, {}] over {} steps", drop,
                                  params.target_low, params.target_high, snapshot.steps_in_epoch);
    return proposal;
  }
  if (drop < params.target_low) {
    proposal.value = std::round((cf - params.decrease_step) * 100) / 100;
    proposal.reason =
        fmt::format("drop rate {:.4f} below target band [{}, {}] over {} steps: capacity to spare",
                    drop, params.target_low, params.target_high, snapshot.steps_in_epoch);
    return proposal;
  }
  return std::nullopt;
}

}  // namespace moe::policies
