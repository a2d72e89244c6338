#include "moe/policies/counterfactual_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <vector>

#include "moe/policies/cost_model.h"

namespace moe::policies {
namespace {

// The engine's per-expert capacity (router.h ExpertCapacity); infinity = none.
double Capacity(double capacity_factor, double tokens, uint32_t top_k, size_t num_experts) {
  if (capacity_factor <= 0 || num_experts == 0) return std::numeric_limits<double>::infinity();
  const double raw = capacity_factor * tokens * top_k / static_cast<double>(num_experts);
  return std::max(1.0, std::ceil(raw - 1e-9));
}

double LowQuantile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double pos = q * static_cast<double>(values.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(values.size() - 1, lo + 1);
  const double frac = pos - static_cast<double>(lo);
  return values[lo] * (1 - frac) + values[hi] * frac;
}

}  // namespace

Status Validate(const CounterfactualParams& p) {
  if (p.candidates.empty()) {
    return Status::InvalidArgument("counterfactual policy: candidates must not be empty");
  }
  for (double c : p.candidates) {
    if (!(c >= 0 && std::isfinite(c))) {
      return Status::InvalidArgument(fmt::format(
          "counterfactual policy: candidates must be > 0, or 0 for unlimited capacity, got {}", c));
    }
  }
  if (!(p.pessimism > 0 && p.pessimism <= 1)) {
    return Status::InvalidArgument(
        fmt::format("counterfactual policy: pessimism must be in (0, 1], got {}", p.pessimism));
  }
  if (!(p.quality_per_drop >= 0) || !(p.min_gain >= 0)) {
    return Status::InvalidArgument(
        "counterfactual policy: quality_per_drop and min_gain must be >= 0");
  }
  if (p.min_steps < 1)
    return Status::InvalidArgument("counterfactual policy: min_steps must be >= 1");
  return Status::Ok();
}

namespace {

// Where each slot's rows go in one layer (cost_model.h DeviceRows, taken
// apart so that a replay of many steps and candidates works it out once per
// layer): the expert of every slot, its device, and each expert's replicas.
struct LayerSlots {
  size_t num_experts = SIZE_MAX;   // for which the slots were worked out
  std::vector<uint32_t> expert;    // [slot]
  std::vector<uint32_t> device;    // [slot]
  std::vector<uint32_t> replicas;  // [expert]
};

void Prepare(const std::vector<uint32_t>& phy2log, size_t num_experts, uint32_t num_replicas,
             uint32_t num_devices, LayerSlots* out) {
  out->num_experts = num_experts;
  const auto e_count = static_cast<uint32_t>(num_experts);
  if (num_replicas == 0) num_replicas = e_count;
  out->expert.resize(num_replicas);
  out->device.resize(num_replicas);
  out->replicas.assign(num_experts, 0);
  if (num_experts == 0) return;
  const uint32_t per_device = std::max<uint32_t>(1, num_replicas / num_devices);
  for (uint32_t s = 0; s < num_replicas; ++s) {
    const uint32_t e =
        phy2log.size() == num_replicas && phy2log[s] < e_count ? phy2log[s] : s % e_count;
    out->expert[s] = e;
    out->device[s] = std::min(num_devices - 1, s / per_device);
    ++out->replicas[e];
  }
}

// A replay's scratch space and the slots of every layer, reused over steps
// and candidates. The arithmetic is DeviceRows' and LayerPathUs', in the same
// order, so the figures are the same to the bit.
struct Replay {
  std::vector<LayerSlots> layers;
  std::vector<double> served;
  std::vector<double> rows;
};

// The reward of one replayed step (drops, modelled latency and its balanced
// reference in `p`), its quality error estimated from its drops.
double StepReward(const StepPrediction& p, double capacity_factor,
                  const CounterfactualParams& params, const RewardParams& reward) {
  OutcomeFigures f;
  f.steps = 1;
  f.drop_rate = p.drop_rate;
  f.model_latency_us = p.latency_us;
  f.balanced_latency_us = p.balanced_us;
  f.quality_error = params.quality_per_drop * p.drop_rate;
  f.capacity_factor = capacity_factor;
  return Reward(f, reward);
}

// The balanced reference of `step`: the sum over its layers with demand of
// BalancedLayerPathUs; from `sums` (those layers with the step's tokens and
// all-to-all, as Predict and ReplayCapacities add them) when no device
// factor is set.
double BalancedUs(const EngineSnapshot& snapshot, const StepDemand& step, const PathSums& sums) {
  const uint32_t top_k = std::max<uint32_t>(1, snapshot.knobs.top_k);
  const double reference_k = snapshot.reference_top_k > 0 ? snapshot.reference_top_k : top_k;
  const uint32_t num_devices = std::max<uint32_t>(1, snapshot.num_devices);
  if (snapshot.cost_model.device_factor.empty()) {
    return BalancedPathUs(snapshot.cost_model, sums, reference_k, num_devices);
  }
  double balanced = 0;
  for (size_t l = 0; l < step.layers.size(); ++l) {
    if (step.layers[l].empty()) continue;
    const double a2a = l < step.all_to_all_us.size() ? step.all_to_all_us[l] : 0.0;
    balanced += BalancedLayerPathUs(snapshot.cost_model, step.tokens, step.tokens * reference_k,
                                    num_devices, a2a);
  }
  return balanced;
}

// The same for a step replayed under candidates (any candidate's sums hold
// its tokens and all-to-all).
double BalancedUs(const EngineSnapshot& snapshot, const StepDemand& step,
                  const CapacityReplay& replay) {
  return BalancedUs(snapshot, step, replay.paths.empty() ? PathSums{} : replay.paths.front());
}

StepPrediction Predict(const EngineSnapshot& snapshot, const StepDemand& step,
                       double capacity_factor, const CounterfactualParams& params,
                       const RewardParams& reward, Replay* replay) {
  StepPrediction out;
  const uint32_t top_k = std::max<uint32_t>(1, snapshot.knobs.top_k);
  const uint32_t num_devices = std::max<uint32_t>(1, snapshot.num_devices);
  double slots = 0, dropped = 0;
  // Every device at the usual speed: the path from the sums, as a
  // CapacityReplay prices it (PriceReplay), to the same bits.
  const bool by_sums = PricesCapacityReplays(snapshot.cost_model);
  PathSums sums;
  std::vector<double>& served = replay->served;
  std::vector<double>& rows = replay->rows;
  if (replay->layers.size() < step.layers.size()) replay->layers.resize(step.layers.size());
  for (size_t l = 0; l < step.layers.size(); ++l) {
    const std::vector<double>& demand = step.layers[l];
    if (demand.empty()) continue;
    const double cap = Capacity(capacity_factor, step.tokens, top_k, demand.size());
    LayerSlots& slots_of = replay->layers[l];
    if (slots_of.num_experts != demand.size()) {
      static const std::vector<uint32_t> kDefault;
      const std::vector<uint32_t>& placement =
          l < snapshot.knobs.phy2log.size() ? snapshot.knobs.phy2log[l] : kDefault;
      Prepare(placement, demand.size(), snapshot.num_replicas, num_devices, &slots_of);
    }
    // Capacity per slot: an expert with r replicas takes up to r x C.
    const bool per_slot = snapshot.knobs.capacity_scope == telemetry::CapacityScope::kSlot;
    served.resize(demand.size());
    for (size_t e = 0; e < demand.size(); ++e) {
      const double room = per_slot ? cap * std::max<double>(1, slots_of.replicas[e]) : cap;
      served[e] = std::min(demand[e], room);
      slots += demand[e];
      dropped += demand[e] - served[e];
    }
    rows.assign(num_devices, 0.0);
    for (size_t s = 0; s < slots_of.expert.size(); ++s) {
      const uint32_t e = slots_of.expert[s];
      rows[slots_of.device[s]] += served[e] / slots_of.replicas[e];
    }
    const double a2a = l < step.all_to_all_us.size() ? step.all_to_all_us[l] : 0.0;
    sums.AddLayer(step.tokens, *std::max_element(rows.begin(), rows.end()), a2a);
    if (!by_sums) out.latency_us += LayerPathUs(snapshot.cost_model, step.tokens, rows, a2a);
  }
  if (by_sums) out.latency_us = PathUs(snapshot.cost_model, sums);
  out.balanced_us = BalancedUs(snapshot, step, sums);
  out.drop_rate = slots > 0 ? dropped / slots : 0;
  out.reward = StepReward(out, capacity_factor, params, reward);
  return out;
}

// The step's figures from its replay under candidate `c` (CapacityReplay),
// in Predict's arithmetic: the device cost is monotone and every device at
// the usual speed, so the slowest device is the one with the most rows.
StepPrediction PriceReplay(const EngineSnapshot& snapshot, const StepDemand& step,
                           const CapacityReplay& replay, size_t c, double balanced_us,
                           const CounterfactualParams& params, const RewardParams& reward) {
  StepPrediction out;
  out.latency_us = PathUs(snapshot.cost_model, replay.paths[c]);
  out.balanced_us = balanced_us;
  out.drop_rate = replay.slots > 0 ? replay.dropped[c] / replay.slots : 0;
  out.reward = StepReward(out, replay.capacity_factors[c], params, reward);
  return out;
}

// The index of `capacity_factor` among the replay's candidates; SIZE_MAX
// when it was not replayed.
size_t CandidateOf(const CapacityReplay& replay, double capacity_factor) {
  const std::vector<double>& f = replay.capacity_factors;
  auto it = std::find(f.begin(), f.end(), capacity_factor);
  return it == f.end() ? SIZE_MAX : static_cast<size_t>(it - f.begin());
}

}  // namespace

bool PricesCapacityReplays(const CostModel& model) {
  for (double f : model.device_factor) {
    if (f != 1.0) return false;
  }
  return model.device.fixed_us >= 0 && model.device.per_row_us >= 0;
}

namespace {}  // namespace

StepPrediction PredictStep(const EngineSnapshot& snapshot, const StepDemand& step,
                           double capacity_factor, const CounterfactualParams& params,
                           const RewardParams& reward) {
  Replay replay;
  return Predict(snapshot, step, capacity_factor, params, reward, &replay);
}

uint64_t CapacityReplay::bytes() const {
  return sizeof(CapacityReplay) +
         (capacity_factors.capacity() + dropped.capacity()) * sizeof(double) +
         paths.capacity() * sizeof(PathSums);
}

uint64_t PlacementFingerprint(const std::vector<std::vector<uint32_t>>& phy2log) {
  // FNV-1a over the layer sizes and slots, the slots of a layer in four
  // interleaved lanes (so the multiplies do not wait on one another) that
  // are mixed into the layer's hash at its end.
  constexpr uint64_t kBasis = 1469598103934665603ull, kPrime = 1099511628211ull;
  uint64_t h = kBasis;
  auto mix = [](uint64_t& into, uint64_t v) {
    into ^= v;
    into *= kPrime;
  };
  mix(h, phy2log.size());
  for (const std::vector<uint32_t>& layer : phy2log) {
    mix(h, layer.size());
    uint64_t lanes[4] = {kBasis, kBasis ^ 1, kBasis ^ 2, kBasis ^ 3};
    size_t s = 0;
    for (; s + 4 <= layer.size(); s += 4) {
      for (size_t j = 0; j < 4; ++j)
        mix(lanes[j], layer[s + j]);
    }
    for (; s < layer.size(); ++s)
      mix(lanes[s % 4], layer[s]);
    for (uint64_t lane : lanes)
      mix(h, lane);
  }
  return h;
}

CapacityReplay::Settings ReplaySettings(const KnobValues& knobs, uint32_t num_replicas,
                                        uint32_t num_devices) {
  CapacityReplay::Settings s;
  s.placement = PlacementFingerprint(knobs.phy2log);
  s.top_k = std::max<uint32_t>(1, knobs.top_k);
  s.scope = knobs.capacity_scope;
  s.num_replicas = num_replicas;
  s.num_devices = std::max<uint32_t>(1, num_devices);
  return s;
}

std::shared_ptr<const CapacityReplay> ReplayCapacities(
    const StepDemand& step, const KnobValues& knobs, uint32_t num_replicas, uint32_t num_devices,
    const std::vector<double>& capacity_factors) {
  auto out = std::make_shared<CapacityReplay>();
  out->settings = ReplaySettings(knobs, num_replicas, num_devices);
  out->capacity_factors = capacity_factors;
  const uint32_t top_k = out->settings.top_k;
  num_devices = out->settings.num_devices;
  const bool per_slot = knobs.capacity_scope == telemetry::CapacityScope::kSlot;
  std::vector<LayerSlots> layers(step.layers.size());
  for (size_t l = 0; l < step.layers.size(); ++l) {
    if (step.layers[l].empty()) continue;
    static const std::vector<uint32_t> kDefault;
    const std::vector<uint32_t>& placement = l < knobs.phy2log.size() ? knobs.phy2log[l] : kDefault;
    Prepare(placement, step.layers[l].size(), num_replicas, num_devices, &layers[l]);
  }
  out->dropped.assign(capacity_factors.size(), 0.0);
  out->paths.assign(capacity_factors.size(), PathSums{});
  // Smallest capacity first: once one drops nothing in a layer, every larger
  // one serves the same rows there (and adds exact zeros to its drops).
  std::vector<size_t> order(capacity_factors.size());
  for (size_t c = 0; c < order.size(); ++c)
    order[c] = c;
  auto room_of = [](double cf) { return cf > 0 ? cf : std::numeric_limits<double>::infinity(); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return room_of(capacity_factors[a]) < room_of(capacity_factors[b]);
  });
  std::vector<double> served, rows;
  double slots = 0;
  for (size_t l = 0; l < step.layers.size(); ++l) {
    const std::vector<double>& demand = step.layers[l];
    if (demand.empty()) continue;
    for (double d : demand)
      slots += d;
    const LayerSlots& slots_of = layers[l];
    const double a2a = l < step.all_to_all_us.size() ? step.all_to_all_us[l] : 0.0;
    double saturated = std::nan("");  // the rows once nothing drops
    for (size_t c : order) {
      if (!std::isnan(saturated)) {
        out->paths[c].AddLayer(step.tokens, saturated, a2a);
        continue;
      }
      const double cap = Capacity(capacity_factors[c], step.tokens, top_k, demand.size());
      served.resize(demand.size());
      double dropped = out->dropped[c];
      bool drops = false;
      for (size_t e = 0; e < demand.size(); ++e) {
        const double room = per_slot ? cap * std::max<double>(1, slots_of.replicas[e]) : cap;
        served[e] = std::min(demand[e], room);
        dropped += demand[e] - served[e];
        drops = drops || served[e] != demand[e];
      }
      out->dropped[c] = dropped;
      rows.assign(num_devices, 0.0);
      for (size_t s = 0; s < slots_of.expert.size(); ++s) {
        const uint32_t e = slots_of.expert[s];
        rows[slots_of.device[s]] += served[e] / slots_of.replicas[e];
      }
      const double max_rows = *std::max_element(rows.begin(), rows.end());
      out->paths[c].AddLayer(step.tokens, max_rows, a2a);
      if (!drops) saturated = max_rows;
    }
  }
  out->slots = slots;
  return out;
}

