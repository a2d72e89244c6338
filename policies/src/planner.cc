// The default replication planner: group-to-node assignment by a lazy exact
// bottleneck search, per-node replica counts and packing by local search,
// then migration and locality preferences; never worse than EPLB.

#include <algorithm>
#include <cmath>
#include <limits>
#include <optional>
#include <unordered_map>

#include "moe/policies/planner.h"
#include "planner_internal.h"

namespace moe::policies {
namespace {

using internal::Deadline;
using internal::Effort;
using internal::NodeProblem;
using internal::NodeSolution;

constexpr double kInf = std::numeric_limits<double>::infinity();
// The hierarchical search stops once its plan is within this relative gap
// of the lower bound: closer is below the noise of measured loads, and the
// deep node search spends most of its time on the last fraction of a
// percent.
constexpr double kSearchGap = 1e-3;

Status ValidateInput(const PlannerInput& input, PlanMode mode) {
  const PlannerShape& shape = input.shape;
  MOE_RETURN_IF_ERROR(ValidateShape(shape, mode));
  if (static_cast<int>(input.loads.size()) != shape.num_experts) {
    return Status::InvalidArgument("loads has " + std::to_string(input.loads.size()) +
                                   " entries; want experts = " + std::to_string(shape.num_experts));
  }
  double total = 0.0;
  for (int e = 0; e < shape.num_experts; ++e) {
    const double l = input.loads[e];
    if (!std::isfinite(l) || l < 0) {
      return Status::InvalidArgument("load of expert " + std::to_string(e) + " is " +
                                     std::to_string(l) + "; loads must be finite and >= 0");
    }
    total += l;
  }
  if (!(total > 0)) return Status::InvalidArgument("loads sum to 0; nothing to balance");
  if (!input.previous_phy2log.empty()) {
    auto prev = EvaluatePlan(shape, input.loads, input.previous_phy2log, mode);
    if (!prev.ok()) {
      return prev.status().WithContext("previous plan is not valid in mode " +
                                       std::string(PlanModeName(ResolveMode(shape, mode))));
    }
  }
  if (!input.coactivation.empty()) {
    const size_t want = static_cast<size_t>(shape.num_experts) * shape.num_experts;
    if (input.coactivation.size() != want) {
      return Status::InvalidArgument("coactivation has " +
                                     std::to_string(input.coactivation.size()) +
                                     " entries; want experts * experts = " + std::to_string(want));
    }
    for (double v : input.coactivation) {
      if (!std::isfinite(v) || v < 0) {
        return Status::InvalidArgument("coactivation entries must be finite and >= 0");
      }
    }
    if (!(input.num_tokens > 0)) {
      return Status::InvalidArgument("coactivation needs a positive token count");
    }
  }
  return Status::Ok();
}

// Hierarchical search: which blocks of groups go to which node, and each
// node's plan. With the blocks enumerable (BlockPartition), a lazy bottleneck
// search: the best partition over optimistic block values (the node's solved
// max load, else its lower bound) is found exactly, its unsolved blocks are
// solved (deep where the quick solve lands above the partition's level),
// and this repeats until the best partition is fully solved. Otherwise a
// local search swaps groups between the bottleneck node and the others.
class HierarchicalSearch {
 public:
  HierarchicalSearch(const PlannerShape& shape, const std::vector<double>& loads,
                     const internal::BlockPartition* blocks,
                     const internal::HierarchicalBound* bound, const Deadline& deadline,
                     std::mt19937_64* rng)
      : shape_(shape),
        loads_(loads),
        blocks_(blocks),
        bound_(bound),
        deadline_(deadline),
        rng_(rng) {
    slots_per_gpu_ = shape.num_replicas / shape.num_gpus;
    if (bound_ != nullptr) target_ = bound_->value * (1 + kSearchGap);
  }

  // Returns phy2log, or empty when the deadline left no complete plan.
  std::vector<int> Run(const std::vector<uint32_t>& incumbent_blocks) {
    std::vector<uint32_t> blocks = incumbent_blocks;
    double incumbent = BlocksValue(blocks, target_, /*deep=*/false);
    if (blocks_ != nullptr && blocks_->ok() && bound_ != nullptr) {
      LazyPartitionSearch(&blocks, &incumbent);
    } else {
      LocalSearchOnGroups(&blocks, &incumbent);
    }
    return Assemble(blocks);
  }

 private:
  struct BlockEntry {
    NodeProblem problem;
    std::vector<int> experts;  // local id -> global expert
    double bound = 0.0;
    bool solved = false;
    bool deep = false;
    NodeSolution solution;
  };

