#include "moe/policies/replication_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
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

// Whether the knobs in force give each replica slot its own capacity.
bool CapacityPerSlot(const KnobValues& knobs) {
  return knobs.capacity_scope == telemetry::CapacityScope::kSlot;
}

// The largest load per replica, max over experts of load[e] / counts[e].
double MaxPerReplica(const std::vector<double>& load, const std::vector<int>& counts) {
  double m = 0;
  for (size_t e = 0; e < load.size(); ++e)
    m = std::max(m, load[e] / counts[e]);
  return m;
}

struct DemandPlan {
  std::vector<int> phy2log;
  int num_moved = 0;
};

// Replica counts for `load` reached from `counts` (the placement in force)
// by at most `budget` exchanges (-1: no limit), each taking one replica from
// the expert whose last replica carries the least (load / (count - 1)) and
// giving it to the one with the highest load per replica, while that strictly
// lowers the latter. Without a binding budget this ends on an allocation
// EPLB's rule (ReplicateGreedy) could have made: no exchange is left that
// lowers the highest load per replica. Returns the exchanges made.
int ExchangeTowardsDemand(const std::vector<double>& load, int budget, std::vector<int>* counts) {
  std::vector<int>& c = *counts;
  const size_t n = load.size();
  int made = 0;
  // Each exchange lowers the sorted per-replica loads lexicographically, so
  // this ends; the cap is a second guard.
  const size_t cap = n * n + 16;
  for (size_t it = 0; it < cap && (budget < 0 || made < budget); ++it) {
    size_t recv = 0;
    for (size_t e = 1; e < n; ++e)
      if (load[e] / c[e] > load[recv] / c[recv]) recv = e;
    size_t donor = n;
    for (size_t e = 0; e < n; ++e) {
      if (e == recv || c[e] < 2) continue;
      if (donor == n || load[e] / (c[e] - 1) < load[donor] / (c[donor] - 1)) donor = e;
    }
    if (donor == n || !(load[donor] / (c[donor] - 1) < load[recv] / c[recv])) break;
    --c[donor];
    ++c[recv];
    ++made;
  }
  return made;
}

// ReplicaCountRule::kDemand: the counts come from ExchangeTowardsDemand
// within the migration budget, and the planner packs the replicas as
// num_replicas pseudo-experts (expert e's j-th replica, load[e] / counts[e]
// each), one slot each, against the placement in force relabelled to
// pseudo-experts (a slot keeps its expert's next unused pseudo id; the slots
// an exchange freed take the pseudo ids left over), with what is left of the
// budget. A freed slot is one move and a pseudo move at most one more, so the
// replicas moved stay within max_moves.
Result<DemandPlan> PlanWithDemandCounts(const PlannerShape& shape, const std::vector<double>& load,
                                        const std::vector<int>& current,
                                        const PlannerOptions& options, int exchange_budget) {
  const int num_replicas = shape.num_replicas;
  std::vector<int> counts(load.size(), 0);
  for (int e : current)
    ++counts[e];
  const int exchanges = ExchangeTowardsDemand(load, exchange_budget, &counts);
  std::vector<int> base(load.size() + 1, 0);
  for (size_t e = 0; e < load.size(); ++e)
    base[e + 1] = base[e] + counts[e];
  std::vector<int> expert_of(num_replicas);
  std::vector<double> pseudo_load(num_replicas);
  for (size_t e = 0; e < load.size(); ++e) {
    for (int j = 0; j < counts[e]; ++j) {
      expert_of[base[e] + j] = static_cast<int>(e);
      pseudo_load[base[e] + j] = load[e] / counts[e];
    }
  }
  std::vector<int> used(load.size(), 0);
  std::vector<int> previous(num_replicas, -1);
  std::vector<int> free_slots;
  for (int s = 0; s < num_replicas; ++s) {
    const int e = current[s];
    if (used[e] < counts[e]) {
      previous[s] = base[e] + used[e]++;
    } else {
      free_slots.push_back(s);
    }
  }
  size_t next_free = 0;
  for (size_t e = 0; e < load.size(); ++e)
    for (int j = used[e]; j < counts[e]; ++j)
      previous[free_slots[next_free++]] = base[e] + j;

  PlannerInput input;
  input.shape = {num_replicas, num_replicas, 1, 1, shape.num_gpus};
  input.loads = std::move(pseudo_load);
  input.previous_phy2log = std::move(previous);
  PlannerOptions global = options;
  global.mode = PlanMode::kGlobal;
  if (options.max_moves >= 0) global.max_moves = options.max_moves - exchanges;
  Result<PlanReport> report = PlanReplication(input, global);
  if (!report.ok()) return report.status();
  DemandPlan plan;
  plan.phy2log.resize(num_replicas);
  for (int s = 0; s < num_replicas; ++s)
    plan.phy2log[s] = expert_of[report->plan.phy2log[s]];
  plan.num_moved = CountMovedReplicas(shape, current, plan.phy2log);
  if (options.max_moves >= 0 && plan.num_moved > options.max_moves) {
    return Status::Internal("replication: a demand plan moved more than max_moves");
  }
  return plan;
}