std::optional<double> PessimisticDropRate(const EngineSnapshot& snapshot, double capacity_factor,
                                          uint32_t top_k, uint64_t lookback_steps,
                                          double quantile) {
  const uint32_t k_in_force = std::max<uint32_t>(1, snapshot.knobs.top_k);
  top_k = std::max<uint32_t>(1, top_k);
  const double scale = static_cast<double>(top_k) / k_in_force;
  const bool per_slot = snapshot.knobs.capacity_scope == telemetry::CapacityScope::kSlot;
  const bool replays =
      top_k == k_in_force && snapshot.capacity_replays.size() == snapshot.recent.size();
  const CapacityReplay::Settings settings =
      ReplaySettings(snapshot.knobs, snapshot.num_replicas, snapshot.num_devices);
  const uint32_t num_devices = std::max<uint32_t>(1, snapshot.num_devices);
  std::vector<LayerSlots> layers;
  std::vector<double> rates;
  for (size_t k = snapshot.recent.size(); k-- > 0;) {
    if (lookback_steps > 0 && rates.size() >= lookback_steps) break;
    const StepDemand& step = snapshot.recent[k];
    if (!StepHasDemand(step)) continue;
    const CapacityReplay* r = replays ? snapshot.capacity_replays[k].get() : nullptr;
    const size_t c =
        r != nullptr && r->settings == settings ? CandidateOf(*r, capacity_factor) : SIZE_MAX;
    if (c != SIZE_MAX) {
      rates.push_back(r->slots > 0 ? r->dropped[c] / r->slots : 0.0);
      continue;
    }
    double slots = 0, dropped = 0;
    if (layers.size() < step.layers.size()) layers.resize(step.layers.size());
    for (size_t l = 0; l < step.layers.size(); ++l) {
      const std::vector<double>& demand = step.layers[l];
      if (demand.empty()) continue;
      const double cap = Capacity(capacity_factor, step.tokens, top_k, demand.size());
      if (per_slot && layers[l].num_experts != demand.size()) {
        static const std::vector<uint32_t> kDefault;
        Prepare(l < snapshot.knobs.phy2log.size() ? snapshot.knobs.phy2log[l] : kDefault,
                demand.size(), snapshot.num_replicas, num_devices, &layers[l]);
      }
      for (size_t e = 0; e < demand.size(); ++e) {
        slots += demand[e];
        const double d = top_k > k_in_force ? std::min(step.tokens, demand[e] * scale) : demand[e];
        const double room = per_slot ? cap * std::max<double>(1, layers[l].replicas[e]) : cap;
        dropped += std::max(0.0, d - room);
      }
    }
    const double slots_at_k = slots * scale;
    rates.push_back(slots_at_k > 0 ? std::min(1.0, dropped / slots_at_k) : 0.0);
  }
  if (rates.empty()) return std::nullopt;
  return LowQuantile(std::move(rates), quantile);
}

