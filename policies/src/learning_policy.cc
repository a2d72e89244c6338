#include "moe/policies/learning_policy.h"

#include <fmt/format.h>

#include <cassert>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

namespace moe::policies {
namespace {

bool IsKnownKnob(const std::string& name) {
  return name == knob::kCapacityFactor || name == knob::kTopK || name == knob::kNoiseStd;
}

// Number of edges <= value: NaN compares false everywhere, so it lands in 0.
size_t Bucket(double value, const std::vector<double>& edges) {
  size_t bucket = 0;
  for (double edge : edges) {
    if (edge <= value) ++bucket;
  }
  return bucket;
}

Status ValidateEdges(const std::vector<double>& edges, const char* field) {
  for (size_t i = 0; i < edges.size(); ++i) {
    if (!std::isfinite(edges[i])) {
      return Status::InvalidArgument(
          fmt::format("learning policy: {}[{}] must be finite, got {}", field, i, edges[i]));
    }
    if (i > 0 && !(edges[i] > edges[i - 1])) {
      return Status::InvalidArgument(
          fmt::format("learning policy: {} must be strictly increasing, got {} after {}", field,
                      edges[i], edges[i - 1]));
    }
  }
  return Status::Ok();
}

// True when arm `a` is nearer to arm `current` than arm `b` is; at equal
// distance the higher value wins.
bool Nearer(size_t a, size_t b, size_t current, const std::vector<double>& values) {
  double da = std::fabs(values[a] - values[current]);
  double db = std::fabs(values[b] - values[current]);
  if (da != db) return da < db;
  return values[a] > values[b];
}

std::string ArmText(const ArmStats& s) {
  return fmt::format("mean {:.3f} over {}", s.Mean(), s.samples);
}

Proposal MakeProposal(const LearningPolicyParams& params, double in_force, double value,
                      std::string reason) {
  Proposal proposal;
  proposal.policy = "learning";
  proposal.knob = params.knob;
  proposal.layer = -1;
  proposal.current = in_force;
  proposal.value = value;
  proposal.reason = std::move(reason);
  return proposal;
}

// True when `value` is one of the arms.
bool IsArm(double value, const LearningPolicyParams& params) {
  for (double arm : params.values) {
    if (ValueKey(arm) == ValueKey(value)) return true;
  }
  return false;
}

// Samples per value of one regime, e.g. "1: 2 samples".
uint64_t SamplesAt(const LearningState& state, double value) {
  uint64_t n = 0;
  for (const auto& [regime, values] : state.regimes) {
    auto it = values.find(ValueKey(value));
    if (it != values.end()) n += it->second.samples;
  }
  return n;
}

}  // namespace

double ValueKey(double value) {
  return std::round(value * 1e6) / 1e6;
}

std::vector<ArmStats> ArmStatsOf(const std::string& regime, const LearningPolicyParams& params,
                                 const LearningState& state) {
  std::vector<ArmStats> stats(params.values.size());
  auto it = state.regimes.find(regime);
  if (it == state.regimes.end()) return stats;
  for (size_t a = 0; a < stats.size(); ++a) {
    auto at = it->second.find(ValueKey(params.values[a]));
    if (at != it->second.end()) stats[a] = at->second;
  }
  return stats;
}

double ArmStats::Mean() const {
  return samples == 0 ? 0.0 : reward_sum / static_cast<double>(samples);
}

Status Validate(const LearningPolicyParams& p) {
  if (!IsKnownKnob(p.knob)) {
    return Status::InvalidArgument(fmt::format(
        "learning policy: knob must be capacity_factor, top_k or noise_std, got '{}'", p.knob));
  }
  if (p.values.size() < 2) {
    return Status::InvalidArgument(
        fmt::format("learning policy: values needs at least 2 entries, got {}", p.values.size()));
  }
  for (size_t i = 0; i < p.values.size(); ++i) {
    double v = p.values[i];
    if (!std::isfinite(v)) {
      return Status::InvalidArgument(
          fmt::format("learning policy: values[{}] must be finite, got {}", i, v));
    }
    if (i > 0 && !(v > p.values[i - 1])) {
      return Status::InvalidArgument(
          fmt::format("learning policy: values must be strictly increasing, got {} after {}", v,
                      p.values[i - 1]));
    }
    if (p.knob == knob::kCapacityFactor && !(v > 0)) {
      return Status::InvalidArgument(
          fmt::format("learning policy: values[{}] must be > 0 for capacity_factor, got {}", i, v));
    }
    if (p.knob == knob::kNoiseStd && !(v >= 0)) {
      return Status::InvalidArgument(
          fmt::format("learning policy: values[{}] must be >= 0 for noise_std, got {}", i, v));
    }
    if (p.knob == knob::kTopK && !(v >= 1 && v == std::floor(v))) {
      return Status::InvalidArgument(fmt::format(
          "learning policy: values[{}] must be a whole number >= 1 for top_k, got {}", i, v));
    }
  }
  MOE_RETURN_IF_ERROR(ValidateEdges(p.imbalance_edges, "imbalance_edges"));
  MOE_RETURN_IF_ERROR(ValidateEdges(p.tokens_edges, "tokens_edges"));
  if (!(p.exploration >= 0 && std::isfinite(p.exploration))) {
    return Status::InvalidArgument(
        fmt::format("learning policy: exploration must be >= 0, got {}", p.exploration));
  }
  if (p.min_samples < 1) {
    return Status::InvalidArgument(
        fmt::format("learning policy: min_samples must be >= 1, got {}", p.min_samples));
  }
  if (!(p.min_gain >= 0 && std::isfinite(p.min_gain))) {
    return Status::InvalidArgument(
        fmt::format("learning policy: min_gain must be >= 0, got {}", p.min_gain));
  }
  return Status::Ok();
}

double DemandImbalance(const EngineSnapshot& snapshot) {
  return snapshot.demand_max_over_mean.value_or(snapshot.max_over_mean);
}

std::string RegimeOf(const EngineSnapshot& snapshot, const LearningPolicyParams& params) {
  return fmt::format(
      "imbalance {} of {}, tokens {} of {}",
      Bucket(DemandImbalance(snapshot), params.imbalance_edges), params.imbalance_edges.size() + 1,
      Bucket(snapshot.tokens_per_step, params.tokens_edges), params.tokens_edges.size() + 1);
}

double KnobInForce(const EngineSnapshot& snapshot, const LearningPolicyParams& params) {
  const KnobSpec* spec = FindKnob(params.knob);
  if (!IsKnownKnob(params.knob) || spec == nullptr || !spec->scalar()) {
    return std::numeric_limits<double>::quiet_NaN();
  }
  return spec->value(snapshot.knobs);
}

size_t NearestArm(double value, const LearningPolicyParams& params) {
  assert(!params.values.empty());
  size_t best = 0;
  double best_distance = std::fabs(params.values[0] - value);
  for (size_t a = 1; a < params.values.size(); ++a) {
    double distance = std::fabs(params.values[a] - value);
    if (distance < best_distance) {  // strict: a tie keeps the lower arm
      best = a;
      best_distance = distance;
    }
  }
  return best;
}

void Learn(const std::string& regime, double knob_value, double reward,
           const LearningPolicyParams& params, LearningState* state) {
  (void)params;
  assert(state != nullptr);
  if (!std::isfinite(knob_value) || !std::isfinite(reward)) return;
  ArmStats& at = state->regimes[regime][ValueKey(knob_value)];
  ++at.samples;
  at.reward_sum += reward;
  ++state->samples;
}

std::string ArmsChange(const LearningPolicyParams& before, const LearningPolicyParams& after,
                       const LearningState& state) {
  if (before.knob != after.knob) {
    return fmt::format("learning: knob changed from {} to {}: statistics reset", before.knob,
                       after.knob);
  }
  if (before.values == after.values) return "";
  std::vector<std::string> arms;
  for (double v : after.values) {
    uint64_t n = SamplesAt(state, v);
    arms.push_back(n == 0 ? fmt::format("{}: new", v) : fmt::format("{}: {} samples", v, n));
  }
  std::vector<std::string> dropped;
  for (double v : before.values) {
    if (IsArm(v, after)) continue;
    dropped.push_back(fmt::format("{} ({} samples, kept)", v, SamplesAt(state, v)));
  }
  return fmt::format(
      "learning: arms changed from [{}] to [{}]; statistics follow their values: {}{}",
      fmt::join(before.values, ", "), fmt::join(after.values, ", "), fmt::join(arms, ", "),
      dropped.empty() ? std::string()
                      : fmt::format("; no longer arms: {}", fmt::join(dropped, ", ")));
}

std::optional<Proposal> ProposeLearning(const EngineSnapshot& snapshot,
                                        const LearningPolicyParams& params,
                                        const LearningState& state) {
  if (snapshot.steps_in_epoch < params.min_steps) return std::nullopt;
  if (params.values.empty()) return std::nullopt;
  double in_force = KnobInForce(snapshot, params);
  if (!std::isfinite(in_force)) return std::nullopt;
  if (params.knob == knob::kCapacityFactor && in_force == 0) return std::nullopt;

  const std::vector<double>& values = params.values;
  std::string regime = RegimeOf(snapshot, params);
  std::vector<ArmStats> stats = ArmStatsOf(regime, params, state);
  size_t current = NearestArm(in_force, params);
  // Off an arm (a clamped move), moving onto the nearest arm measures an arm.
  const bool on_arm = IsArm(in_force, params);

  // Explore: the unexplored arm nearest the current one.
  std::optional<size_t> unexplored;
  size_t num_known = 0;
  for (size_t a = 0; a < values.size(); ++a) {
    if (stats[a].samples >= params.min_samples) {
      ++num_known;
    } else if (!unexplored || Nearer(a, *unexplored, current, values)) {
      unexplored = a;
    }
  }
  if (unexplored) {
    size_t arm = *unexplored;
    // The current arm is being measured now; its epoch's outcome comes first.
    if (ValueKey(values[arm]) == ValueKey(in_force)) return std::nullopt;
    return MakeProposal(
        params, in_force, values[arm],
        fmt::format("regime {}: explore {} {} ({} of {} samples; {} of {} arms "
                    "known) from {} ({})",
                    regime, params.knob, values[arm], stats[arm].samples, params.min_samples,
                    num_known, values.size(), values[current], ArmText(stats[current])));
  }

  // Exploit: UCB1 over the regime's arms, all with samples >= min_samples >= 1.
  uint64_t total = 0;
  for (const ArmStats& s : stats)
    total += s.samples;
  double log_total = std::log(static_cast<double>(total));
  std::vector<double> score(values.size());
  for (size_t a = 0; a < values.size(); ++a) {
    score[a] = stats[a].Mean() +
               params.exploration * std::sqrt(log_total / static_cast<double>(stats[a].samples));
  }
  size_t best = current;
  for (size_t a = 0; a < values.size(); ++a) {
    if (score[a] > score[best] || (score[a] == score[best] && Nearer(a, best, current, values))) {
      best = a;
    }
  }
  if (ValueKey(values[best]) == ValueKey(in_force)) return std::nullopt;
  double gain = score[best] - score[current];
  if (on_arm && !(gain >= params.min_gain)) return std::nullopt;
  return MakeProposal(
      params, in_force, values[best],
      fmt::format("regime {}: exploit {} {} (mean reward {:.3f} over {} samples) over {} ({}); "
                  "upper confidence {:.3f} vs {:.3f} (exploration {}, {} samples in regime)",
                  regime, params.knob, values[best], stats[best].Mean(), stats[best].samples,
                  values[current], ArmText(stats[current]), score[best], score[current],
                  params.exploration, total));
}

}  // namespace moe::policies