// Device speeds (CostModel::device_factor) for `num_devices` devices, or
// empty when every device runs at 1 (the plans are then left as they are).
std::vector<double> SpeedFactors(const EngineSnapshot& snapshot) {
  const std::vector<double>& f = snapshot.cost_model.device_factor;
  if (f.empty() || !snapshot.cost_model.calibrated) return {};
  std::vector<double> out(snapshot.num_devices, 1.0);
  bool any = false;
  for (size_t d = 0; d < out.size() && d < f.size(); ++d) {
    if (f[d] > 0 && std::isfinite(f[d])) out[d] = f[d];
    any = any || out[d] != 1.0;
  }
  return any ? out : std::vector<double>{};
}

// Each device's load under `phy2log`: the sum over its slots of load[e] /
// replicas of e.
std::vector<double> DeviceLoads(const std::vector<double>& load, const std::vector<int>& phy2log,
                                int num_devices) {
  std::vector<int> counts(load.size(), 0);
  for (int e : phy2log)
    ++counts[e];
  std::vector<double> device(num_devices, 0.0);
  const size_t per_device = phy2log.size() / num_devices;
  for (size_t s = 0; s < phy2log.size(); ++s)
    device[s / per_device] += load[phy2log[s]] / counts[phy2log[s]];
  return device;
}

// The largest device time over the balanced one: max over d of f_d x load_d,
// over total / sum of 1 / f_d (the time at which devices loaded in inverse
// proportion to their factors all finish). Max/mean when every f_d is 1.
double TimedMaxOverMean(const std::vector<double>& device, const std::vector<double>& factors) {
  double total = 0, inverse = 0, top = 0;
  for (size_t d = 0; d < device.size(); ++d) {
    total += device[d];
    inverse += 1.0 / factors[d];
    top = std::max(top, factors[d] * device[d]);
  }
  return total > 0 ? top / (total / inverse) : 1.0;
}