std::vector<CandidateScore> ScoreCapacity(const EngineSnapshot& snapshot,
                                          const CounterfactualParams& params,
                                          const RewardParams& reward) {
  std::vector<CandidateScore> out;
  if (!snapshot.cost_model.calibrated) return out;
  std::vector<const StepDemand*> steps;
  for (auto it = snapshot.recent.rbegin(); it != snapshot.recent.rend(); ++it) {
    if (params.lookback_steps > 0 && steps.size() >= params.lookback_steps) break;
    if (StepHasDemand(*it)) steps.push_back(&*it);
  }
  if (steps.size() < params.min_steps) return out;
  std::vector<double> candidates = {snapshot.knobs.capacity_factor};
  for (double c : params.candidates) {
    if (std::abs(c - snapshot.knobs.capacity_factor) > 1e-9) candidates.push_back(c);
  }
  // Each step's replay, where one holds for these settings (else null), and
  // its balanced reference (the same for every candidate).
  std::vector<const CapacityReplay*> replays(steps.size(), nullptr);
  std::vector<double> balanced(steps.size(), 0.0);
  if (snapshot.capacity_replays.size() == snapshot.recent.size() &&
      PricesCapacityReplays(snapshot.cost_model)) {
    const CapacityReplay::Settings settings =
        ReplaySettings(snapshot.knobs, snapshot.num_replicas, snapshot.num_devices);
    // `steps` are the newest steps with demand, newest first.
    size_t i = 0;
    for (size_t k = snapshot.recent.size(); k-- > 0 && i < steps.size();) {
      if (&snapshot.recent[k] != steps[i]) continue;
      const CapacityReplay* r = snapshot.capacity_replays[k].get();
      if (r != nullptr && r->settings == settings) {
        replays[i] = r;
        balanced[i] = BalancedUs(snapshot, *steps[i], *r);
      }
      ++i;
    }
  }
  std::vector<double> rewards(steps.size());
  Replay replay;
  for (double cf : candidates) {
    CandidateScore score;
    score.capacity_factor = cf;
    score.steps = steps.size();
    for (size_t i = 0; i < steps.size(); ++i) {
      const size_t c = replays[i] != nullptr ? CandidateOf(*replays[i], cf) : SIZE_MAX;
      StepPrediction p = c != SIZE_MAX ? PriceReplay(snapshot, *steps[i], *replays[i], c,
                                                     balanced[i], params, reward)
                                       : Predict(snapshot, *steps[i], cf, params, reward, &replay);
      rewards[i] = p.reward;
      score.mean_reward += p.reward;
      score.drop_rate += p.drop_rate;
    }
    score.mean_reward /= static_cast<double>(steps.size());
    score.drop_rate /= static_cast<double>(steps.size());
    score.score = LowQuantile(rewards, params.pessimism);
    out.push_back(score);
  }
  return out;
}

