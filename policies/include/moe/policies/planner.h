// Replication planner: which logical expert every physical slot holds.
//
// A model layer has num_experts logical experts and num_replicas physical
// slots spread over num_gpus GPUs (num_replicas / num_gpus slots per GPU;
// slot i sits on GPU i / (num_replicas / num_gpus)); the GPUs form num_nodes
// nodes of num_gpus / num_nodes consecutive GPUs. Experts form num_groups
// groups of num_experts / num_groups consecutive ids. An expert's load is
// split evenly over its replicas, so a GPU's load is the sum over its slots of
// load[e] / replica_count[e]. A plan is scored by max_over_mean: the largest
// GPU load over the mean GPU load (1.0 is perfect balance).
//
// Constraints (the same as DeepSeek EPLB's rebalance_experts):
//   - every expert has at least one replica;
//   - every GPU holds exactly num_replicas / num_gpus slots;
//   - hierarchical mode: every node holds num_groups / num_nodes whole groups,
//     and every replica of an expert sits on its group's node (this keeps
//     group-limited routing inside nodes). Global mode: no node constraint.
//
// Three entry points, all pure functions of their arguments (no I/O, no
// globals); thread-safe on distinct arguments:
//   - PlanEplb: a clean-room implementation of EPLB's greedy algorithm, the
//     baseline;
//   - PlanReplication: the default planner (searches assignments, replica
//     counts and packings; never worse than PlanEplb on the same input; can
//     weigh migration against balance and prefer co-located experts);
//   - LowerBound: a proven lower bound on max_over_mean over all valid plans.
// The only impure input is the optional PlannerOptions::clock, which bounds
// the search in time; without it the search is bounded by work alone and is
// deterministic.

#ifndef MOE_POLICIES_PLANNER_H_
#define MOE_POLICIES_PLANNER_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "moe/common/clock.h"
#include "moe/common/status.h"

