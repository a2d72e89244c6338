// Internals of the replication planner shared by its source files. Not part of
// the public API; shapes are documented per function.

#ifndef MOE_POLICIES_SRC_PLANNER_INTERNAL_H_
#define MOE_POLICIES_SRC_PLANNER_INTERNAL_H_

#include <cstdint>
#include <functional>
#include <random>
#include <vector>

#include "moe/common/clock.h"
#include "moe/policies/planner.h"

namespace moe::policies::internal {

// A search deadline on an optional clock; without a clock it never expires.
class Deadline {
 public:
  Deadline(const Clock* clock, double budget_ms);
  bool Expired() const;

 private:
  const Clock* clock_;
  int64_t deadline_nanos_ = 0;
};

// EPLB's balanced packing: items by weight descending (ties: lower index
// first), each into the lightest pack with room (ties: lowest pack). Every
// pack receives weights.size() / num_packs items. pack[i], rank[i]: the pack
// of item i and its position in that pack. With one item per pack EPLB keeps
// the identity, and so does this.
void BalancedPacking(const std::vector<double>& weights, int num_packs, std::vector<int>* pack,
                     std::vector<int>* rank);

// EPLB's replication: one replica per expert, then each further slot to the
// expert with the highest load per replica (ties: lowest index). Returns
// [loads.size()] counts summing to num_slots; `order` (optional) receives the
// expert each added slot went to, in order.
std::vector<int> ReplicateGreedy(const std::vector<double>& loads, int num_slots,
                                 std::vector<int>* order = nullptr);

// One node's subproblem: place the replicas of `loads.size()` experts (ids
// local to the node) on num_gpus GPUs of slots_per_gpu slots each.
struct NodeProblem {
  std::vector<double> loads;
  int num_gpus = 1;
  int slots_per_gpu = 1;
  int num_slots() const { return num_gpus * slots_per_gpu; }
};

// A solution of a NodeProblem: counts per expert and, per GPU, the local
// expert ids of its slots.
struct NodeSolution {
  std::vector<int> counts;             // [num_experts]
  std::vector<std::vector<int>> gpus;  // [num_gpus][slots_per_gpu]
  double max_load = 0.0;               // absolute (not over the mean)
};

// The smallest T such that no plan of `problem` can have max GPU load below
// it, from three necessary conditions: the GPU mean, and for every expert a
// replica count c >= 1 with load * ceil(c / num_gpus) / c <= T (some GPU
// holds ceil(c / num_gpus) of its replicas), the counts fitting the slots.
// +infinity when the experts outnumber the slots.
double NodeLowerBound(const NodeProblem& problem);

// NodeLowerBound raised by further necessary conditions (docs/planner.md,
// "The lower bound"): every expert's replicas share their GPUs with at least
// the smallest other items, and of the num_gpus + 1 largest replicas two
// share a GPU with slots_per_gpu - 2 others; both over every choice of
// replica counts. Never below NodeLowerBound; costlier (for reports).
double NodeLowerBoundRefined(const NodeProblem& problem);

// Whether max GPU load t passes NodeLowerBound's necessary conditions (plus:
// at most num_gpus replicas larger than t / 2, as two cannot share a GPU).
// When it does and `counts` is given, fills it with fewest replica counts
// meeting them (summing to at most the node's slots).
bool NodeFeasible(const NodeProblem& problem, double t, std::vector<int>* counts);

// Minimal replica count of an expert with `load` such that
// load * ceil(c / num_gpus) / c <= t; 0 when impossible (t < load / num_gpus).
int MinCount(double load, double t, int num_gpus);

enum class Effort { kQuick, kDeep };

// A node's search stops once its max load is within this relative gap of the
// node's lower bound.
inline constexpr double kStopGap = 1e-4;

// Solves a node: candidate replica counts, greedy and differencing packings,
// swap local search; kDeep adds count exchanges and perturbations until the
// deadline or its work limit.
NodeSolution SolveNode(const NodeProblem& problem, Effort effort, const Deadline& deadline,
                       std::mt19937_64* rng);

// Recomputes max_load of `solution` for `problem`.
double NodeMaxLoad(const NodeProblem& problem, const NodeSolution& solution);

// Bottleneck partition of num_groups groups into blocks of `block` groups
// (bitmasks): minimises the largest value(block mask). `value` may return
// +infinity to exclude a block. Exact by dynamic programming; returns false
// (and leaves outputs alone) when num_groups is too large for it.
// `bound` (optional) is a cheap lower bound on `value`, used to skip blocks.
bool BottleneckPartition(int num_groups, int block, const std::function<double(uint32_t)>& value,
                         double* best, std::vector<uint32_t>* blocks,
                         const std::function<double(uint32_t)>& bound = nullptr);

// Number of block-subsets C(num_groups, block), saturating at `cap`.
int64_t CountSubsets(int num_groups, int block, int64_t cap);

// Minimum-cost assignment of rows to columns of a square cost matrix
// ([n * n], row-major): returns column[row]. Hungarian method, O(n^3).
std::vector<int> MinCostAssignment(const std::vector<double>& cost, int n);

// Relabels nodes and GPUs of `plan` (a permutation that keeps every
// constraint and the GPU loads) and orders slots within GPUs to keep as many
// replicas of `previous` in place as possible. Both are [num_replicas].
// `num_nodes` is 1 in global mode.
std::vector<int> AlignToPrevious(const PlannerShape& shape, int num_nodes,
                                 const std::vector<int>& plan, const std::vector<int>& previous);

// Balance-improving steps from `previous` (a valid plan), each a swap of two
// replicas between GPUs or the change of one slot's expert, greedily by
// improvement of max_over_mean - move_weight * moved / num_replicas, while
// moved <= max_moves (-1: no limit). Swaps and changes stay inside a node in
// hierarchical mode (num_nodes > 1). Returns the best plan visited.
std::vector<int> ImproveFromPrevious(const PlannerShape& shape, int num_nodes,
                                     const std::vector<double>& loads,
                                     const std::vector<int>& previous, int max_moves,
                                     double move_weight, const Deadline& deadline);

// Swaps replicas between GPUs (inside nodes when num_nodes > 1) that raise
// the co-location of co-activated experts while max_over_mean stays within
// max_ratio; returns the improved phy2log.
std::vector<int> ImproveLocality(const PlannerShape& shape, int num_nodes,
                                 const std::vector<double>& loads, const std::vector<int>& plan,
                                 const std::vector<double>& coactivation, double max_ratio,
                                 const Deadline& deadline);

}  // namespace moe::policies::internal

#endif  // MOE_POLICIES_SRC_PLANNER_INTERNAL_H_
