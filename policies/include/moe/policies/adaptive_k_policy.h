// Adaptive K policy: the step latency budget against the quality probe.
//
// Over the latency budget (step_us > slo_us) with quality to spare, it lowers
// top_k by one: fewer experts per token, less compute and traffic. With
// quality over its budget and latency well under the SLO (step_us < headroom *
// slo_us), it raises top_k by one. Latency and quality both over budget is a
// conflict no K settles: it proposes nothing. A missing quality figure counts
// as within budget for lowering and never triggers raising. K stays inside
// [min_k, max_k]. A snapshot with too few steps proposes nothing.

#ifndef MOE_POLICIES_ADAPTIVE_K_POLICY_H_
#define MOE_POLICIES_ADAPTIVE_K_POLICY_H_

#include <cstdint>
#include <optional>

#include "moe/common/status.h"
#include "moe/policies/snapshot.h"

namespace moe::policies {

struct AdaptiveKParams {
  // Step latency budget, microseconds.
  double slo_us = 50'000;
  // Largest acceptable quality_error: the relative error of the layer output
  // against unconstrained routing.
  double quality_budget = 0.05;
  // Raise K only when step_us < headroom * slo_us; in (0, 1].
  double headroom = 0.7;
  // Bounds of top_k; 1 <= min_k <= max_k.
  uint32_t min_k = 1;
  uint32_t max_k = 8;
  // Steps the snapshot must cover before the policy acts.
  uint64_t min_steps = 8;
};

// Checks the parameters' ranges and ordering; the message names the field.
Status Validate(const AdaptiveKParams& params);

// The top_k proposal for `snapshot` (policy "adaptive_k", knob "top_k",
// layer -1, value = current +- 1), if any. Pure.
std::optional<Proposal> ProposeAdaptiveK(const EngineSnapshot& snapshot,
                                         const AdaptiveKParams& params);

}  // namespace moe::policies

#endif  // MOE_POLICIES_ADAPTIVE_K_POLICY_H_