namespace moe::policies {

enum class PlanMode {
  kAuto,          // hierarchical when num_groups % num_nodes == 0, else global
  kHierarchical,  // whole groups per node; replicas on their group's node
  kGlobal,        // one node, one group (EPLB's global mode)
};

// "auto", "hierarchical", "global".
std::string_view PlanModeName(PlanMode mode);
// Parses a PlanModeName; InvalidArgument names the accepted values.
Result<PlanMode> ParsePlanMode(std::string_view name);

// The cluster and model shape. All counts must be positive, and:
// num_replicas >= num_experts, num_replicas % num_gpus == 0; hierarchical
// mode also needs num_experts % num_groups == 0, num_gpus % num_nodes == 0 and
// num_groups % num_nodes == 0.
struct PlannerShape {
  int num_experts = 0;
  int num_replicas = 0;
  int num_groups = 1;
  int num_nodes = 1;
  int num_gpus = 1;
};

// Checks `shape` for `mode` (kAuto resolves first); the message names the
// field and the fix.
Status ValidateShape(const PlannerShape& shape, PlanMode mode);

// The mode kAuto resolves to for `shape` (others are returned unchanged).
PlanMode ResolveMode(const PlannerShape& shape, PlanMode mode);

// One layer to plan.
struct PlannerInput {
  PlannerShape shape;
  // [num_experts] load per logical expert (tokens, or any non-negative
  // measure); finite, >= 0, with a positive sum.
  std::vector<double> loads;
  // [num_replicas] the plan in force (phy2log), or empty. When given, the
  // planner counts replicas moved against it and can trade balance for
  // movement (PlannerOptions::max_moves, move_weight).
  std::vector<int> previous_phy2log;
  // [num_experts * num_experts] row-major co-activation counts, or empty:
  // entry (a, b), a != b, is how many tokens selected both a and b; entry
  // (a, a) is how many tokens selected a. Symmetric, finite, >= 0.
  std::vector<double> coactivation;
  // Tokens the co-activation counts cover (> 0 when coactivation is given).
  double num_tokens = 0.0;
};

struct PlannerOptions {
  PlanMode mode = PlanMode::kAuto;
  // Search budget in milliseconds for one layer, measured on `clock`. The
  // result is the best plan found by then, never worse than PlanEplb's.
  double time_budget_ms = 10.0;
  // Clock for the time budget; nullptr: no deadline (the search then stops
  // on its work limits only, and the result is deterministic). Not owned.
  const Clock* clock = nullptr;
  // Seed of the search's pseudo-random perturbations.
  uint64_t seed = 1;
  // With a previous plan: at most this many replicas moved (-1: no limit).
  // When the limit binds, the result is the best plan within it, which can
  // be worse than PlanEplb's (the operator chose to limit movement).
  int max_moves = -1;
  // With a previous plan: the objective becomes
  //   max_over_mean + move_weight * moved / num_replicas.
  // 0 keeps pure balance (ties still go to the plan that moves less).
  double move_weight = 0.0;
  // With co-activation counts: plans whose max_over_mean is within this
  // relative tolerance of the best are "near-equal", and among them the one
  // that co-locates co-activated experts best is chosen.
  double locality_tolerance = 0.002;
};

struct Plan {
  // [num_replicas] the logical expert each physical slot holds.
  std::vector<int> phy2log;
  // [num_experts] replicas per logical expert (>= 1; sums to num_replicas).
  std::vector<int> replica_count;
  // Largest GPU load over the mean GPU load.
  double max_over_mean = 0.0;
};

// What PlanReplication returns: the plan and what an operator needs to judge
// it.
struct PlanReport {
  Plan plan;
  PlanMode mode = PlanMode::kGlobal;  // the resolved mode
  double eplb_max_over_mean = 0.0;    // PlanEplb's figure on the same input
  double lower_bound = 0.0;           // LowerBound(): no valid plan is below
  int num_moved = 0;                  // replicas moved vs previous (0 if none)
  // Mean number of distinct GPUs a token's experts span (pairwise estimate,
  // see GpuSpan); -1 without co-activation counts.
  double gpu_span = -1.0;
  bool used_eplb = false;        // the EPLB plan was the best candidate
  bool hit_time_budget = false;  // the deadline cut the search short
};

// EPLB's rebalance_experts, written from its description: (1) pack groups
// onto nodes by greedy balanced packing of group loads; (2) within each node,
// add replicas one by one to the expert with the highest load per replica;
// (3) pack the node's replicas onto its GPUs by the same balanced packing.
// Global mode is the same with one node and one group. Balanced packing
// visits items by weight descending (ties: lower index first) and puts each
// into the lightest pack with room (ties: lowest pack index).
Result<Plan> PlanEplb(const PlannerShape& shape, const std::vector<double>& loads,
                      PlanMode mode = PlanMode::kAuto);

// The default planner (see docs/planner.md). Never worse than PlanEplb on the
// same input unless PlannerOptions::max_moves binds.
Result<PlanReport> PlanReplication(const PlannerInput& input, const PlannerOptions& options);

// A lower bound on max_over_mean over every plan that satisfies the
// constraints of `mode` for these loads.
Result<double> LowerBound(const PlannerShape& shape, const std::vector<double>& loads,
                          PlanMode mode = PlanMode::kAuto);

// Checks `phy2log` against the constraints of `mode` and returns it as a Plan
// with replica_count and max_over_mean filled in. The message names the slot,
// expert or group at fault.
Result<Plan> EvaluatePlan(const PlannerShape& shape, const std::vector<double>& loads,
                          const std::vector<int>& phy2log, PlanMode mode = PlanMode::kAuto);

// Replicas moved from `previous` to `next` (both [num_replicas] phy2log): per
// GPU, the slots of `next` whose expert is not among `previous`'s on that GPU
// (multiset difference; order within a GPU does not count).
int CountMovedReplicas(const PlannerShape& shape, const std::vector<int>& previous,
                       const std::vector<int>& next);

// Mean number of distinct GPUs a token's experts span under `phy2log`, from
// pairwise co-activation counts (PlannerInput::coactivation, num_tokens): the
// second-order inclusion-exclusion estimate
//   sum_e P(e) - sum_{a<b} P(a and b) * P(a, b land on the same GPU),
// with an expert's tokens split evenly over its replicas.
double GpuSpan(const PlannerShape& shape, const std::vector<int>& phy2log,
               const std::vector<double>& coactivation, double num_tokens);

}  // namespace moe::policies

#endif  // MOE_POLICIES_PLANNER_H_