std::optional<Proposal> ProposeCounterfactualCapacity(const EngineSnapshot& snapshot,
                                                      const CounterfactualParams& params,
                                                      const RewardParams& reward) {
  std::vector<CandidateScore> scores = ScoreCapacity(snapshot, params, reward);
  if (scores.size() < 2) return std::nullopt;
  const CandidateScore& now = scores.front();
  const CandidateScore* best = &now;
  // A tie (the window cannot tell them apart: neither drops there) goes to
  // unlimited capacity where it is a candidate (the operator allowed it: the
  // next shift then drops nothing), else to the smaller finite capacity.
  auto wins_tie = [](double a, double b) {
    if (a == 0 || b == 0) return a == 0 && b != 0;
    return a < b;
  };
  for (const CandidateScore& s : scores) {
    const bool better =
        s.score > best->score + 1e-12 || (std::abs(s.score - best->score) <= 1e-12 &&
                                          wins_tie(s.capacity_factor, best->capacity_factor));
    if (better) best = &s;
  }
  if (best == &now || best->score < now.score + params.min_gain) return std::nullopt;
  Proposal proposal;
  proposal.policy = "counterfactual";
  proposal.knob = knob::kCapacityFactor;
  proposal.current = now.capacity_factor;
  proposal.value = best->capacity_factor;
  proposal.reason = fmt::format(
      "on the last {} steps' own demand: capacity_factor {} scores {:.4f} (drop {:.4f}), {} "
      "scores {:.4f} (drop {:.4f}) at the {:.0f}th percentile",
      now.steps, now.capacity_factor, now.score, now.drop_rate, best->capacity_factor, best->score,
      best->drop_rate, params.pessimism * 100);
  return proposal;
}

