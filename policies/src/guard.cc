#include "moe/policies/guard.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

namespace moe::policies {
namespace {

constexpr int64_t kNanosPerMilli = 1'000'000;

Verdict Reject(std::string reason) {
  Verdict verdict;
  verdict.reason = std::move(reason);
  return verdict;
}

Status ValidateLimits(std::string_view name, const KnobLimits& l) {
  if (!(l.min <= l.max) || !(l.max_change > 0) || !(l.min_change <= l.max_change)) {
    return Status::InvalidArgument(
        fmt::format("guard.{}: need min <= max, max_change > 0 and min_change <= max_change, got "
                    "min={} max={} max_change={} min_change={}",
                    name, l.min, l.max, l.max_change, l.min_change));
  }
  return Status::Ok();
}

// A vector knob: every element clamped to the bounds and to max_change around
// the element in force.
Verdict JudgeVector(const Proposal& proposal, const EngineSnapshot& snapshot,
                    const KnobLimits& limits, double min_change, GuardState* state) {
  if (proposal.vectors.size() != proposal.current_vectors.size()) {
    return Reject(fmt::format("{}: {} layers proposed, {} in force", proposal.knob,
                              proposal.vectors.size(), proposal.current_vectors.size()));
  }
  Verdict verdict;
  verdict.vectors = proposal.vectors;
  double largest_change = 0;
  double largest = 0;
  size_t clamped = 0;
  for (size_t l = 0; l < proposal.vectors.size(); ++l) {
    const std::vector<float>& now = proposal.current_vectors[l];
    std::vector<float>& next = verdict.vectors[l];
    if (!now.empty() && now.size() != next.size()) {
      return Reject(fmt::format("{}: layer {} has {} elements, {} in force", proposal.knob, l,
                                next.size(), now.size()));
    }
    for (size_t i = 0; i < next.size(); ++i) {
      const double current = now.empty() ? 0.0 : now[i];
      double value = std::clamp<double>(next[i], limits.min, limits.max);
      value = std::clamp(value, current - limits.max_change, current + limits.max_change);
      if (static_cast<float>(value) != next[i]) ++clamped;
      next[i] = static_cast<float>(value);
      largest_change = std::max(largest_change, std::abs(value - current));
      largest = std::max(largest, std::abs(value));
    }
  }
  if (largest_change < min_change) {
    return Reject(fmt::format("hysteresis: largest {} change {:.6f} is below {}", proposal.knob,
                              largest_change, min_change));
  }
  state->last_change_ns[proposal.knob] = snapshot.now_ns;
  verdict.value = largest;
  if (clamped > 0) {
    verdict.kind = VerdictKind::kClamped;
    verdict.reason = fmt::format("clamped {} elements (bounds [{}, {}], max change {})", clamped,
                                 limits.min, limits.max, limits.max_change);
  } else {
    verdict.kind = VerdictKind::kAccepted;
    verdict.reason = "within bounds";
  }
  return verdict;
}

}  // namespace

const KnobLimits* LimitsFor(const std::string& knob, const GuardParams& params) {
  const KnobSpec* spec = FindKnob(knob);
  if (spec == nullptr || spec->limits == nullptr) return nullptr;
  return &(params.*spec->limits);
}

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
  for (const KnobSpec& spec : AllKnobs()) {
    if (spec.limits == nullptr) continue;
    const KnobLimits& l = p.*spec.limits;
    MOE_RETURN_IF_ERROR(ValidateLimits(spec.name, l));
    const double last = static_cast<double>(spec.enum_names.size()) - 1;
    if (spec.kind == KnobKind::kEnum && (l.min < 0 || l.max > last)) {
      return Status::InvalidArgument(
          fmt::format("guard.{}: min and max are wire values of {} in [0, {}], got min={} max={}",
                      spec.name, fmt::join(spec.enum_names, ", "), last, l.min, l.max));
    }
  }
  if (p.max_slot_moves < 1 || p.placement_cooldown_ms < 0) {
    return Status::InvalidArgument(
        "guard: max_slot_moves must be >= 1 and placement_cooldown >= 0");
  }
  if (!(p.urgent_drop_rate >= 0 && p.urgent_drop_rate <= 1)) {
    return Status::InvalidArgument(
        fmt::format("guard: urgent_drop_rate must be in [0, 1], got {}", p.urgent_drop_rate));
  }
  if (p.cooldown_ms < 0 || p.stale_after_ms <= 0 || p.hysteresis < 0 || p.rollback_threshold < 0 ||
      p.rollback_min_delta < 0) {
    return Status::InvalidArgument(
        "guard: cooldown_ms, hysteresis, rollback_threshold must be >= 0 and stale_after_ms > 0");
  }
  return Status::Ok();
}

