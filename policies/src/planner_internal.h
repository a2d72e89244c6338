// Internals of the replication planner shared by its source files. Not part of
// the public API; shapes are documented per function.

#ifndef MOE_POLICIES_SRC_PLANNER_INTERNAL_H_
#define MOE_POLICIES_SRC_PLANNER_INTERNAL_H_

#include <cstdint>
#include <functional>
#include <limits>
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

// kShort: kDeep with a small no-progress limit (16 rounds instead of
// 60 + 4 * num_gpus).
enum class Effort { kQuick, kShort, kDeep };

// A node's search stops once its max load is within this relative gap of the
// node's lower bound.
inline constexpr double kStopGap = 1e-4;

// Solves a node: candidate replica counts, greedy and differencing packings,
// swap local search; kDeep adds count exchanges and perturbations until the
// deadline or its work limit. The search stops early once the max load is
// at most `target` (absolute) or within kStopGap of the node's lower bound.
NodeSolution SolveNode(const NodeProblem& problem, Effort effort, const Deadline& deadline,
                       std::mt19937_64* rng, double target = 0.0);

// Recomputes max_load of `solution` for `problem`.
double NodeMaxLoad(const NodeProblem& problem, const NodeSolution& solution);

// Every block of `block` groups out of num_groups (a bitmask per block), and
// the exact bottleneck partition of the groups into such blocks over a value
// per block. Built once per shape; Solve is const and thread-compatible.
class BlockPartition {
 public:
  // ok() is false when there are too many groups or blocks to enumerate
  // (more than 24 groups or 20 000 blocks) or block does not divide
  // num_groups.
  BlockPartition(int num_groups, int block);
  bool ok() const { return ok_; }
  int num_blocks() const { return static_cast<int>(masks_.size()); }
  uint32_t mask(int i) const { return masks_[i]; }
  // The index of the block with this mask, or -1.
  int Index(uint32_t mask) const;
  // Minimises the largest values[i] over the blocks i of a partition
  // (values: [num_blocks]; +infinity excludes a block), among partitions
  // whose value is below `upper`. Returns that value (+infinity when there
  // is none) and fills `partition` with the block indices, one per node
  // (empty when none). Exact: a dynamic programme over the groups placed so
  // far, each state trying the blocks of its lowest free group in
  // increasing value until one cannot improve.
  double Solve(const std::vector<double>& values, std::vector<int>* partition,
               double upper = std::numeric_limits<double>::infinity()) const;

 private:
  bool ok_ = false;
  int num_groups_ = 0;
  std::vector<uint32_t> masks_;
  std::vector<int> flat_index_;  // [1 << num_groups] when num_groups <= 20
};

// The node problem of block `mask` of a hierarchical shape: the experts of
// its groups (in id order), gpus_per_node GPUs, slots_per_gpu slots each.
NodeProblem BlockProblem(const PlannerShape& shape, const std::vector<double>& loads,
                         uint32_t mask);

// The hierarchical lower bound (absolute max GPU load) over `blocks`, with
// the node bound of every block: NodeLowerBound for all, raised to
// NodeLowerBoundRefined on the blocks of the partitions the search visits
// (lazily: refine the blocks of the best partition until it stops changing;
// the result is the exact bottleneck of refined bounds, as any value between
// a block's basic and refined bound keeps the minimum valid).
struct HierarchicalBound {
  double value = 0.0;
  std::vector<double> block_bound;  // [num_blocks]
  std::vector<char> refined;        // [num_blocks]: block_bound is the refined bound
  std::vector<int> partition;       // a partition attaining `value`
};
HierarchicalBound ComputeHierarchicalBound(const PlannerShape& shape,
                                           const std::vector<double>& loads,
                                           const BlockPartition& blocks);

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