std::optional<SameTokens> CapacityOnSameTokens(
    const EngineSnapshot& snapshot, uint64_t epoch, double changed_to, double changed_from,
    const CounterfactualParams& params, const RewardParams& reward,
    const std::vector<std::vector<uint32_t>>& previous_placements) {
  if (!snapshot.cost_model.calibrated) return std::nullopt;
  SameTokens out;
  std::optional<EngineSnapshot> previous;
  if (!previous_placements.empty()) {
    previous = snapshot;
    previous->knobs.phy2log = previous_placements;
  }
  const EngineSnapshot& before = previous ? *previous : snapshot;
  Replay replay, replay_before;
  for (const StepDemand& step : snapshot.recent) {
    if (step.epoch != epoch || !StepHasDemand(step)) continue;
    const StepPrediction now = Predict(snapshot, step, changed_to, params, reward, &replay);
    const StepPrediction then = Predict(before, step, changed_from, params, reward, &replay_before);
    out.reward_changed += now.reward;
    out.reward_previous += then.reward;
    out.drop_changed += now.drop_rate;
    out.drop_previous += then.drop_rate;
    ++out.steps;
  }
  if (out.steps == 0) return std::nullopt;
  const double n = static_cast<double>(out.steps);
  out.reward_changed /= n;
  out.reward_previous /= n;
  out.drop_changed /= n;
  out.drop_previous /= n;
  return out;
}

