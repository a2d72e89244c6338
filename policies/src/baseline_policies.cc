#include "moe/policies/baseline_policies.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "moe/policies/cost_model.h"
#include "moe/policies/planner.h"

namespace moe::policies {
namespace {

double MaxOverMean(const std::vector<double>& v) {
  double sum = 0, top = 0;
  for (double x : v) {
    sum += x;
    top = std::max(top, x);
  }
  return sum > 0 ? top * static_cast<double>(v.size()) / sum : 1.0;
}

}  // namespace

Status Validate(const DynamicCapacityParams& p) {
  if (p.lookback_steps < 1)
    return Status::InvalidArgument("dynamic_capacity: lookback_steps must be >= 1");
  if (!(p.margin >= 0)) return Status::InvalidArgument("dynamic_capacity: margin must be >= 0");
  if (!(p.step > 0)) return Status::InvalidArgument("dynamic_capacity: step must be > 0");
  if (!(p.min_change >= 0))
    return Status::InvalidArgument("dynamic_capacity: min_change must be >= 0");
  return Status::Ok();
}

std::optional<Proposal> ProposeDynamicCapacity(const EngineSnapshot& snapshot,
                                               const DynamicCapacityParams& params) {
  // Demand counts token-slots at the K in force, so the needed factor is the
  // hottest expert's demand over the mean per expert (tokens * K / E).
  double needed = 0;
  uint64_t seen = 0;
  for (auto it = snapshot.recent.rbegin();
       it != snapshot.recent.rend() && seen < params.lookback_steps; ++it) {
    bool any = false;
    for (const std::vector<double>& demand : it->layers) {
      if (demand.empty()) continue;
      any = true;
      needed = std::max(needed, MaxOverMean(demand));
    }
    if (any) ++seen;
  }
  if (seen == 0) return std::nullopt;
  const double value = std::ceil((needed + params.margin) / params.step - 1e-9) * params.step;
  const double cf = snapshot.knobs.capacity_factor;
  if (cf > 0 && std::abs(value - cf) < std::max(params.min_change, 1e-9)) return std::nullopt;
  Proposal p;
  p.policy = "dynamic_capacity";
  p.knob = knob::kCapacityFactor;
  p.current = cf;
  p.value = std::round(value * 1000) / 1000;
  p.reason = fmt::format("the hottest expert of the last {} steps needs {:.3f}x the mean demand",
                         seen, needed);
  return p;
}

Status Validate(const PeriodicEplbParams& p) {
  if (p.period_steps < 1) return Status::InvalidArgument("eplb: period_steps must be >= 1");
  return Status::Ok();
}

std::optional<Proposal> ProposePeriodicEplb(const EngineSnapshot& snapshot,
                                            const PeriodicEplbParams& params) {
  if (snapshot.num_devices <= 1 || snapshot.num_replicas == 0) return std::nullopt;
  if (snapshot.steps_in_epoch < params.period_steps) return std::nullopt;
  std::vector<std::vector<double>> mean;  // [layer][expert] over the window
  std::vector<uint64_t> counts;
  for (const StepDemand& step : snapshot.recent) {
    if (mean.size() < step.layers.size()) {
      mean.resize(step.layers.size());
      counts.resize(step.layers.size());
    }
    for (size_t l = 0; l < step.layers.size(); ++l) {
      const std::vector<double>& d = step.layers[l];
      if (d.empty()) continue;
      if (mean[l].size() < d.size()) mean[l].resize(d.size());
      for (size_t e = 0; e < d.size(); ++e)
        mean[l][e] += d[e];
      ++counts[l];
    }
  }
  Proposal p;
  p.policy = "eplb";
  p.knob = knob::kPhy2log;
  PlannerShape shape;
  shape.num_replicas = static_cast<int>(snapshot.num_replicas);
  shape.num_gpus = static_cast<int>(snapshot.num_devices);
  bool changed = false;
  double before = 0, after = 0;
  int planned = 0;
  for (size_t l = 0; l < mean.size(); ++l) {
    std::vector<uint32_t> current =
        l < snapshot.knobs.phy2log.size() ? snapshot.knobs.phy2log[l] : std::vector<uint32_t>{};
    const size_t num_experts = mean[l].empty() ? snapshot.num_experts : mean[l].size();
    if (current.size() != snapshot.num_replicas) {
      current.resize(snapshot.num_replicas);
      for (uint32_t s = 0; s < snapshot.num_replicas; ++s)
        current[s] = num_experts > 0 ? static_cast<uint32_t>(s % num_experts) : 0;
    }
    p.current_placements.push_back(current);
    p.placements.push_back(current);
    if (counts[l] == 0 || mean[l].empty()) continue;
    double total = 0;
    for (double& x : mean[l]) {
      x /= static_cast<double>(counts[l]);
      total += x;
    }
    if (!(total > 0)) continue;
    shape.num_experts = static_cast<int>(mean[l].size());
    Result<Plan> plan = PlanEplb(shape, mean[l], PlanMode::kGlobal);
    if (!plan.ok()) continue;
    std::vector<uint32_t> next(plan->phy2log.begin(), plan->phy2log.end());
    const double was =
        MaxOverMean(DeviceRows(mean[l], current, snapshot.num_replicas, snapshot.num_devices));
    const double will =
        MaxOverMean(DeviceRows(mean[l], next, snapshot.num_replicas, snapshot.num_devices));
    before += was;
    after += std::min(was, will);
    ++planned;
    // A re-plan that would not balance the devices better is not worth a move.
    if (next != current && will < was - 1e-9) {
      changed = true;
      p.placements.back() = std::move(next);
    }
  }
  if (!changed || planned == 0) return std::nullopt;
  p.current = before / planned;
  p.value = after / planned;
  p.reason =
      fmt::format("every {} steps: EPLB re-plan of {} layers from the mean demand of {} steps",
                  params.period_steps, planned, snapshot.recent.size());
  return p;
}

}  // namespace moe::policies
