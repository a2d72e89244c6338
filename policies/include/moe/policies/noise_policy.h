// Noise policy: routing noise (noise_std) against load imbalance and quality.
//
// In order of precedence:
//   1. quality_error over its budget and noise on: lower noise_std by `step`
//      (floor 0), since noise perturbs the routing the quality is measured
//      against;
//   2. max_over_mean above imbalance_high with quality within budget (or not
//      measured): raise noise_std by `step` (cap max_noise) to spread load;
//   3. max_over_mean below imbalance_low and noise on: lower noise_std by
//      `step` (floor 0), the load being balanced without it.
// Otherwise, or with too few steps in the snapshot, it proposes nothing.
// Values are rounded to 1e-4; a proposal never equals the current value.

#ifndef MOE_POLICIES_NOISE_POLICY_H_
#define MOE_POLICIES_NOISE_POLICY_H_

#include <cstdint>
#include <optional>

#include "moe/common/status.h"
#include "moe/policies/snapshot.h"

namespace moe::policies {

struct NoisePolicyParams {
  // Expert load max_over_mean above which noise may help spread the load.
  double imbalance_high = 1.5;
  // Expert load max_over_mean below which noise is not needed;
  // 0 < imbalance_low < imbalance_high.
  double imbalance_low = 1.15;
  // Largest acceptable quality_error (relative error of the layer output
  // against unconstrained routing); > 0.
  double quality_budget = 0.05;
  // Change of noise_std per proposal; > 0.
  double step = 0.01;
  // Upper bound of noise_std; > 0.
  double max_noise = 0.1;
  // Steps the snapshot must cover before the policy acts.
  uint64_t min_steps = 8;
};

// Checks the parameters' ranges and ordering; the message names the field.
Status Validate(const NoisePolicyParams& params);

// The noise_std proposal for `snapshot` (policy "noise", knob "noise_std",
// layer -1), if any. Pure.
std::optional<Proposal> ProposeNoise(const EngineSnapshot& snapshot,
                                     const NoisePolicyParams& params);

}  // namespace moe::policies

#endif  // MOE_POLICIES_NOISE_POLICY_H_
