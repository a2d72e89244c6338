// Expert bias policy: auxiliary-loss-free load balancing, as in DeepSeek-V3.
//
// Each layer carries a selection bias per expert, added to the routing scores
// when experts are chosen (not to the gate weights). For every layer whose
// expert load is imbalanced (max_over_mean above min_imbalance), the policy
// nudges each expert's bias against its relative load error
//   err = expert_load[e] / mean - 1:
// an overloaded expert's bias goes down, an underloaded one's up, by
// update_rate * |err| capped at max_step, leaving experts with |err| <=
// deadband alone and keeping every bias inside [-max_bias, max_bias]
// (an element found outside is pulled back in). Values are rounded to 1e-5.
// Layers that are balanced, have no expert_load, a load mean <= 0, or a bias
// whose length differs from their expert_load are left unchanged. A snapshot
// with too few steps, or one where no element would change, proposes nothing.
//
// The bias in force for layer l is snapshot.knobs.expert_bias[l] when present
// and non-empty, else zeros.

#ifndef MOE_POLICIES_BIAS_POLICY_H_
#define MOE_POLICIES_BIAS_POLICY_H_

#include <cstdint>
#include <optional>

#include "moe/common/status.h"
#include "moe/policies/snapshot.h"

namespace moe::policies {

struct BiasPolicyParams {
  // Bias change per unit of relative load error; > 0.
  double update_rate = 0.002;
  // Largest change of one element per proposal; 0 < max_step <= max_bias.
  double max_step = 0.005;
  // Relative load error |load_e / mean - 1| at or below which an expert's
  // bias is left alone; >= 0.
  double deadband = 0.1;
  // Act only on layers whose max_over_mean is above this; > 0.
  double min_imbalance = 1.2;
  // DeepSeek-V3's update: every expert outside the deadband moves by exactly
  // update_rate (capped at max_step) against the sign of its error, instead
  // of in proportion to it.
  bool sign_update = false;
  // Bound of |bias|; > 0.
  double max_bias = 0.1;
  // Steps the snapshot must cover before the policy acts.
  uint64_t min_steps = 8;
};

// Checks the parameters' ranges and ordering; the message names the field.
Status Validate(const BiasPolicyParams& params);

// The expert_bias proposal for `snapshot` (policy "bias", knob "expert_bias",
// layer -1), if any. Pure.
//
// `current_vectors` and `vectors` are indexed by layer id (LayerEstimate::
// layer) and cover every layer of snapshot.layers and of
// snapshot.knobs.expert_bias: the bias in force (zeros of the layer's
// expert_load size, else of snapshot.num_experts, where none) and the new
// bias (a copy of the one in force for unchanged layers). `current` and
// `value` are the largest |element| of each; `reason` names the changed
// layers with their max_over_mean and hottest and coldest experts.
std::optional<Proposal> ProposeBias(const EngineSnapshot& snapshot, const BiasPolicyParams& params);

}  // namespace moe::policies

#endif  // MOE_POLICIES_BIAS_POLICY_H_
