// A clean-room implementation of DeepSeek EPLB's rebalance_experts, written
// from its published description: the planner's baseline.

#include <algorithm>
#include <numeric>

#include "moe/policies/planner.h"
#include "planner_internal.h"

namespace moe::policies {
namespace internal {

void BalancedPacking(const std::vector<double>& weights, int num_packs, std::vector<int>* pack,
                     std::vector<int>* rank) {
  const int num_items = static_cast<int>(weights.size());
  const int per_pack = num_items / num_packs;
  pack->assign(num_items, 0);
  rank->assign(num_items, 0);
  if (per_pack == 1) {
    std::iota(pack->begin(), pack->end(), 0);
    return;
  }
  std::vector<int> order(num_items);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return weights[a] > weights[b]; });
  std::vector<double> pack_weight(num_packs, 0.0);
  std::vector<int> pack_items(num_packs, 0);
  for (int item : order) {
    int best = -1;
    for (int p = 0; p < num_packs; ++p) {
      if (pack_items[p] < per_pack && (best < 0 || pack_weight[p] < pack_weight[best])) best = p;
    }
    (*pack)[item] = best;
    (*rank)[item] = pack_items[best]++;
    pack_weight[best] += weights[item];
  }
}

std::vector<int> ReplicateGreedy(const std::vector<double>& loads, int num_slots,
                                 std::vector<int>* order) {
  const int num_experts = static_cast<int>(loads.size());
  std::vector<int> counts(num_experts, 1);
  if (order != nullptr) order->clear();
  for (int slot = num_experts; slot < num_slots; ++slot) {
    int best = 0;
    double best_ratio = loads[0] / counts[0];
    for (int e = 1; e < num_experts; ++e) {
      const double ratio = loads[e] / counts[e];
      if (ratio > best_ratio) {
        best = e;
        best_ratio = ratio;
      }
    }
    ++counts[best];
    if (order != nullptr) order->push_back(best);
  }
  return counts;
}

}  // namespace internal

Result<Plan> PlanEplb(const PlannerShape& shape, const std::vector<double>& loads, PlanMode mode) {
  MOE_RETURN_IF_ERROR(ValidateShape(shape, mode));
  if (static_cast<int>(loads.size()) != shape.num_experts) {
    return Status::InvalidArgument("loads has " + std::to_string(loads.size()) +
                                   " entries; want experts = " + std::to_string(shape.num_experts));
  }
  const bool hierarchical = ResolveMode(shape, mode) == PlanMode::kHierarchical;
  const int num_groups = hierarchical ? shape.num_groups : 1;
  const int num_nodes = hierarchical ? shape.num_nodes : 1;
  const int group_size = shape.num_experts / num_groups;
  const int groups_per_node = num_groups / num_nodes;
  const int slots_per_node = shape.num_replicas / num_nodes;
  const int gpus_per_node = shape.num_gpus / num_nodes;
  const int slots_per_gpu = shape.num_replicas / shape.num_gpus;

  // (1) Groups onto nodes.
  std::vector<double> group_load(num_groups, 0.0);
  for (int e = 0; e < shape.num_experts; ++e)
    group_load[e / group_size] += loads[e];
  std::vector<int> group_node, group_rank;
  internal::BalancedPacking(group_load, num_nodes, &group_node, &group_rank);
  // Experts of each node in EPLB's order: by the group's rank on the node.
  const int experts_per_node = groups_per_node * group_size;
  std::vector<int> node_expert(static_cast<size_t>(num_nodes) * experts_per_node);
  for (int g = 0; g < num_groups; ++g) {
    for (int i = 0; i < group_size; ++i) {
      node_expert[(static_cast<size_t>(group_node[g]) * groups_per_node + group_rank[g]) *
                      group_size +
                  i] = g * group_size + i;
    }
  }

  std::vector<int> phy2log(shape.num_replicas, -1);
  std::vector<double> node_loads(experts_per_node);
  std::vector<int> added;
  std::vector<int> gpu_of, rank_of;
  for (int node = 0; node < num_nodes; ++node) {
    const int* experts = &node_expert[static_cast<size_t>(node) * experts_per_node];
    for (int i = 0; i < experts_per_node; ++i)
      node_loads[i] = loads[experts[i]];
    // (2) Replicas within the node.
    const std::vector<int> counts = internal::ReplicateGreedy(node_loads, slots_per_node, &added);
    // Physical items: one per expert in node order, then the added replicas.
    std::vector<int> item_expert(experts_per_node);
    std::iota(item_expert.begin(), item_expert.end(), 0);
    item_expert.insert(item_expert.end(), added.begin(), added.end());
    std::vector<double> item_weight(item_expert.size());
    for (size_t k = 0; k < item_expert.size(); ++k) {
      item_weight[k] = node_loads[item_expert[k]] / counts[item_expert[k]];
    }
    // (3) Replicas onto the node's GPUs.
    internal::BalancedPacking(item_weight, gpus_per_node, &gpu_of, &rank_of);
    for (size_t k = 0; k < item_expert.size(); ++k) {
      const int slot = node * slots_per_node + gpu_of[k] * slots_per_gpu + rank_of[k];
      phy2log[slot] = experts[item_expert[k]];
    }
  }
  return EvaluatePlan(shape, loads, phy2log,
                      hierarchical ? PlanMode::kHierarchical : PlanMode::kGlobal);
}

}  // namespace moe::policies