namespace {

// A placement: valid per layer, within the migration budget, not a no-op.
Verdict JudgePlacement(const Proposal& proposal, const EngineSnapshot& snapshot,
                       const GuardParams& params, GuardState* state) {
  if (proposal.placements.size() != proposal.current_placements.size()) {
    return Reject(fmt::format("phy2log: {} layers proposed, {} in force",
                              proposal.placements.size(), proposal.current_placements.size()));
  }
  int total_moved = 0;
  for (size_t l = 0; l < proposal.placements.size(); ++l) {
    const std::vector<uint32_t>& next = proposal.placements[l];
    const std::vector<uint32_t>& now = proposal.current_placements[l];
    if (next.size() != snapshot.num_replicas || now.size() != next.size()) {
      return Reject(fmt::format("phy2log: layer {} has {} slots, the engine {}", l, next.size(),
                                snapshot.num_replicas));
    }
    std::vector<char> present(snapshot.num_experts, 0);
    int moved = 0;
    for (size_t s = 0; s < next.size(); ++s) {
      if (next[s] >= snapshot.num_experts) {
        return Reject(fmt::format("phy2log: layer {} slot {} holds expert {}, the engine has {}", l,
                                  s, next[s], snapshot.num_experts));
      }
      present[next[s]] = 1;
      moved += next[s] != now[s] ? 1 : 0;
    }
    const auto missing = std::find(present.begin(), present.end(), 0);
    if (missing != present.end()) {
      return Reject(fmt::format("phy2log: layer {} leaves expert {} without a replica", l,
                                missing - present.begin()));
    }
    if (moved > params.max_slot_moves) {
      return Reject(fmt::format("phy2log: layer {} changes {} slots, the budget is {}", l, moved,
                                params.max_slot_moves));
    }
    total_moved += moved;
  }
  if (total_moved == 0) return Reject("hysteresis: the placement does not change");
  state->last_change_ns[proposal.knob] = snapshot.now_ns;
  Verdict verdict;
  verdict.kind = VerdictKind::kAccepted;
  verdict.value = proposal.value;
  verdict.placements = proposal.placements;
  verdict.reason =
      fmt::format("{} slots change (budget {} per layer)", total_moved, params.max_slot_moves);
  return verdict;
}

}  // namespace

