#include "moe/policies/guard.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace moe::policies {
namespace {

constexpr int64_t kNanosPerMilli = 1'000'000;

Verdict Reject(std::string reason) {
  return {VerdictKind::kRejected, 0, std::move(reason)};
}

const KnobLimits* LimitsFor(const std::string& knob, const GuardParams& params) {
  if (knob == "capacity_factor") return &params.capacity_factor;
  if (knob == "top_k") return &params.top_k;
  return nullptr;
}

Status ValidateLimits(std::string_view name, const KnobLimits& l) {
  if (!(l.min <= l.max) || !(l.max_change > 0)) {
    return Status::InvalidArgument(
        fmt::format("guard.{}: need min <= max and max_change > 0, got min={} max={} max_change={}",
                    name, l.min, l.max, l.max_change));
  }
  return Status::Ok();
}

}  // namespace

std::string_view VerdictName(VerdictKind kind) {
  switch (kind) {
    case VerdictKind::kAccepted:
      return "accepted";
    case VerdictKind::kClamped:
      return "clamped";
    case VerdictKind::kRejected:
      return "rejected";
  }
  return "rejected";
}

Status Validate(const GuardParams& p) {
  MOE_RETURN_IF_ERROR(ValidateLimits("capacity_factor", p.capacity_factor));
  MOE_RETURN_IF_ERROR(ValidateLimits("top_k", p.top_k));
  if (p.cooldown_ms < 0 || p.stale_after_ms <= 0 || p.hysteresis < 0 || p.rollback_threshold < 0 ||
      p.rollback_min_delta < 0) {
    return Status::InvalidArgument(
        "guard: cooldown_ms, hysteresis, rollback_threshold must be >= 0 and stale_after_ms > 0");
  }
  return Status::Ok();
}

Verdict Judge(const Proposal& proposal, const EngineSnapshot& snapshot, const GuardParams& params,
              GuardState* state) {
  const KnobLimits* limits = LimitsFor(proposal.knob, params);
  if (limits == nullptr) return Reject(fmt::format("unknown knob '{}'", proposal.knob));
  int64_t silence_ms = (snapshot.now_ns - snapshot.last_telemetry_ns) / kNanosPerMilli;
  if (silence_ms > params.stale_after_ms) {
    return Reject(fmt::format("frozen: telemetry is stale ({} ms old, limit {} ms)", silence_ms,
                              params.stale_after_ms));
  }
  if (snapshot.steps_in_epoch < params.min_steps_in_epoch) {
    return Reject(fmt::format("frozen: only {} steps under epoch {} (need {})",
                              snapshot.steps_in_epoch, snapshot.epoch, params.min_steps_in_epoch));
  }
  auto last = state->last_change_ns.find(proposal.knob);
  if (last != state->last_change_ns.end()) {
    int64_t since_ms = (snapshot.now_ns - last->second) / kNanosPerMilli;
    if (since_ms < params.cooldown_ms) {
      return Reject(fmt::format("cooldown: {} changed {} ms ago (cooldown {} ms)", proposal.knob,
                                since_ms, params.cooldown_ms));
    }
  }
  double wanted = proposal.value;
  double value = std::clamp(wanted, limits->min, limits->max);
  value = std::clamp(value, proposal.current - limits->max_change,
                     proposal.current + limits->max_change);
  if (proposal.knob == "top_k") value = std::round(value);
  if (std::abs(value - proposal.current) < std::max(params.hysteresis, 1e-12)) {
    return Reject(fmt::format("hysteresis: change {} -> {} is below {} (bounds [{}, {}])",
                              proposal.current, value, params.hysteresis, limits->min,
                              limits->max));
  }
  state->last_change_ns[proposal.knob] = snapshot.now_ns;
  if (value != wanted) {
    return {VerdictKind::kClamped, value,
            fmt::format("clamped {} -> {} (bounds [{}, {}], max change {})", wanted, value,
                        limits->min, limits->max, limits->max_change)};
  }
  return {VerdictKind::kAccepted, value, "within bounds"};
}

bool ShouldRollBack(double reward_before, double reward_after, const GuardParams& params) {
  double margin =
      std::max(params.rollback_threshold * std::abs(reward_before), params.rollback_min_delta);
  return reward_after < reward_before - margin;
}

}  // namespace moe::policies