double PlacementGain(const EngineSnapshot& snapshot,
                     const std::vector<std::vector<uint32_t>>& placements,
                     const CounterfactualParams& params, const RewardParams& reward) {
  if (!snapshot.cost_model.calibrated) return 0;
  EngineSnapshot moved = snapshot;
  moved.knobs.phy2log = placements;
  moved.capacity_replays.clear();  // made under the placement in force
  const double cf = snapshot.knobs.capacity_factor;
  // The placement in force: from a step's capacity replay where one holds
  // (the same figures), else replayed.
  const bool priced = snapshot.capacity_replays.size() == snapshot.recent.size() &&
                      PricesCapacityReplays(snapshot.cost_model);
  const CapacityReplay::Settings settings =
      priced ? ReplaySettings(snapshot.knobs, snapshot.num_replicas, snapshot.num_devices)
             : CapacityReplay::Settings{};
  double before = 0, after = 0;
  uint64_t n = 0;
  Replay replay_before, replay_after;
  for (size_t k = snapshot.recent.size(); k-- > 0;) {
    if (params.lookback_steps > 0 && n >= params.lookback_steps) break;
    const StepDemand& step = snapshot.recent[k];
    if (!StepHasDemand(step)) continue;
    const CapacityReplay* r = priced ? snapshot.capacity_replays[k].get() : nullptr;
    const size_t c = r != nullptr && r->settings == settings ? CandidateOf(*r, cf) : SIZE_MAX;
    before += c != SIZE_MAX ? PriceReplay(snapshot, step, *r, c, BalancedUs(snapshot, step, *r),
                                          params, reward)
                                  .reward
                            : Predict(snapshot, step, cf, params, reward, &replay_before).reward;
    after += Predict(moved, step, cf, params, reward, &replay_after).reward;
    ++n;
  }
  return n > 0 ? (after - before) / static_cast<double>(n) : 0;
}

}  // namespace moe::policies
