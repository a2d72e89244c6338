// Capacity policy: feedback on the measured drop rate.
//
// Keeps the drop rate inside a target band [low, high]: above the band it
// raises capacity_factor in proportion to the excess; below the band (and with
// capacity to spare) it lowers capacity_factor by a fixed step, since spare
// capacity costs memory and padded compute. Inside the band it proposes
// nothing. A snapshot with too few steps proposes nothing (the estimate is not
// yet trustworthy). Unlimited capacity (capacity_factor 0) is left alone.

#ifndef MOE_POLICIES_CAPACITY_POLICY_H_
#define MOE_POLICIES_CAPACITY_POLICY_H_

#include <optional>

#include "moe/common/status.h"
#include "moe/policies/snapshot.h"

namespace moe::policies {

struct CapacityPolicyParams {
  // Target band of the drop rate (dropped token-slots / token-slots).
  double target_low = 0.002;
  double target_high = 0.02;
  // Above the band: capacity_factor *= 1 + gain * (drop_rate - target_high),
  // at least +min_increase.
  double gain = 4.0;
  double min_increase = 0.05;
  // Below the band: capacity_factor -= decrease_step.
  double decrease_step = 0.05;
  // Steps the snapshot must cover before the policy acts.
  uint64_t min_steps = 8;
};

// Checks the parameters' ranges and ordering; the message names the field.
Status Validate(const CapacityPolicyParams& params);

// The capacity proposal for `snapshot`, if any. Pure.
std::optional<Proposal> ProposeCapacity(const EngineSnapshot& snapshot,
                                        const CapacityPolicyParams& params);

}  // namespace moe::policies

#endif  // MOE_POLICIES_CAPACITY_POLICY_H_