// Moves load off slow devices: swaps the contents of two slots on different
// devices (of one node when `node_size` devices form a node) while a swap
// lowers the largest device time (TimedMaxOverMean) by more than what its
// two moves cost (move_weight * 2 / num_replicas), taking the best swap each
// time, and while the plan stays within max_moves of `current` (-1: no
// limit). Replica counts are kept, so the room a plan gives stays the same.
void SpreadOffSlowDevices(const std::vector<double>& load, const std::vector<double>& factors,
                          const PlannerShape& shape, int node_size, const std::vector<int>& current,
                          int max_moves, double move_weight, std::vector<int>* plan) {
  std::vector<int>& p = *plan;
  const int num_devices = shape.num_gpus;
  const size_t per_device = p.size() / num_devices;
  std::vector<int> counts(load.size(), 0);
  for (int e : p)
    ++counts[e];
  auto share = [&](size_t s) { return load[p[s]] / counts[p[s]]; };
  std::vector<double> device = DeviceLoads(load, p, num_devices);
  double total = 0, inverse = 0;
  for (int d = 0; d < num_devices; ++d) {
    total += device[d];
    inverse += 1.0 / factors[d];
  }
  if (!(total > 0)) return;
  const double balanced = total / inverse;
  const double step_cost = move_weight * 2.0 / static_cast<double>(p.size()) * balanced;
  for (size_t it = 0; it < p.size(); ++it) {
    int slowest = 0;
    for (int d = 1; d < num_devices; ++d)
      if (factors[d] * device[d] > factors[slowest] * device[slowest]) slowest = d;
    const double now = factors[slowest] * device[slowest];
    double best = now - step_cost;
    size_t best_a = 0, best_b = 0;
    bool found = false;
    for (int d = 0; d < num_devices; ++d) {
      if (d == slowest || d / node_size != slowest / node_size) continue;
      // The largest time over the devices a swap with `d` leaves alone.
      double others = 0;
      for (int o = 0; o < num_devices; ++o)
        if (o != d && o != slowest) others = std::max(others, factors[o] * device[o]);
      for (size_t a = slowest * per_device; a < (slowest + 1) * per_device; ++a) {
        for (size_t b = d * per_device; b < (d + 1) * per_device; ++b) {
          const double delta = share(a) - share(b);
          if (!(delta > 0)) continue;
          const double t = std::max({others, factors[slowest] * (device[slowest] - delta),
                                     factors[d] * (device[d] + delta)});
          if (t < best) {
            best = t;
            best_a = a;
            best_b = b;
            found = true;
          }
        }
      }
    }
    if (!found) return;
    const double delta = share(best_a) - share(best_b);
    std::swap(p[best_a], p[best_b]);
    if (max_moves >= 0 && CountMovedReplicas(shape, current, p) > max_moves) {
      std::swap(p[best_a], p[best_b]);
      return;
    }
    device[slowest] -= delta;
    device[best_b / per_device] += delta;
  }
}
}  // namespace

