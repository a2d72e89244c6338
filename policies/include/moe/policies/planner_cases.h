// Seeded synthetic load cases for the replication planner (planner.h), for
// tests and benchmarks: hierarchical shapes with skewed group loads (a few
// hot groups), heavy-tailed expert loads inside groups and, at the shapes
// below, few spare slots per node. Pure functions of their arguments: the
// same (shape, layers, seed) gives the same loads on every platform (the
// generator draws from std::mt19937_64, whose output the standard fixes, and
// transforms the raw bits itself; no std::*_distribution).

#ifndef MOE_POLICIES_PLANNER_CASES_H_
#define MOE_POLICIES_PLANNER_CASES_H_

#include <cstdint>
#include <vector>

#include "moe/common/status.h"
#include "moe/policies/planner.h"

namespace moe::policies {

// 128 experts in 16 groups, 160 slots, 4 nodes, 32 GPUs (5 slots per GPU, 8
// spare slots per node).
inline constexpr PlannerShape kShape128x16{128, 160, 16, 4, 32};
// 256 experts in 8 groups, 288 slots, 4 nodes, 32 GPUs (9 slots per GPU, 8
// spare slots per node).
inline constexpr PlannerShape kShape256x8{256, 288, 8, 4, 32};

// A planner case: a shape and one load vector per layer.
struct PlannerCase {
  PlannerShape shape;
  std::vector<std::vector<double>> loads;  // [num_layers][num_experts]
};

// How skewed the generated loads are. The defaults give group loads from
// about 0.3x to 5x the mean and hot experts up to 60x the mean expert (as in
// measured routing, where one expert can take several GPUs' worth of tokens).
struct PlannerCaseOptions {
  // Mean tokens routed to one expert (the scale; loads are whole tokens).
  double tokens_per_expert = 2000.0;
  // Log-normal spread (sigma) of group weights.
  double group_sigma = 0.5;
  // Hot groups per layer, drawn uniformly from [min_hot_groups,
  // max_hot_groups]; a hot group's weight is multiplied by a factor drawn
  // uniformly from [1.5, max_hot_factor].
  int min_hot_groups = 1;
  int max_hot_groups = 2;
  double max_hot_factor = 3.5;
  // Pareto tail index of expert weights inside a group (smaller: heavier
  // tail; must be > 1 for a finite mean). Capped at max_expert_weight times
  // the Pareto minimum.
  double pareto_alpha = 1.3;
  double max_expert_weight = 40.0;
  // Hot experts per layer, drawn uniformly from [min_hot_experts,
  // max_hot_experts], each in a group drawn with probability proportional
  // to the group's weight, its load set to a factor drawn log-uniformly
  // from [min_hot_expert_factor, max_hot_expert_factor] times the mean
  // expert load (tokens_per_expert) on top of its group's share.
  int min_hot_experts = 0;
  int max_hot_experts = 3;
  double min_hot_expert_factor = 5.0;
  double max_hot_expert_factor = 60.0;
};

// Generates `num_layers` layers for `shape` (hierarchical mode: it must pass
// ValidateShape(shape, kHierarchical)) from `seed`. Every load is a whole
// number >= 1. InvalidArgument on a bad shape, num_layers < 1, or options
// out of range (the message names the field).
Result<PlannerCase> GeneratePlannerCase(const PlannerShape& shape, int num_layers, uint64_t seed,
                                        const PlannerCaseOptions& options = {});

}  // namespace moe::policies

#endif  // MOE_POLICIES_PLANNER_CASES_H_
