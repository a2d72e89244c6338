#include "prediction.h"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <vector>

namespace moe::controller {
namespace {

// Drop rate of the snapshot's mean demand under capacity factor `cf`
// (0: unlimited); nullopt without demand figures.
std::optional<double> DropRateUnder(double cf, const policies::EngineSnapshot& s) {
  if (!(s.tokens_per_step > 0) || s.knobs.top_k == 0) return std::nullopt;
  double demanded = 0;
  double dropped = 0;
  for (const policies::LayerEstimate& layer : s.layers) {
    if (layer.expert_demand.empty()) continue;
    const double num_experts = static_cast<double>(layer.expert_demand.size());
    const double capacity =
        cf > 0 ? std::ceil(cf * s.tokens_per_step * s.knobs.top_k / num_experts) : INFINITY;
    for (double d : layer.expert_demand) {
      demanded += d;
      dropped += std::max(0.0, d - capacity);
    }
  }
  if (!(demanded > 0)) return std::nullopt;
  return dropped / demanded;
}

policies::OutcomeFigures FiguresOf(const policies::EngineSnapshot& s, double drop_rate, double cf) {
  policies::OutcomeFigures f;
  f.steps = s.steps_in_epoch;
  f.drop_rate = drop_rate;
  f.step_us = s.step_us;
  f.max_over_mean = s.max_over_mean;
  f.quality_error = s.quality_error;
  f.capacity_factor = cf;
  double critical_path = 0;
  for (const policies::LayerEstimate& layer : s.layers)
    critical_path += layer.layer_us;
  f.critical_path_us = critical_path;
  return f;
}

}  // namespace

std::optional<double> Prediction::gain() const {
  if (!reward_before || !reward_after) return std::nullopt;
  return *reward_after - *reward_before;
}

std::string Prediction::Json() const {
  nlohmann::json j = {{"basis", basis}};
  if (reward_before) j["reward_before"] = *reward_before;
  if (reward_after) j["reward_after"] = *reward_after;
  if (gain()) j["gain"] = *gain();
  if (drop_rate_before) j["drop_rate_before"] = *drop_rate_before;
  if (drop_rate_after) j["drop_rate_after"] = *drop_rate_after;
  if (device_max_over_mean_before) j["device_max_over_mean_before"] = *device_max_over_mean_before;
  if (device_max_over_mean_after) j["device_max_over_mean_after"] = *device_max_over_mean_after;
  return j.dump();
}

Prediction Predict(const std::string& knob, double current, double value,
                   const Companions& companions, const policies::EngineSnapshot& snapshot,
                   const policies::RewardParams& reward,
                   const policies::LearningPolicyParams& learning,
                   const policies::LearningState& learnt) {
  Prediction p;
  if (policies::IsPlacementKnob(knob)) {
    p.basis = "planned device load";
    p.device_max_over_mean_before = current;
    p.device_max_over_mean_after = value;
    return p;
  }
  if (knob == policies::knob::kCapacityFactor && companions.empty()) {
    const double now = snapshot.knobs.capacity_factor;
    std::optional<double> before = DropRateUnder(now, snapshot);
    std::optional<double> after = DropRateUnder(value, snapshot);
    if (before && after) {
      p.basis = "demand counterfactual";
      p.drop_rate_before = before;
      p.drop_rate_after = after;
      p.reward_before = policies::Reward(FiguresOf(snapshot, *before, now), reward);
      p.reward_after = policies::Reward(FiguresOf(snapshot, *after, value), reward);
      return p;
    }
  }
  // The setting the command makes: each changed knob must be learnt.
  const policies::Setting in_force = policies::SettingInForce(snapshot, learning);
  policies::Setting made = in_force;
  auto set = [&](const std::string& name, double v) {
    auto at = std::find(learning.knobs.begin(), learning.knobs.end(), name);
    if (at == learning.knobs.end()) return false;
    made[static_cast<size_t>(at - learning.knobs.begin())] = v;
    return true;
  };
  bool learnt_knobs = set(knob, value);
  for (const auto& [name, v] : companions)
    learnt_knobs = set(name, v) && learnt_knobs;
  if (learnt_knobs) {
    const std::string regime = policies::RegimeOf(snapshot, learning);
    auto it = learnt.regimes.find(regime);
    if (it != learnt.regimes.end()) {
      auto from = it->second.find(policies::SettingKey(in_force));
      auto to = it->second.find(policies::SettingKey(made));
      if (from != it->second.end() && to != it->second.end() && from->second.samples > 0 &&
          to->second.samples > 0) {
        p.basis = "learnt means";
        p.reward_before = from->second.Mean();
        p.reward_after = to->second.Mean();
      }
    }
  }
  return p;
}

}  // namespace moe::controller