Verdict Judge(const Proposal& proposal, const EngineSnapshot& snapshot, const GuardParams& params,
              GuardState* state) {
  const bool placement = IsPlacementKnob(proposal.knob);
  const KnobLimits* limits = LimitsFor(proposal.knob, params);
  if (limits == nullptr && !placement) {
    return Reject(fmt::format("unknown knob '{}'", proposal.knob));
  }
  int64_t silence_ms = (snapshot.now_ns - snapshot.last_telemetry_ns) / kNanosPerMilli;
  if (silence_ms > params.stale_after_ms) {
    return Reject(fmt::format("frozen: telemetry is stale ({} ms old, limit {} ms)", silence_ms,
                              params.stale_after_ms));
  }
  if (snapshot.steps_in_epoch < params.min_steps_in_epoch) {
    return Reject(fmt::format("frozen: only {} steps under epoch {} (need {})",
                              snapshot.steps_in_epoch, snapshot.epoch, params.min_steps_in_epoch));
  }
  // capacity_factor 0 is unlimited: the largest capacity, outside the bounds.
  const bool capacity = proposal.knob == knob::kCapacityFactor;
  const bool capacity_raise = capacity && proposal.current != 0 &&
                              (proposal.value == 0 || proposal.value > proposal.current);
  const bool urgent = capacity_raise && params.urgent_drop_rate > 0 &&
                      snapshot.drop_rate >= params.urgent_drop_rate;
  if (!urgent && CooldownLeftMs(proposal.knob, snapshot.now_ns, params, *state) > 0) {
    const int64_t cooldown_ms =
        placement ? std::max(params.cooldown_ms, params.placement_cooldown_ms) : params.cooldown_ms;
    const int64_t since_ms =
        (snapshot.now_ns - state->last_change_ns.at(proposal.knob)) / kNanosPerMilli;
    return Reject(fmt::format("cooldown: {} changed {} ms ago (cooldown {} ms)", proposal.knob,
                              since_ms, cooldown_ms));
  }
  if (placement) return JudgePlacement(proposal, snapshot, params, state);
  const double min_change =
      limits->min_change >= 0 ? limits->min_change : std::max(params.hysteresis, 1e-12);
  if (IsVectorKnob(proposal.knob))
    return JudgeVector(proposal, snapshot, *limits, min_change, state);
  double wanted = proposal.value;
  if (capacity && wanted == 0) {
    if (!params.unlimited_capacity) {
      return Reject(
          "capacity_factor 0 (unlimited) is not allowed ([guard.capacity_factor] unlimited = "
          "false)");
    }
    if (proposal.current == 0) return Reject("hysteresis: capacity is unlimited already");
    state->last_change_ns[proposal.knob] = snapshot.now_ns;
    Verdict accepted;
    accepted.kind = VerdictKind::kAccepted;
    accepted.value = 0;
    accepted.reason = "unlimited capacity (dropless), allowed by [guard.capacity_factor] unlimited";
    return accepted;
  }
  double value = std::clamp(wanted, limits->min, limits->max);
  // From unlimited capacity any value within the bounds is one step down.
  if (!(capacity && proposal.current == 0)) {
    value = std::clamp(value, proposal.current - limits->max_change,
                       proposal.current + limits->max_change);
  }
  if (FindKnob(proposal.knob)->whole()) value = std::round(value);
  if (std::abs(value - proposal.current) < min_change) {
    return Reject(fmt::format("hysteresis: change {} -> {} is below {} (bounds [{}, {}])",
                              proposal.current, value, min_change, limits->min, limits->max));
  }
  state->last_change_ns[proposal.knob] = snapshot.now_ns;
  if (value != wanted) {
    Verdict clamped;
    clamped.kind = VerdictKind::kClamped;
    clamped.value = value;
    clamped.reason = fmt::format("clamped {} -> {} (bounds [{}, {}], max change {})", wanted, value,
                                 limits->min, limits->max, limits->max_change);
    return clamped;
  }
  Verdict accepted;
  accepted.kind = VerdictKind::kAccepted;
  accepted.value = value;
  accepted.reason = "within bounds";
  return accepted;
}

int64_t CooldownLeftMs(const std::string& knob, int64_t now_ns, const GuardParams& params,
                       const GuardState& state) {
  const int64_t cooldown_ms = IsPlacementKnob(knob)
                                  ? std::max(params.cooldown_ms, params.placement_cooldown_ms)
                                  : params.cooldown_ms;
  auto last = state.last_change_ns.find(knob);
  if (last == state.last_change_ns.end()) return 0;
  const int64_t since_ms = (now_ns - last->second) / kNanosPerMilli;
  return since_ms < cooldown_ms ? cooldown_ms - since_ms : 0;
}

bool ShouldRollBack(double reward_before, double reward_after, const GuardParams& params) {
  double margin =
      std::max(params.rollback_threshold * std::abs(reward_before), params.rollback_min_delta);
  return reward_after < reward_before - margin;
}

}  // namespace moe::policies
