#include "moe/policies/replication_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstddef>
#include <limits>
#include <string>
#include <vector>

#include "moe/policies/planner.h"

namespace moe::policies {
namespace {

using Placements = std::vector<std::vector<uint32_t>>;

// Layers named one by one in a reason; the rest are counted.
constexpr size_t kMaxLayersInReason = 8;

struct LayerChange {
  uint32_t layer = 0;
  double before = 0;  // device max-over-mean under the placement in force
  double after = 0;   // ... and under the new one
  int num_moved = 0;
  size_t hottest = 0;
  int hottest_replicas = 0;  // after
};

std::vector<uint32_t> DefaultPlacement(uint32_t num_replicas, size_t num_experts) {
  std::vector<uint32_t> placement(num_replicas);
  for (uint32_t s = 0; s < num_replicas; ++s)
    placement[s] = static_cast<uint32_t>(s % num_experts);
  return placement;
}

// Ids above INT_MAX wrap to negative ints, which EvaluatePlan rejects.
std::vector<int> ToInt(const std::vector<uint32_t>& placement) {
  return std::vector<int>(placement.begin(), placement.end());
}

std::vector<uint32_t> ToUint(const std::vector<int>& placement) {
  return std::vector<uint32_t>(placement.begin(), placement.end());
}

std::string Reason(const std::vector<LayerChange>& changes, uint64_t steps, double before,
                   double after, ForecastMethod method, size_t num_forecast,
                   size_t num_changed_regime) {
  int num_moved = 0;
  for (const LayerChange& c : changes)
    num_moved += c.num_moved;
  std::string reason =
      fmt::format("device load imbalance over {} steps: {} replicas moved on {} layers;", steps,
                  num_moved, changes.size());
  for (size_t i = 0; i < changes.size() && i < kMaxLayersInReason; ++i) {
    const LayerChange& c = changes[i];
    reason += fmt::format(
        " layer {} max/mean {:.3f} -> {:.3f} ({} replicas moved, hottest expert {} on {} "
        "replicas);",
        c.layer, c.before, c.after, c.num_moved, c.hottest, c.hottest_replicas);
  }
  if (changes.size() > kMaxLayersInReason) {
    reason += fmt::format(" and {} more layers;", changes.size() - kMaxLayersInReason);
  }
  reason += fmt::format(" mean max/mean {:.3f} -> {:.3f}", before, after);
  if (num_forecast > 0) {
    reason += fmt::format("; planned on the {} forecast of the next window on {} layers",
                          ForecastMethodName(method), num_forecast);
    if (num_changed_regime > 0) {
      reason += fmt::format(" ({} with a change in the window)", num_changed_regime);
    }
  } else {
    reason += "; planned on the window mean";
  }
  return reason;
}

}  // namespace

Status Validate(const ReplicationPolicyParams& p) {
  if (p.num_nodes < 1) {
    return Status::InvalidArgument(
        fmt::format("replication policy: num_nodes must be >= 1, got {}", p.num_nodes));
  }
  if (p.num_groups < 1) {
    return Status::InvalidArgument(
        fmt::format("replication policy: num_groups must be >= 1, got {}", p.num_groups));
  }
  if (!(p.min_gain > 0 && p.min_gain < 1)) {
    return Status::InvalidArgument(
        fmt::format("replication policy: min_gain must be in (0, 1), got {}", p.min_gain));
  }
  if (p.max_moves < 1 && p.max_moves != -1) {
    return Status::InvalidArgument(fmt::format(
        "replication policy: max_moves must be >= 1 or -1 (no limit), got {}", p.max_moves));
  }
  if (!(p.time_budget_ms > 0)) {
    return Status::InvalidArgument(
        fmt::format("replication policy: time_budget_ms must be > 0, got {}", p.time_budget_ms));
  }
  if (!(p.move_weight >= 0)) {
    return Status::InvalidArgument(
        fmt::format("replication policy: move_weight must be >= 0, got {}", p.move_weight));
  }
  if (Status s = Validate(p.forecast); !s.ok()) {
    return Status::InvalidArgument("replication policy: " + s.message());
  }
  return Status::Ok();
}

std::optional<Proposal> ProposeReplication(const EngineSnapshot& snapshot,
                                           const ReplicationPolicyParams& params) {
  if (snapshot.num_devices <= 1 || snapshot.num_replicas == 0) return std::nullopt;
  if (snapshot.steps_in_epoch < params.min_steps) return std::nullopt;
  constexpr uint32_t kMaxInt = static_cast<uint32_t>(std::numeric_limits<int>::max());
  if (snapshot.num_replicas > kMaxInt || snapshot.num_devices > kMaxInt ||
      params.num_nodes > kMaxInt || params.num_groups > kMaxInt) {
    return std::nullopt;
  }
  const Placements& in_force = snapshot.knobs.phy2log;

  const std::vector<const LayerEstimate*> by_layer = LayersById(snapshot, in_force.size());
  const size_t num_layers = by_layer.size();

  Placements current(num_layers);
  for (size_t l = 0; l < num_layers; ++l) {
    if (l < in_force.size() && !in_force[l].empty()) {
      current[l] = in_force[l];
      continue;
    }
    const LayerEstimate* est = by_layer[l];
    size_t num_experts = est != nullptr && !est->expert_load.empty() ? est->expert_load.size()
                                                                     : snapshot.num_experts;
    // A placement that cannot be spelled out cannot be proposed.
    if (num_experts == 0) return std::nullopt;
    current[l] = DefaultPlacement(snapshot.num_replicas, num_experts);
  }

  PlannerOptions options;
  options.mode = PlanMode::kAuto;
  options.clock = params.clock;  // nullptr: no deadline, deterministic
  options.time_budget_ms = params.time_budget_ms;
  options.max_moves = params.max_moves;
  options.move_weight = params.move_weight;

  Placements updated = current;
  std::vector<LayerChange> changes;
  size_t num_forecast = 0;
  size_t num_changed_regime = 0;
  std::vector<const std::vector<double>*> rows;
  double sum_before = 0;
  double sum_after = 0;
  size_t num_measured = 0;
  for (size_t l = 0; l < num_layers; ++l) {
    const LayerEstimate* est = by_layer[l];
    if (est == nullptr) continue;
    // Plan on demand: served load is what capacity let through, so a hot
    // expert capped at its capacity looks no hotter than the rest.
    const std::vector<double>& window_mean =
        est->expert_demand.empty() ? est->expert_load : est->expert_demand;
    if (window_mean.empty()) continue;
    // Look ahead: the placement governs the next window's steps.
    std::vector<double> forecast;
    if (params.forecast.method != ForecastMethod::kWindowMean) {
      rows.clear();
      for (const StepDemand& step : snapshot.recent) {
        if (l < step.layers.size() && step.layers[l].size() == window_mean.size()) {
          rows.push_back(&step.layers[l]);
        }
      }
      if (rows.size() >= 2) {
        Result<LoadForecast> f = ForecastLoad(rows, params.forecast);
        // A series the forecast refuses (e.g. all zero) keeps the window mean.
        if (f.ok()) {
          forecast = std::move(f->load);
          ++num_forecast;
          if (f->change_step >= 0) ++num_changed_regime;
        }
      }
    }
    const std::vector<double>& load = forecast.empty() ? window_mean : forecast;
    double total = 0;
    for (double x : load)
      total += x;
    if (!(total > 0)) continue;

    PlannerInput input;
    input.shape.num_experts = static_cast<int>(std::min<size_t>(load.size(), kMaxInt));
    input.shape.num_replicas = static_cast<int>(snapshot.num_replicas);
    input.shape.num_groups = static_cast<int>(params.num_groups);
    input.shape.num_nodes = static_cast<int>(params.num_nodes);
    input.shape.num_gpus = static_cast<int>(snapshot.num_devices);
    if (!ValidateShape(input.shape, options.mode).ok()) return std::nullopt;
    input.loads = load;
    input.previous_phy2log = ToInt(current[l]);
    Result<Plan> now = EvaluatePlan(input.shape, load, input.previous_phy2log, options.mode);
    if (!now.ok()) return std::nullopt;
    Result<PlanReport> report = PlanReplication(input, options);
    if (!report.ok()) return std::nullopt;

    const Plan& plan = report->plan;
    double before = now->max_over_mean;
    double after = before;
    if (plan.max_over_mean <= before * (1 - params.min_gain)) {
      std::vector<uint32_t> next = ToUint(plan.phy2log);
      if (next != current[l]) {
        LayerChange change;
        change.layer = static_cast<uint32_t>(l);
        change.before = before;
        change.after = plan.max_over_mean;
        change.num_moved = report->num_moved;
        change.hottest =
            static_cast<size_t>(std::max_element(load.begin(), load.end()) - load.begin());
        change.hottest_replicas = plan.replica_count[change.hottest];
        changes.push_back(change);
        updated[l] = std::move(next);
        after = plan.max_over_mean;
      }
    }
    sum_before += before;
    sum_after += after;
    ++num_measured;
  }
  if (changes.empty()) return std::nullopt;

  Proposal proposal;
  proposal.policy = "replication";
  proposal.knob = "phy2log";
  proposal.layer = -1;
  proposal.current = sum_before / static_cast<double>(num_measured);
  proposal.value = sum_after / static_cast<double>(num_measured);
  proposal.reason = Reason(changes, snapshot.steps_in_epoch, proposal.current, proposal.value,
                           params.forecast.method, num_forecast, num_changed_regime);
  proposal.current_placements = std::move(current);
  proposal.placements = std::move(updated);
  return proposal;
}

}  // namespace moe::policies