  BlockEntry& Entry(uint32_t mask) {
    auto it = cache_.find(mask);
    if (it != cache_.end()) return it->second;
    BlockEntry entry;
    entry.problem = internal::BlockProblem(shape_, loads_, mask);
    const int group_size = shape_.num_experts / shape_.num_groups;
    for (int g = 0; g < shape_.num_groups; ++g) {
      if (!(mask & (1u << g))) continue;
      for (int i = 0; i < group_size; ++i)
        entry.experts.push_back(g * group_size + i);
    }
    entry.bound = internal::NodeLowerBound(entry.problem);
    return cache_.emplace(mask, std::move(entry)).first->second;
  }

  // The block solved quickly, then (when `deep`) deeply when its max load is
  // above `level` (the largest max load that does not matter: another
  // node's, or the bound's). Both stop at max(level, target_).
  // With `first_round`, the deadline is not consulted and the deep search
  // is short: the first partition the search tries is solved whatever the
  // clock says, as a wall-clock budget on a busy machine can run out before
  // the planner had the processor at all.
  BlockEntry& Solved(uint32_t mask, double level, bool deep = true, bool first_round = false) {
    BlockEntry& entry = Entry(mask);
    const double stop = std::max(level, target_);
    const Deadline& deadline = first_round ? no_deadline_ : deadline_;
    if (!entry.solved) {
      entry.solution = internal::SolveNode(entry.problem, Effort::kQuick, deadline, rng_, stop);
      entry.solved = true;
    }
    if (deep && !entry.deep && entry.solution.max_load > stop && !deadline.Expired()) {
      NodeSolution better = internal::SolveNode(
          entry.problem, first_round ? Effort::kShort : Effort::kDeep, deadline, rng_, stop);
      entry.deep = !first_round;
      if (better.max_load < entry.solution.max_load) entry.solution = std::move(better);
    }
    return entry;
  }

  double BlocksValue(const std::vector<uint32_t>& blocks, double level, bool deep = true) {
    double v = 0.0;
    for (uint32_t b : blocks)
      v = std::max(v, Solved(b, level, deep).solution.max_load);
    return v;
  }

  void LazyPartitionSearch(std::vector<uint32_t>* blocks, double* incumbent) {
    // A block's value is its bound until Solved(deep) has seen it: a quick
    // solution alone is no bound and could hide a block the deep search
    // brings down to its bound. The level only rises from round to round,
    // so a block once within it stays within it.
    std::vector<double> value = bound_->block_bound;
    // A block solved within target_ keeps its bound as its value: any
    // partition of such blocks ends the search, so the programme need not
    // tell them apart.
    std::vector<int> partition;
    for (bool first = true; *incumbent > target_ && (first || !deadline_.Expired());
         first = false) {
      const double level = blocks_->Solve(value, &partition, *incumbent * (1 - 1e-12));
      if (partition.empty()) break;
      double v = 0.0;
      for (int i : partition) {
        const double solved = Solved(blocks_->mask(i), level, true, first).solution.max_load;
        if (solved > target_) value[i] = std::max(value[i], solved);
        v = std::max(v, solved);
      }
      if (v < *incumbent) {
        *incumbent = v;
        blocks->clear();
        for (int i : partition)
          blocks->push_back(blocks_->mask(i));
      }
    }
  }

  // Without the exact partition: swap groups between the bottleneck node and
  // the others while that lowers the bottleneck.
  void LocalSearchOnGroups(std::vector<uint32_t>* blocks, double* value) {
    bool improved = true;
    while (improved && !deadline_.Expired()) {
      improved = false;
      size_t worst = 0;
      for (size_t n = 1; n < blocks->size(); ++n) {
        if (Entry((*blocks)[n]).solution.max_load > Entry((*blocks)[worst]).solution.max_load) {
          worst = n;
        }
      }
      for (size_t n = 0; n < blocks->size() && !improved; ++n) {
        if (n == worst) continue;
        for (int a = 0; a < shape_.num_groups && !improved; ++a) {
          if (!((*blocks)[worst] & (1u << a))) continue;
          for (int b = 0; b < shape_.num_groups && !improved; ++b) {
            if (!((*blocks)[n] & (1u << b))) continue;
            const uint32_t nw = ((*blocks)[worst] & ~(1u << a)) | (1u << b);
            const uint32_t nn = ((*blocks)[n] & ~(1u << b)) | (1u << a);
            if (std::max(Entry(nw).bound, Entry(nn).bound) >= *value) continue;
            const double v = std::max(Solved(nw, target_).solution.max_load,
                                      Solved(nn, target_).solution.max_load);
            if (v < *value * (1 - 1e-12)) {
              (*blocks)[worst] = nw;
              (*blocks)[n] = nn;
              *value = BlocksValue(*blocks, target_);
              improved = true;
            }
            if (deadline_.Expired()) return;
          }
        }
      }
    }
  }

