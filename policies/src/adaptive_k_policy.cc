#include "moe/policies/adaptive_k_policy.h"

#include <fmt/format.h>

namespace moe::policies {

Status Validate(const AdaptiveKParams& p) {
  if (!(p.slo_us > 0)) {
    return Status::InvalidArgument(
        fmt::format("adaptive_k policy: slo_us must be > 0, got {}", p.slo_us));
  }
  if (!(p.quality_budget > 0)) {
    return Status::InvalidArgument(
        fmt::format("adaptive_k policy: quality_budget must be > 0, got {}", p.quality_budget));
  }
  if (!(p.headroom > 0 && p.headroom <= 1)) {
    return Status::InvalidArgument(
        fmt::format("adaptive_k policy: need 0 < headroom <= 1, got headroom={}", p.headroom));
  }
  if (!(p.min_k >= 1 && p.min_k <= p.max_k)) {
    return Status::InvalidArgument(fmt::format(
        "adaptive_k policy: need 1 <= min_k <= max_k, got min_k={} max_k={}", p.min_k, p.max_k));
  }
  return Status::Ok();
}

std::optional<Proposal> ProposeAdaptiveK(const EngineSnapshot& snapshot,
                                         const AdaptiveKParams& params) {
  if (snapshot.steps_in_epoch < params.min_steps) return std::nullopt;
  uint32_t k = snapshot.knobs.top_k;
  double step_us = snapshot.step_us;
  const std::optional<double>& quality = snapshot.quality_error;
  bool quality_over = quality && *quality > params.quality_budget;
  std::string quality_text = quality ? fmt::format("{:.4f}", *quality) : std::string("unknown");

  Proposal proposal;
  proposal.policy = "adaptive_k";
  proposal.knob = knob::kTopK;
  proposal.current = k;
  if (step_us > params.slo_us && k > params.min_k && !quality_over) {
    proposal.value = k - 1;
    proposal.reason = fmt::format(
        "latency over budget: step {:.0f} us > slo {:.0f} us over {} steps, quality error {} "
        "within budget {}: top_k {} -> {}",
        step_us, params.slo_us, snapshot.steps_in_epoch, quality_text, params.quality_budget, k,
        k - 1);
    return proposal;
  }
  double raise_below_us = params.headroom * params.slo_us;
  if (quality_over && step_us < raise_below_us && k < params.max_k) {
    proposal.value = k + 1;
    proposal.reason = fmt::format(
        "quality over budget: quality error {} > {} over {} steps, step {:.0f} us under "
        "headroom {:.0f} us ({} x slo {:.0f} us): top_k {} -> {}",
        quality_text, params.quality_budget, snapshot.steps_in_epoch, step_us, raise_below_us,
        params.headroom, params.slo_us, k, k + 1);
    return proposal;
  }
  // Inside the budgets, at a bound, or latency and quality both over budget
  // (a conflict that changing K by one cannot settle).
  return std::nullopt;
}

}  // namespace moe::policies