std::string_view ReplicaCountRuleName(ReplicaCountRule rule) {
  switch (rule) {
    case ReplicaCountRule::kAuto:
      return "auto";
    case ReplicaCountRule::kBalance:
      return "balance";
    case ReplicaCountRule::kDemand:
      return "demand";
  }
  return "?";
}

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

  const bool by_demand =
      params.replica_counts == ReplicaCountRule::kDemand ||
      (params.replica_counts == ReplicaCountRule::kAuto && CapacityPerSlot(snapshot.knobs));
  // A straggler: plans are then judged by device time, not device load.
  const std::vector<double> factors = SpeedFactors(snapshot);
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
    const int node_size = ResolveMode(input.shape, options.mode) == PlanMode::kHierarchical
                              ? input.shape.num_gpus / input.shape.num_nodes
                              : input.shape.num_gpus;
    // Device max/mean, or with a straggler its time over the balanced time;
    // `plan` is first spread off the slow devices (SpreadOffSlowDevices).
    auto judge = [&](std::vector<int>* plan, double planned_ratio) {
      if (factors.empty()) return planned_ratio;
      SpreadOffSlowDevices(load, factors, input.shape, node_size, input.previous_phy2log,
                           options.max_moves, params.move_weight, plan);
      return TimedMaxOverMean(DeviceLoads(load, *plan, input.shape.num_gpus), factors);
    };
    double before =
        factors.empty()
            ? now->max_over_mean
            : TimedMaxOverMean(DeviceLoads(load, input.previous_phy2log, input.shape.num_gpus),
                               factors);
    double after = before;
    std::vector<int> planned;
    int num_moved = 0;
    bool take = false;
    // The balance plan: counts and packing for device balance alone.
    Result<PlanReport> report = PlanReplication(input, options);
    if (!report.ok()) return std::nullopt;
    planned = report->plan.phy2log;
    after = judge(&planned, report->plan.max_over_mean);
    num_moved = factors.empty() ? report->num_moved
                                : CountMovedReplicas(input.shape, input.previous_phy2log, planned);
    if (!factors.empty()) {
      // The placement in force, only spread off the slow devices: fewer moves.
      std::vector<int> spread = input.previous_phy2log;
      const double ratio = judge(&spread, before);
      const int moved = CountMovedReplicas(input.shape, input.previous_phy2log, spread);
      const double per_move = params.move_weight / static_cast<double>(snapshot.num_replicas);
      if (ratio + per_move * moved < after + per_move * num_moved) {
        planned = std::move(spread);
        after = ratio;
        num_moved = moved;
      }
    }
    take = after <= before * (1 - params.min_gain);
    if (by_demand && (input.shape.num_nodes == 1 ||
                      ResolveMode(input.shape, options.mode) == PlanMode::kGlobal)) {
      // Room counts too: with capacity per slot, a replica of a hot expert
      // adds room where the drops are. The room ratio is the largest load
      // per replica over the mean load per slot.
      const double per_slot = total / static_cast<double>(snapshot.num_replicas);
      const double room_before = MaxPerReplica(load, now->replica_count) / per_slot;
      auto cost = [&](int moved) {
        return params.move_weight * moved / static_cast<double>(snapshot.num_replicas);
      };
      // Among the plans a layer may take (a device gain, or a room gain at
      // most min_gain of device balance), the one with the least device
      // max/mean + room ratio + move cost; the balance plan competes too.
      std::vector<int> planned_counts(load.size(), 0);
      for (int e : planned)
        ++planned_counts[e];
      double best = take ? after + MaxPerReplica(load, planned_counts) / per_slot + cost(num_moved)
                         : std::numeric_limits<double>::infinity();
      std::vector<int> budgets = {options.max_moves};
      // Under a move limit, also leave half of it to the packing.
      if (options.max_moves > 1) budgets.push_back(options.max_moves / 2);
      for (int budget : budgets) {
        Result<DemandPlan> dp =
            PlanWithDemandCounts(input.shape, load, input.previous_phy2log, options, budget);
        if (!dp.ok()) return std::nullopt;
        Result<Plan> next = EvaluatePlan(input.shape, load, dp->phy2log, options.mode);
        if (!next.ok()) return std::nullopt;
        const double ratio = judge(&dp->phy2log, next->max_over_mean);
        if (!factors.empty()) {
          dp->num_moved = CountMovedReplicas(input.shape, input.previous_phy2log, dp->phy2log);
        }
        const double room_after = MaxPerReplica(load, next->replica_count) / per_slot;
        const double c = cost(dp->num_moved);
        const bool ok = ratio + c <= before * (1 - params.min_gain) ||
                        (room_after + c <= room_before * (1 - params.min_gain) &&
                         ratio <= before * (1 + params.min_gain));
        const double score = ratio + room_after + c;
        if (ok && score < best) {
          best = score;
          take = true;
          planned = std::move(dp->phy2log);
          num_moved = dp->num_moved;
          after = ratio;
        }
      }
    }
    if (take && ToUint(planned) != current[l]) {
      std::vector<uint32_t> next = ToUint(planned);
      LayerChange change;
      change.layer = static_cast<uint32_t>(l);
      change.before = before;
      change.after = after;
      change.num_moved = num_moved;
      change.hottest =
          static_cast<size_t>(std::max_element(load.begin(), load.end()) - load.begin());
      change.hottest_replicas = static_cast<int>(
          std::count(next.begin(), next.end(), static_cast<uint32_t>(change.hottest)));
      changes.push_back(change);
      updated[l] = std::move(next);
    } else {
      after = before;
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
  if (!factors.empty()) {
    std::string slow;
    for (size_t d = 0; d < factors.size(); ++d) {
      if (factors[d] != 1.0)
        slow += fmt::format("{}device {} at {:.2f}x", slow.empty() ? "" : ", ", d, factors[d]);
    }
    proposal.reason += "; judged by device time (" + slow + " the usual device's time)";
  }
  proposal.current_placements = std::move(current);
  proposal.placements = std::move(updated);
  return proposal;
}

}  // namespace moe::policies
