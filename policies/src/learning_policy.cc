#include "moe/policies/learning_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "moe/policies/counterfactual_policy.h"

namespace moe::policies {
namespace {

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

// Each knob's spread of values over the arms (1 where they all agree): the
// unit of that knob in NearestArm's distance.
std::vector<double> Spreads(const LearningPolicyParams& params) {
  std::vector<double> spread(params.knobs.size(), 1.0);
  for (size_t k = 0; k < params.knobs.size(); ++k) {
    double lo = std::numeric_limits<double>::infinity();
    double hi = -lo;
    for (const Setting& arm : params.arms) {
      if (k >= arm.size()) continue;
      lo = std::min(lo, arm[k]);
      hi = std::max(hi, arm[k]);
    }
    if (hi > lo) spread[k] = hi - lo;
  }
  return spread;
}

double Distance(const Setting& a, const Setting& b, const std::vector<double>& spread) {
  double d = 0;
  for (size_t k = 0; k < spread.size(); ++k) {
    const double x = k < a.size() ? a[k] : std::numeric_limits<double>::quiet_NaN();
    const double y = k < b.size() ? b[k] : std::numeric_limits<double>::quiet_NaN();
    const double dk = std::fabs(x - y) / spread[k];
    d += std::isnan(dk) ? std::numeric_limits<double>::max() / 16 : dk;
  }
  return d;
}

// The arms' geometry, computed once per call.
struct Arms {
  const LearningPolicyParams& params;
  std::vector<double> spread = Spreads(params);