  std::vector<int> Assemble(const std::vector<uint32_t>& blocks) {
    std::vector<int> phy2log(shape_.num_replicas, -1);
    const int slots_per_node = shape_.num_replicas / shape_.num_nodes;
    for (size_t n = 0; n < blocks.size(); ++n) {
      const BlockEntry& entry = Entry(blocks[n]);
      for (size_t gpu = 0; gpu < entry.solution.gpus.size(); ++gpu) {
        for (size_t k = 0; k < entry.solution.gpus[gpu].size(); ++k) {
          phy2log[n * slots_per_node + gpu * slots_per_gpu_ + k] =
              entry.experts[entry.solution.gpus[gpu][k]];
        }
      }
    }
    return phy2log;
  }

  const PlannerShape& shape_;
  const std::vector<double>& loads_;
  const internal::BlockPartition* blocks_;
  const internal::HierarchicalBound* bound_;
  const Deadline& deadline_;
  std::mt19937_64* rng_;
  int slots_per_gpu_ = 1;
  double target_ = 0.0;  // the bound, within kSearchGap: no search below it
  const Deadline no_deadline_{nullptr, 0.0};
  std::unordered_map<uint32_t, BlockEntry> cache_;
};

// The node blocks (group bitmasks) of a valid hierarchical plan.
std::vector<uint32_t> BlocksOf(const PlannerShape& shape, const std::vector<int>& phy2log) {
  const int group_size = shape.num_experts / shape.num_groups;
  const int slots_per_node = shape.num_replicas / shape.num_nodes;
  std::vector<uint32_t> blocks(shape.num_nodes, 0);
  for (int slot = 0; slot < shape.num_replicas; ++slot) {
    blocks[slot / slots_per_node] |= 1u << (phy2log[slot] / group_size);
  }
  return blocks;
}

std::vector<int> SolveGlobal(const PlannerShape& shape, const std::vector<double>& loads,
                             const Deadline& deadline, std::mt19937_64* rng) {
  NodeProblem problem{loads, shape.num_gpus, shape.num_replicas / shape.num_gpus};
  NodeSolution s = internal::SolveNode(problem, Effort::kDeep, deadline, rng);
  std::vector<int> phy2log;
  for (const auto& gpu : s.gpus)
    phy2log.insert(phy2log.end(), gpu.begin(), gpu.end());
  return phy2log;
}

}  // namespace

Result<PlanReport> PlanReplication(const PlannerInput& input, const PlannerOptions& options) {
  MOE_RETURN_IF_ERROR(ValidateInput(input, options.mode));
  const PlannerShape& shape = input.shape;
  const PlanMode mode = ResolveMode(shape, options.mode);
  const bool hierarchical = mode == PlanMode::kHierarchical;
  const int num_nodes = hierarchical ? shape.num_nodes : 1;
  const Deadline deadline(options.clock, options.time_budget_ms);
  std::mt19937_64 rng(options.seed);

  PlanReport report;
  report.mode = mode;
  MOE_ASSIGN_OR_RETURN(Plan eplb, PlanEplb(shape, input.loads, mode));
  report.eplb_max_over_mean = eplb.max_over_mean;
  // Hierarchical mode with enumerable blocks: the bound's per-block node
  // bounds steer the search, so compute them once for both.
  std::optional<internal::BlockPartition> blocks;
  std::optional<internal::HierarchicalBound> bound;
  if (hierarchical) {
    blocks.emplace(shape.num_groups, shape.num_groups / shape.num_nodes);
    if (blocks->ok()) bound = internal::ComputeHierarchicalBound(shape, input.loads, *blocks);
  }
  if (bound.has_value()) {
    double total = 0.0;
    for (double l : input.loads)
      total += l;
    report.lower_bound = std::max(1.0, bound->value / (total / shape.num_gpus));
  } else {
    MOE_ASSIGN_OR_RETURN(report.lower_bound, LowerBound(shape, input.loads, mode));
  }

  // Candidates, best balance first considered; all valid by construction and
  // re-checked by EvaluatePlan.
  std::vector<Plan> candidates;
  candidates.push_back(eplb);
  if (hierarchical && shape.num_groups <= 32) {
    HierarchicalSearch search(shape, input.loads, blocks.has_value() ? &*blocks : nullptr,
                              bound.has_value() ? &*bound : nullptr, deadline, &rng);
    std::vector<int> phy2log = search.Run(BlocksOf(shape, eplb.phy2log));
    if (!phy2log.empty()) {
      auto plan = EvaluatePlan(shape, input.loads, phy2log, mode);
      if (plan.ok()) candidates.push_back(std::move(plan).value());
    }
  } else if (!hierarchical) {
    auto plan =
        EvaluatePlan(shape, input.loads, SolveGlobal(shape, input.loads, deadline, &rng), mode);
    if (plan.ok()) candidates.push_back(std::move(plan).value());
  }
  size_t best_fresh = 0;
  for (size_t k = 1; k < candidates.size(); ++k) {
    if (candidates[k].max_over_mean < candidates[best_fresh].max_over_mean) best_fresh = k;
  }

  const std::vector<int>& previous = input.previous_phy2log;
  const double num_replicas = shape.num_replicas;
  auto objective = [&](const Plan& plan, int moved) {
    return plan.max_over_mean + options.move_weight * moved / num_replicas;
  };
  Plan chosen = candidates[best_fresh];
  report.used_eplb = best_fresh == 0;
  if (!previous.empty()) {
    // Relabel every candidate to keep what it can in place, add the previous
    // plan and the migration-limited improvements of it, and pick by the
    // objective within the move limit; ties go to fewer moves.
    std::vector<std::pair<Plan, bool>> options_list;  // plan, is EPLB's
    for (size_t k = 0; k < candidates.size(); ++k) {
      auto aligned = EvaluatePlan(
          shape, input.loads,
          internal::AlignToPrevious(shape, num_nodes, candidates[k].phy2log, previous), mode);
      if (aligned.ok()) options_list.emplace_back(std::move(aligned).value(), k == 0);
    }
    auto prev_plan = EvaluatePlan(shape, input.loads, previous, mode);
    if (prev_plan.ok()) options_list.emplace_back(std::move(prev_plan).value(), false);
    auto improved = EvaluatePlan(
        shape, input.loads,
        internal::ImproveFromPrevious(shape, num_nodes, input.loads, previous, options.max_moves,
                                      options.move_weight, deadline),
        mode);
    if (improved.ok()) options_list.emplace_back(std::move(improved).value(), false);
    int best = -1, best_moved = 0;
    double best_value = kInf;
    for (size_t k = 0; k < options_list.size(); ++k) {
      const int moved = CountMovedReplicas(shape, previous, options_list[k].first.phy2log);
      if (options.max_moves >= 0 && moved > options.max_moves) continue;
      const double v = objective(options_list[k].first, moved);
      const bool tie = std::abs(v - best_value) <= 1e-12 * std::max(1.0, best_value);
      if (best < 0 || (v < best_value && !tie) || (tie && moved < best_moved)) {
        best = static_cast<int>(k);
        best_value = v;
        best_moved = moved;
      }
    }
    if (best >= 0) {
      chosen = options_list[best].first;
      report.used_eplb = options_list[best].second;
    }
  }
  if (!input.coactivation.empty()) {
    const double max_ratio = chosen.max_over_mean * (1 + options.locality_tolerance);
    std::vector<int> local = internal::ImproveLocality(
        shape, num_nodes, input.loads, chosen.phy2log, input.coactivation,
        std::min(max_ratio, std::max(chosen.max_over_mean, report.eplb_max_over_mean)), deadline);
    auto plan = EvaluatePlan(shape, input.loads, local, mode);
    // Locality never costs movement: with a previous plan it may only keep
    // or lower the replicas moved.
    const bool within_moves =
        previous.empty() || CountMovedReplicas(shape, previous, local) <=
                                CountMovedReplicas(shape, previous, chosen.phy2log);
    if (plan.ok() && within_moves) chosen = std::move(plan).value();
    report.gpu_span = GpuSpan(shape, chosen.phy2log, input.coactivation, input.num_tokens);
  }
  report.num_moved = previous.empty() ? 0 : CountMovedReplicas(shape, previous, chosen.phy2log);
  report.hit_time_budget = deadline.Expired();
  report.plan = std::move(chosen);
  return report;
}

}  // namespace moe::policies
