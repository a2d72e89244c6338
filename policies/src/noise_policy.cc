#include "moe/policies/noise_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <string>

namespace moe::policies {
namespace {

double Round4(double v) {
  return std::round(v * 1e4) / 1e4;
}

}  // namespace

Status Validate(const NoisePolicyParams& p) {
  if (!(p.imbalance_low > 0 && p.imbalance_low < p.imbalance_high)) {
    return Status::InvalidArgument(
        fmt::format("noise policy: need 0 < imbalance_low < imbalance_high, got imbalance_low={} "
                    "imbalance_high={}",
                    p.imbalance_low, p.imbalance_high));
  }
  if (!(p.quality_budget > 0)) {
    return Status::InvalidArgument(
        fmt::format("noise policy: quality_budget must be > 0, got {}", p.quality_budget));
  }
  if (!(p.step > 0)) {
    return Status::InvalidArgument(fmt::format("noise policy: step must be > 0, got {}", p.step));
  }
  if (!(p.max_noise > 0)) {
    return Status::InvalidArgument(
        fmt::format("noise policy: max_noise must be > 0, got {}", p.max_noise));
  }
  return Status::Ok();
}

std::optional<Proposal> ProposeNoise(const EngineSnapshot& snapshot,
                                     const NoisePolicyParams& params) {
  if (snapshot.steps_in_epoch < params.min_steps) return std::nullopt;
  double noise = snapshot.knobs.noise_std;
  double imbalance = snapshot.max_over_mean;
  const std::optional<double>& quality = snapshot.quality_error;
  bool quality_over = quality && *quality > params.quality_budget;
  std::string quality_text = quality ? fmt::format("{:.4f}", *quality) : std::string("unknown");

  Proposal proposal;
  proposal.policy = "noise";
  proposal.knob = knob::kNoiseStd;
  proposal.current = noise;
  double lowered = std::max(0.0, Round4(noise - params.step));
  bool up = false;
  if (quality_over && noise > 0) {
    proposal.value = lowered;
    proposal.reason =
        fmt::format("quality over budget: quality error {} > {} over {} steps: noise_std {} -> {}",
                    quality_text, params.quality_budget, snapshot.steps_in_epoch, noise, lowered);
  } else if (imbalance > params.imbalance_high && noise < params.max_noise && !quality_over) {
    // Rounding may overshoot a cap that is off the 1e-4 grid; the cap wins.
    double raised = std::min(params.max_noise, Round4(noise + params.step));
    proposal.value = raised;
    up = true;
    proposal.reason = fmt::format(
        "load imbalance: max/mean {:.3f} > {} over {} steps, quality error {} within budget {}: "
        "noise_std {} -> {}",
        imbalance, params.imbalance_high, snapshot.steps_in_epoch, quality_text,
        params.quality_budget, noise, raised);
  } else if (imbalance < params.imbalance_low && noise > 0) {
    proposal.value = lowered;
    proposal.reason =
        fmt::format("balanced without it: max/mean {:.3f} < {} over {} steps: noise_std {} -> {}",
                    imbalance, params.imbalance_low, snapshot.steps_in_epoch, noise, lowered);
  } else {
    return std::nullopt;
  }
  // Never a no-op, nor (rounding an off-grid value by a tiny step) a move
  // against the rule's direction.
  if (up ? !(proposal.value > noise) : !(proposal.value < noise)) return std::nullopt;
  return proposal;
}

}  // namespace moe::policies