  double DistanceTo(size_t a, size_t b) const {
    return Distance(params.arms[a], params.arms[b], spread);
  }
  // True when arm `a` is nearer to arm `current` than arm `b` is; at equal
  // distance the higher setting wins.
  bool Nearer(size_t a, size_t b, size_t current) const {
    const double da = DistanceTo(a, current);
    const double db = DistanceTo(b, current);
    if (da != db) return da < db;
    return params.arms[a] > params.arms[b];
  }
};

std::string ArmText(const ArmStats& s) {
  return fmt::format("mean {:.3f} over {}", s.Mean(), s.samples);
}

// The arm's setting for a reason: its values alone for one knob ("1.5"),
// the knobs named for more ("capacity_factor 2, top_k 6").
std::string ArmName(const LearningPolicyParams& params, const Setting& setting) {
  if (params.knobs.size() == 1 && setting.size() == 1) {
    return fmt::format("{}", setting[0]);
  }
  return SettingText(params.knobs, setting);
}

// A setting in a list: "1.5" for one knob, "(2, 6)" for more.
std::string ListText(const Setting& setting) {
  if (setting.size() == 1) return fmt::format("{}", setting[0]);
  return fmt::format("({})", fmt::join(setting, ", "));
}

std::string ListText(const std::vector<Setting>& settings) {
  std::vector<std::string> parts;
  for (const Setting& s : settings)
    parts.push_back(ListText(s));
  return fmt::format("[{}]", fmt::join(parts, ", "));
}

// The proposal that moves `in_force` to `target`: the first differing knob,
// the others as companions. Nothing when no knob differs.
std::optional<Proposal> MakeProposal(const LearningPolicyParams& params, const Setting& in_force,
                                     const Setting& target, const std::string& reason) {
  std::optional<Proposal> proposal;
  for (size_t k = 0; k < params.knobs.size(); ++k) {
    if (ValueKey(target[k]) == ValueKey(in_force[k])) continue;
    Proposal p;
    p.policy = "learning";
    p.knob = params.knobs[k];
    p.layer = -1;
    p.current = in_force[k];
    p.value = target[k];
    p.reason = reason;
    if (!proposal) {
      proposal = std::move(p);
    } else {
      proposal->companions.push_back(std::move(p));
    }
  }
  return proposal;
}

// True when `setting` is one of the arms.
bool IsArm(const Setting& setting, const LearningPolicyParams& params) {
  const Setting key = SettingKey(setting);
  for (const Setting& arm : params.arms) {
    if (SettingKey(arm) == key) return true;
  }
  return false;
}

// Samples of one setting over every regime.
uint64_t SamplesAt(const LearningState& state, const Setting& setting) {
  uint64_t n = 0;
  const Setting key = SettingKey(setting);
  for (const auto& [regime, settings] : state.regimes) {
    auto it = settings.find(key);
    if (it != settings.end()) n += it->second.samples;
  }
  return n;
}

Status ValidateArm(const LearningPolicyParams& p, size_t i) {
  const Setting& arm = p.arms[i];
  if (arm.size() != p.knobs.size()) {
    return Status::InvalidArgument(
        fmt::format("learning policy: arms[{}] has {} values for {} knobs ({})", i, arm.size(),
                    p.knobs.size(), KnobsName(p.knobs)));
  }
  for (size_t k = 0; k < arm.size(); ++k) {
    const double v = arm[k];
    const std::string& name = p.knobs[k];
    const KnobSpec* spec = FindKnob(name);
    auto bad = [&](std::string_view rule) {
      return Status::InvalidArgument(fmt::format(
          "learning policy: values[{}]{} must be {} for {}, got {}", i,
          p.knobs.size() == 1 ? std::string() : fmt::format(" ({})", name), rule, name, v));
    };
    if (!std::isfinite(v)) return bad("finite");
    if (name == knob::kCapacityFactor && !(v > 0)) return bad("> 0");
    if (!(v >= 0)) return bad(">= 0");
    if (spec != nullptr && spec->whole() && v != std::floor(v)) return bad("a whole number");
    if (name == knob::kTopK && !(v >= 1)) return bad("a whole number >= 1");
  }
  return Status::Ok();
}

}  // namespace

double ValueKey(double value) {
  return std::round(value * 1e6) / 1e6;
}

Setting SettingKey(const Setting& setting) {
  Setting key(setting.size());
  for (size_t k = 0; k < setting.size(); ++k)
    key[k] = ValueKey(setting[k]);
  return key;
}

bool LearnableKnob(std::string_view name) {
  const KnobSpec* spec = FindKnob(name);
  return spec != nullptr && spec->limits != nullptr &&
         (spec->kind == KnobKind::kInteger || spec->kind == KnobKind::kReal);
}

std::vector<Setting> GridOf(const std::vector<std::vector<double>>& values_per_knob) {
  std::vector<Setting> grid = {Setting{}};
  for (const std::vector<double>& values : values_per_knob) {
    std::vector<Setting> next;
    next.reserve(grid.size() * values.size());
    for (const Setting& prefix : grid) {
      for (double v : values) {
        Setting s = prefix;
        s.push_back(v);
        next.push_back(std::move(s));
      }
    }
    grid = std::move(next);
  }
  if (values_per_knob.empty()) grid.clear();
  return grid;
}

std::string KnobsName(const std::vector<std::string>& knobs) {
  return fmt::format("{}", fmt::join(knobs, ","));
}

std::string SettingText(const std::vector<std::string>& knobs, const Setting& setting) {
  std::vector<std::string> parts;
  for (size_t k = 0; k < knobs.size() && k < setting.size(); ++k) {
    const KnobSpec* spec = FindKnob(knobs[k]);
    parts.push_back(fmt::format("{} {}", knobs[k],
                                spec != nullptr && spec->scalar() ? spec->Format(setting[k])
                                                                  : fmt::format("{}", setting[k])));
  }
  return fmt::format("{}", fmt::join(parts, ", "));
}

std::vector<ArmStats> ArmStatsOf(const std::string& regime, const LearningPolicyParams& params,
                                 const LearningState& state) {
  std::vector<ArmStats> stats(params.arms.size());
  auto it = state.regimes.find(regime);
  if (it == state.regimes.end()) return stats;
  for (size_t a = 0; a < stats.size(); ++a) {
    auto at = it->second.find(SettingKey(params.arms[a]));
    if (at != it->second.end()) stats[a] = at->second;
  }
  return stats;
}

double ArmStats::Mean() const {
  return samples == 0 ? 0.0 : reward_sum / static_cast<double>(samples);
}

Status Validate(const LearningPolicyParams& p) {
  if (p.knobs.empty()) {
    return Status::InvalidArgument("learning policy: knob: name at least one knob to learn");
  }
  for (size_t k = 0; k < p.knobs.size(); ++k) {
    if (!LearnableKnob(p.knobs[k])) {
      return Status::InvalidArgument(
          fmt::format("learning policy: knob '{}' cannot be learnt; use one of {}", p.knobs[k],
                      KnobNames([](const KnobSpec& s) { return LearnableKnob(s.name); })));
    }
    for (size_t j = 0; j < k; ++j) {
      if (p.knobs[j] == p.knobs[k]) {
        return Status::InvalidArgument(
            fmt::format("learning policy: knob '{}' is named twice", p.knobs[k]));
      }
    }
  }
  if (p.arms.size() < 2) {
    return Status::InvalidArgument(
        fmt::format("learning policy: values needs at least 2 settings, got {}", p.arms.size()));
  }
  for (size_t i = 0; i < p.arms.size(); ++i) {
    MOE_RETURN_IF_ERROR(ValidateArm(p, i));
    if (i > 0 && p.knobs.size() == 1 && !(p.arms[i][0] > p.arms[i - 1][0])) {
      return Status::InvalidArgument(
          fmt::format("learning policy: values must be strictly increasing, got {} after {}",
                      p.arms[i][0], p.arms[i - 1][0]));
    }
    for (size_t j = 0; j < i; ++j) {
      if (SettingKey(p.arms[j]) == SettingKey(p.arms[i])) {
        return Status::InvalidArgument(fmt::format(
            "learning policy: values[{}] repeats values[{}] {}", i, j, ListText(p.arms[i])));
      }
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
  if (!(p.explore_max_drop_rate >= 0 && p.explore_max_drop_rate <= 1)) {
    return Status::InvalidArgument(
        fmt::format("learning policy: explore_max_drop_rate must be in [0, 1] (1: no gate), got {}",
                    p.explore_max_drop_rate));
  }
  if (!(p.explore_quantile >= 0 && p.explore_quantile <= 1)) {
    return Status::InvalidArgument(fmt::format(
        "learning policy: explore_quantile must be in [0, 1], got {}", p.explore_quantile));
  }
  if (p.explore_lookback_steps < 1) {
    return Status::InvalidArgument(fmt::format(
        "learning policy: explore_lookback_steps must be >= 1, got {}", p.explore_lookback_steps));
  }
  return Status::Ok();
}

std::optional<double> ExploreDropRate(const EngineSnapshot& snapshot, const Setting& arm,
                                      const LearningPolicyParams& params) {
  double cf = snapshot.knobs.capacity_factor;
  double top_k = snapshot.knobs.top_k;
  for (size_t k = 0; k < params.knobs.size() && k < arm.size(); ++k) {
    if (params.knobs[k] == knob::kCapacityFactor) cf = arm[k];
    if (params.knobs[k] == knob::kTopK) top_k = arm[k];
  }
  return PessimisticDropRate(snapshot, cf, static_cast<uint32_t>(std::max(1.0, top_k)),
                             params.explore_lookback_steps, params.explore_quantile);
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

Setting SettingInForce(const EngineSnapshot& snapshot, const LearningPolicyParams& params) {
  Setting setting;
  setting.reserve(params.knobs.size());
  for (const std::string& name : params.knobs) {
    const KnobSpec* spec = FindKnob(name);
    setting.push_back(spec != nullptr && spec->scalar() ? spec->value(snapshot.knobs)
                                                        : std::numeric_limits<double>::quiet_NaN());
  }
  return setting;
}

size_t NearestArm(const Setting& setting, const LearningPolicyParams& params) {
  assert(!params.arms.empty());
  const std::vector<double> spread = Spreads(params);
  size_t best = 0;
  double best_distance = Distance(params.arms[0], setting, spread);
  for (size_t a = 1; a < params.arms.size(); ++a) {
    const double distance = Distance(params.arms[a], setting, spread);
    if (distance < best_distance) {  // strict: a tie keeps the lower arm
      best = a;
      best_distance = distance;
    }
  }
  return best;
}

void Learn(const std::string& regime, const Setting& applied, double reward,
           const LearningPolicyParams& params, LearningState* state) {
  assert(state != nullptr);
  if (applied.size() != params.knobs.size() || !std::isfinite(reward)) return;
  for (double v : applied) {
    if (!std::isfinite(v)) return;
  }
  ArmStats& at = state->regimes[regime][SettingKey(applied)];
  ++at.samples;
  at.reward_sum += reward;
  ++state->samples;
}

std::string ArmsChange(const LearningPolicyParams& before, const LearningPolicyParams& after,
                       const LearningState& state) {
  if (before.knobs != after.knobs) {
    return fmt::format("learning: knobs changed from {} to {}: statistics reset",
                       KnobsName(before.knobs), KnobsName(after.knobs));
  }
  if (before.arms == after.arms) return "";
  std::vector<std::string> arms;
  for (const Setting& s : after.arms) {
    uint64_t n = SamplesAt(state, s);
    arms.push_back(n == 0 ? fmt::format("{}: new", ListText(s))
                          : fmt::format("{}: {} samples", ListText(s), n));
  }
  std::vector<std::string> dropped;
  for (const Setting& s : before.arms) {
    if (IsArm(s, after)) continue;
    dropped.push_back(fmt::format("{} ({} samples, kept)", ListText(s), SamplesAt(state, s)));
  }
  return fmt::format("learning: arms changed from {} to {}; statistics follow their settings: {}{}",
                     ListText(before.arms), ListText(after.arms), fmt::join(arms, ", "),
                     dropped.empty()
                         ? std::string()
                         : fmt::format("; no longer arms: {}", fmt::join(dropped, ", ")));
}

std::optional<Proposal> ProposeLearning(const EngineSnapshot& snapshot,
                                        const LearningPolicyParams& params,
                                        const LearningState& state) {
  if (snapshot.steps_in_epoch < params.min_steps) return std::nullopt;
  if (params.arms.empty()) return std::nullopt;
  const Setting in_force = SettingInForce(snapshot, params);
  for (size_t k = 0; k < in_force.size(); ++k) {
    if (!std::isfinite(in_force[k])) return std::nullopt;
    if (params.knobs[k] == knob::kCapacityFactor && in_force[k] == 0) return std::nullopt;
  }

  const std::vector<Setting>& arms = params.arms;
  const Arms geometry{params};
  const std::string regime = RegimeOf(snapshot, params);
  const std::vector<ArmStats> stats = ArmStatsOf(regime, params, state);
  const size_t current = NearestArm(in_force, params);
  // Off an arm (a clamped move), moving onto the nearest arm measures an arm.
  const bool on_arm = IsArm(in_force, params);
  const std::string knob_text = params.knobs.size() == 1 ? params.knobs[0] + " " : std::string();

  // Explore: the unexplored arm nearest the current one whose pessimistic
  // drop rate passes the gate (worked out nearest first, and only as far as
  // needed: each costs a pass over the window's demand).
  std::vector<size_t> unexplored;
  size_t num_known = 0;
  for (size_t a = 0; a < arms.size(); ++a) {
    if (stats[a].samples >= params.min_samples) {
      ++num_known;
    } else {
      unexplored.push_back(a);
    }
  }
  std::stable_sort(unexplored.begin(), unexplored.end(),
                   [&](size_t a, size_t b) { return geometry.Nearer(a, b, current); });
  const bool gate = params.explore_max_drop_rate < 1;
  std::vector<std::string> gated;
  bool current_gated = false;
  for (size_t arm : unexplored) {
    std::optional<double> drops;
    if (gate) drops = ExploreDropRate(snapshot, arms[arm], params);
    if (drops && *drops > params.explore_max_drop_rate) {
      gated.push_back(fmt::format("{} (drops {:.1f}%)", ArmName(params, arms[arm]), 100 * *drops));
      current_gated = current_gated || arm == current;
      continue;
    }
    // The current arm is being measured now; its epoch's outcome comes first.
    if (SettingKey(arms[arm]) == SettingKey(in_force)) return std::nullopt;
    const std::string gate_text =
        !gate   ? std::string()
        : drops ? fmt::format("; predicted drops {:.1f}% <= {:.1f}%", 100 * *drops,
                              100 * params.explore_max_drop_rate)
                : std::string("; no demand to gate on");
    return MakeProposal(
        params, in_force, arms[arm],
        fmt::format(
            "regime {}: explore {}{} ({} of {} samples; {} of {} arms known{}) from {} "
            "({}){}",
            regime, knob_text, ArmName(params, arms[arm]), stats[arm].samples, params.min_samples,
            num_known, arms.size(),
            gated.empty() ? std::string() : fmt::format(", gated: {}", fmt::join(gated, ", ")),
            ArmName(params, arms[current]), ArmText(stats[current]), gate_text));
  }
  if (num_known == 0) return std::nullopt;
  const std::string gated_text =
      gated.empty() ? std::string()
                    : fmt::format("; not explored, predicted drops above {:.1f}%: {}",
                                  100 * params.explore_max_drop_rate, fmt::join(gated, ", "));

  // Exploit: UCB1 over the regime's known arms (samples >= min_samples >= 1).
  auto known = [&](size_t a) { return stats[a].samples >= params.min_samples; };
  uint64_t total = 0;
  for (size_t a = 0; a < arms.size(); ++a) {
    if (known(a)) total += stats[a].samples;
  }
  const double log_total = std::log(static_cast<double>(total));
  std::vector<double> score(arms.size(), -std::numeric_limits<double>::infinity());
  for (size_t a = 0; a < arms.size(); ++a) {
    if (!known(a)) continue;
    score[a] = stats[a].Mean() +
               params.exploration * std::sqrt(log_total / static_cast<double>(stats[a].samples));
  }
  std::optional<size_t> best_known;
  for (size_t a = 0; a < arms.size(); ++a) {
    if (!known(a)) continue;
    if (!best_known || score[a] > score[*best_known] ||
        (score[a] == score[*best_known] && geometry.Nearer(a, *best_known, current))) {
      best_known = a;
    }
  }
  const size_t best = *best_known;  // num_known > 0; a tie keeps the current arm
  if (SettingKey(arms[best]) == SettingKey(in_force)) return std::nullopt;
  const double gain = score[best] - score[current];
  if (on_arm && !current_gated && !(gain >= params.min_gain)) return std::nullopt;
  return MakeProposal(
      params, in_force, arms[best],
      fmt::format("regime {}: exploit {}{} (mean reward {:.3f} over {} samples) over {} ({}); "
                  "upper confidence {:.3f} vs {:.3f} (exploration {}, {} samples in regime){}",
                  regime, knob_text, ArmName(params, arms[best]), stats[best].Mean(),
                  stats[best].samples, ArmName(params, arms[current]), ArmText(stats[current]),
                  score[best], score[current], params.exploration, total, gated_text));
}

}  // namespace moe::policies
