// Shapes, modes, plan evaluation, movement and locality metrics.

#include <algorithm>
#include <cmath>
#include <string>
#include <unordered_map>

#include "moe/policies/planner.h"
#include "planner_internal.h"

namespace moe::policies {

std::string_view PlanModeName(PlanMode mode) {
  switch (mode) {
    case PlanMode::kAuto:
      return "auto";
    case PlanMode::kHierarchical:
      return "hierarchical";
    case PlanMode::kGlobal:
      return "global";
  }
  return "unknown";
}

Result<PlanMode> ParsePlanMode(std::string_view name) {
  if (name == "auto") return PlanMode::kAuto;
  if (name == "hierarchical") return PlanMode::kHierarchical;
  if (name == "global") return PlanMode::kGlobal;
  return Status::InvalidArgument("unknown mode '" + std::string(name) +
                                 "'; use auto, hierarchical or global");
}

PlanMode ResolveMode(const PlannerShape& shape, PlanMode mode) {
  if (mode != PlanMode::kAuto) return mode;
  if (shape.num_nodes > 0 && shape.num_groups % shape.num_nodes == 0) {
    return PlanMode::kHierarchical;
  }
  return PlanMode::kGlobal;
}

Status ValidateShape(const PlannerShape& s, PlanMode mode) {
  auto positive = [](const char* name, int v) -> Status {
    if (v <= 0) {
      return Status::InvalidArgument(std::string(name) + " is " + std::to_string(v) +
                                     "; it must be a positive integer");
    }
    return Status::Ok();
  };
  MOE_RETURN_IF_ERROR(positive("experts", s.num_experts));
  MOE_RETURN_IF_ERROR(positive("replicas", s.num_replicas));
  MOE_RETURN_IF_ERROR(positive("groups", s.num_groups));
  MOE_RETURN_IF_ERROR(positive("nodes", s.num_nodes));
  MOE_RETURN_IF_ERROR(positive("gpus", s.num_gpus));
  if (s.num_replicas < s.num_experts) {
    return Status::InvalidArgument("replicas (" + std::to_string(s.num_replicas) + ") < experts (" +
                                   std::to_string(s.num_experts) +
                                   "); every expert needs at least one slot");
  }
  if (s.num_replicas % s.num_gpus != 0) {
    return Status::InvalidArgument("replicas (" + std::to_string(s.num_replicas) +
                                   ") is not a multiple of gpus (" + std::to_string(s.num_gpus) +
                                   "); every GPU must hold the same number of slots");
  }
  if (ResolveMode(s, mode) == PlanMode::kHierarchical) {
    if (s.num_groups % s.num_nodes != 0) {
      return Status::InvalidArgument("hierarchical mode needs groups (" +
                                     std::to_string(s.num_groups) +
                                     ") to be a multiple of nodes (" + std::to_string(s.num_nodes) +
                                     "); use --mode global or auto");
    }
    if (s.num_experts % s.num_groups != 0) {
      return Status::InvalidArgument(
          "hierarchical mode needs experts (" + std::to_string(s.num_experts) +
          ") to be a multiple of groups (" + std::to_string(s.num_groups) + ")");
    }
    if (s.num_gpus % s.num_nodes != 0) {
      return Status::InvalidArgument("hierarchical mode needs gpus (" + std::to_string(s.num_gpus) +
                                     ") to be a multiple of nodes (" + std::to_string(s.num_nodes) +
                                     ")");
    }
  }
  return Status::Ok();
}

Result<Plan> EvaluatePlan(const PlannerShape& shape, const std::vector<double>& loads,
                          const std::vector<int>& phy2log, PlanMode mode) {
  MOE_RETURN_IF_ERROR(ValidateShape(shape, mode));
  const int num_experts = shape.num_experts;
  if (static_cast<int>(loads.size()) != num_experts) {
    return Status::InvalidArgument("loads has " + std::to_string(loads.size()) +
                                   " entries; want experts = " + std::to_string(num_experts));
  }
  if (static_cast<int>(phy2log.size()) != shape.num_replicas) {
    return Status::InvalidArgument("phy2log has " + std::to_string(phy2log.size()) +
                                   " slots; want replicas = " + std::to_string(shape.num_replicas));
  }
  Plan plan;
  plan.phy2log = phy2log;
  plan.replica_count.assign(num_experts, 0);
  for (int slot = 0; slot < shape.num_replicas; ++slot) {
    const int e = phy2log[slot];
    if (e < 0 || e >= num_experts) {
      return Status::InvalidArgument("slot " + std::to_string(slot) + " holds expert " +
                                     std::to_string(e) + ", outside [0, " +
                                     std::to_string(num_experts) + ")");
    }
    ++plan.replica_count[e];
  }
  for (int e = 0; e < num_experts; ++e) {
    if (plan.replica_count[e] == 0) {
      return Status::InvalidArgument("expert " + std::to_string(e) + " has no replica");
    }
  }
  const int slots_per_gpu = shape.num_replicas / shape.num_gpus;
  if (ResolveMode(shape, mode) == PlanMode::kHierarchical) {
    const int group_size = shape.num_experts / shape.num_groups;
    const int gpus_per_node = shape.num_gpus / shape.num_nodes;
    std::vector<int> home(shape.num_groups, -1);
    std::vector<int> groups_on_node(shape.num_nodes, 0);
    for (int slot = 0; slot < shape.num_replicas; ++slot) {
      const int group = phy2log[slot] / group_size;
      const int node = slot / slots_per_gpu / gpus_per_node;
      if (home[group] == -1) {
        home[group] = node;
        ++groups_on_node[node];
      } else if (home[group] != node) {
        return Status::InvalidArgument(
            "group " + std::to_string(group) + " spans nodes " + std::to_string(home[group]) +
            " and " + std::to_string(node) + " (slot " + std::to_string(slot) + ")");
      }
    }
    const int per_node = shape.num_groups / shape.num_nodes;
    for (int n = 0; n < shape.num_nodes; ++n) {
      if (groups_on_node[n] != per_node) {
        return Status::InvalidArgument("node " + std::to_string(n) + " holds " +
                                       std::to_string(groups_on_node[n]) + " groups; want " +
                                       std::to_string(per_node));
      }
    }
  }
  std::vector<double> gpu_load(shape.num_gpus, 0.0);
  double total = 0.0;
  for (int e = 0; e < num_experts; ++e)
    total += loads[e];
  for (int slot = 0; slot < shape.num_replicas; ++slot) {
    const int e = phy2log[slot];
    gpu_load[slot / slots_per_gpu] += loads[e] / plan.replica_count[e];
  }
  const double mean = total / shape.num_gpus;
  const double max_load = *std::max_element(gpu_load.begin(), gpu_load.end());
  plan.max_over_mean = mean > 0 ? max_load / mean : 1.0;
  return plan;
}

int CountMovedReplicas(const PlannerShape& shape, const std::vector<int>& previous,
                       const std::vector<int>& next) {
  const int per = shape.num_replicas / std::max(1, shape.num_gpus);
  int moved = 0;
  std::unordered_map<int, int> have;
  for (int gpu = 0; gpu < shape.num_gpus; ++gpu) {
    have.clear();
    for (int k = 0; k < per; ++k) {
      const size_t slot = static_cast<size_t>(gpu) * per + k;
      if (slot < previous.size()) ++have[previous[slot]];
    }
    for (int k = 0; k < per; ++k) {
      const size_t slot = static_cast<size_t>(gpu) * per + k;
      if (slot >= next.size()) continue;
      auto it = have.find(next[slot]);
      if (it != have.end() && it->second > 0) {
        --it->second;
      } else {
        ++moved;
      }
    }
  }
  return moved;
}

double GpuSpan(const PlannerShape& shape, const std::vector<int>& phy2log,
               const std::vector<double>& coactivation, double num_tokens) {
  const int num_experts = shape.num_experts;
  if (num_tokens <= 0 || coactivation.size() != static_cast<size_t>(num_experts) * num_experts) {
    return -1.0;
  }
  const int per = shape.num_replicas / shape.num_gpus;
  std::vector<int> counts(num_experts, 0);
  for (int e : phy2log)
    ++counts[e];
  // share[e][gpu]: fraction of e's tokens that land on gpu; kept sparse.
  std::vector<std::vector<std::pair<int, double>>> share(num_experts);
  for (size_t slot = 0; slot < phy2log.size(); ++slot) {
    const int e = phy2log[slot];
    const int gpu = static_cast<int>(slot) / per;
    auto& v = share[e];
    if (!v.empty() && v.back().first == gpu) {
      v.back().second += 1.0 / counts[e];
    } else {
      v.emplace_back(gpu, 1.0 / counts[e]);
    }
  }
  double span = 0.0;
  for (int a = 0; a < num_experts; ++a) {
    span += coactivation[static_cast<size_t>(a) * num_experts + a] / num_tokens;
    for (int b = a + 1; b < num_experts; ++b) {
      const double both = coactivation[static_cast<size_t>(a) * num_experts + b];
      if (both <= 0) continue;
      double same = 0.0;
      for (const auto& [ga, fa] : share[a]) {
        for (const auto& [gb, fb] : share[b]) {
          if (ga == gb) same += fa * fb;
        }
      }
      span -= both / num_tokens * same;
    }
  }
  return span;
}

namespace internal {

Deadline::Deadline(const Clock* clock, double budget_ms) : clock_(clock) {
  if (clock_ != nullptr) {
    deadline_nanos_ = clock_->MonotonicNanos() + static_cast<int64_t>(budget_ms * 1e6);
  }
}

bool Deadline::Expired() const {
  return clock_ != nullptr && clock_->MonotonicNanos() >= deadline_nanos_;
}

}  // namespace internal
}  // namespace moe::policies
