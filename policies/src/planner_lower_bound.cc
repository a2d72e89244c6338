// The lower bound on max_over_mean, and the exact bottleneck partition of
// groups onto nodes it shares with the planner.

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "moe/policies/planner.h"
#include "planner_internal.h"

namespace moe::policies {
namespace internal {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Largest number of groups the bitmask dynamic programme takes.
constexpr int kMaxPartitionGroups = 24;
// Largest number of candidate blocks it enumerates.
constexpr int64_t kMaxPartitionBlocks = 20000;

}  // namespace

bool NodeFeasible(const NodeProblem& problem, double t, std::vector<int>* counts) {
  const int num_gpus = problem.num_gpus;
  const int n = static_cast<int>(problem.loads.size());
  double total = 0.0;
  int64_t slots = 0;
  std::vector<int> cmin(n);
  // Experts whose fewest replicas are "big" (> t / 2): two big replicas
  // cannot share a GPU, so at most num_gpus replicas are big; the others
  // must take enough replicas to be small (extra slots).
  std::vector<int> big;
  std::vector<int> extra(n, 0);
  int64_t big_units = 0;
  for (int e = 0; e < n; ++e) {
    const double load = problem.loads[e];
    total += load;
    const int c = MinCount(load, t, num_gpus);
    if (c == 0) return false;
    cmin[e] = c;
    slots += c;
    if (load / c > 0.5 * t * (1 + 1e-12)) {
      const double need = std::ceil(2 * load / t * (1 - 1e-12));
      extra[e] = std::max(0, static_cast<int>(need) - c);
      big.push_back(e);
      big_units += c;
    }
  }
  if (total > num_gpus * t * (1 + 1e-12)) return false;
  std::vector<char> keep_big(n, 1);
  if (big_units > num_gpus) {
    // 0/1 knapsack: keep big the set B (sum of cmin <= num_gpus) that saves
    // the most extra slots; everyone else pays its extra.
    const int cap = num_gpus;
    const int m = static_cast<int>(big.size());
    std::vector<std::vector<int64_t>> best(m + 1, std::vector<int64_t>(cap + 1, 0));
    for (int i = 0; i < m; ++i) {
      const int w = cmin[big[i]];
      for (int c = 0; c <= cap; ++c) {
        best[i + 1][c] = best[i][c];
        if (w <= c) best[i + 1][c] = std::max(best[i + 1][c], best[i][c - w] + extra[big[i]]);
      }
    }
    int64_t all_extra = 0;
    for (int e : big)
      all_extra += extra[e];
    slots += all_extra - best[m][cap];
    if (counts != nullptr) {
      int c = cap;
      for (int i = m; i > 0; --i) {
        const bool taken = best[i][c] != best[i - 1][c];
        keep_big[big[i - 1]] = taken ? 1 : 0;
        if (taken) c -= cmin[big[i - 1]];
      }
    }
  }
  if (slots > problem.num_slots()) return false;
  if (counts != nullptr) {
    counts->resize(n);
    for (int e = 0; e < n; ++e)
      (*counts)[e] = cmin[e] + (keep_big[e] ? 0 : extra[e]);
  }
  return true;
}

namespace {
bool Feasible(const NodeProblem& problem, double t) {
  return NodeFeasible(problem, t, nullptr);
}
}  // namespace

int MinCount(double load, double t, int num_gpus) {
  if (load <= 0) return 1;
  if (t <= 0 || load > num_gpus * t * (1 + 1e-12)) return 0;
  // One replica per GPU at most: c >= load / t, c <= num_gpus.
  const double one = std::ceil(load / t * (1 - 1e-12));
  if (one <= num_gpus) return std::max(1, static_cast<int>(one));
  // Two per GPU on the fullest one: 2 * load / c <= t with c > num_gpus; c =
  // 2 * num_gpus always satisfies it here since t >= load / num_gpus.
  const double two = std::ceil(2 * load / t * (1 - 1e-12));
  return std::max(num_gpus + 1, static_cast<int>(two));
}

double NodeLowerBound(const NodeProblem& problem) {
  if (static_cast<int>(problem.loads.size()) > problem.num_slots()) return kInf;
  double total = 0.0, max_load = 0.0;
  for (double load : problem.loads) {
    total += load;
    max_load = std::max(max_load, load);
  }
  double lo = std::max(total, max_load) / problem.num_gpus;
  if (lo <= 0) return 0.0;
  if (Feasible(problem, lo)) return lo;
  double hi = std::max(max_load, lo);
  // The optimum of the relaxation is one of the values k * load / c; bisect
  // to a relative width of 1e-13 and report the infeasible end.
  for (int it = 0; it < 200 && hi - lo > 1e-13 * hi; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (Feasible(problem, mid)) {
      hi = mid;
    } else {
      lo = mid;
    }
  }
  return lo;
}

int64_t CountSubsets(int n, int k, int64_t cap) {
  long double c = 1;
  for (int i = 1; i <= k; ++i) {
    c = c * (n - k + i) / i;
    if (c > cap) return cap;
  }
  return static_cast<int64_t>(c + 0.5);
}

bool BottleneckPartition(int num_groups, int block, const std::function<double(uint32_t)>& value,
                         double* best, std::vector<uint32_t>* blocks,
                         const std::function<double(uint32_t)>& bound) {
  if (num_groups > kMaxPartitionGroups || block <= 0 || num_groups % block != 0) return false;
  if (CountSubsets(num_groups, block, kMaxPartitionBlocks + 1) > kMaxPartitionBlocks) {
    return false;
  }
  const uint32_t full = num_groups == 32 ? ~0u : ((1u << num_groups) - 1);
  std::unordered_map<uint32_t, double> block_value;
  std::unordered_map<uint32_t, std::pair<double, uint32_t>> memo;  // rest -> (value, block)
  auto block_val = [&](uint32_t mask) {
    auto it = block_value.find(mask);
    if (it != block_value.end()) return it->second;
    const double v = value(mask);
    block_value.emplace(mask, v);
    return v;
  };
  // solve(used): the best bottleneck for the groups not in `used`.
  std::function<double(uint32_t)> solve = [&](uint32_t used) -> double {
    if (used == full) return -kInf;
    auto it = memo.find(used);
    if (it != memo.end()) return it->second.first;
    const uint32_t free_mask = full & ~used;
    const int lowest = std::countr_zero(free_mask);
    std::vector<int> others;
    for (int g = lowest + 1; g < num_groups; ++g) {
      if (free_mask & (1u << g)) others.push_back(g);
    }
    double best_here = kInf;
    uint32_t best_block = 0;
    // Enumerate (block - 1)-combinations of `others`.
    const int need = block - 1;
    std::vector<int> idx(need);
    for (int i = 0; i < need; ++i)
      idx[i] = i;
    while (true) {
      uint32_t mask = 1u << lowest;
      for (int i = 0; i < need; ++i)
        mask |= 1u << others[idx[i]];
      const bool skip = bound && bound(mask) >= best_here;
      const double v = skip ? kInf : block_val(mask);
      if (v < best_here) {
        const double rest = solve(used | mask);
        const double total = std::max(v, rest);
        if (total < best_here) {
          best_here = total;
          best_block = mask;
        }
      }
      int i = need - 1;
      while (i >= 0 && idx[i] == static_cast<int>(others.size()) - need + i)
        --i;
      if (i < 0) break;
      ++idx[i];
      for (int j = i + 1; j < need; ++j)
        idx[j] = idx[j - 1] + 1;
    }
    memo[used] = {best_here, best_block};
    return best_here;
  };
  const double v = solve(0);
  if (!std::isfinite(v) && v > 0) return false;
  blocks->clear();
  uint32_t used = 0;
  while (used != full) {
    const uint32_t b = memo.at(used).second;
    if (b == 0) return false;
    blocks->push_back(b);
    used |= b;
  }
  *best = v;
  return true;
}

}  // namespace internal

Result<double> LowerBound(const PlannerShape& shape, const std::vector<double>& loads,
                          PlanMode mode) {
  MOE_RETURN_IF_ERROR(ValidateShape(shape, mode));
  if (static_cast<int>(loads.size()) != shape.num_experts) {
    return Status::InvalidArgument("loads has " + std::to_string(loads.size()) +
                                   " entries; want experts = " + std::to_string(shape.num_experts));
  }
  double total = 0.0;
  for (double l : loads)
    total += l;
  const double mean = total / shape.num_gpus;
  if (mean <= 0) return 1.0;
  const int slots_per_gpu = shape.num_replicas / shape.num_gpus;
  if (ResolveMode(shape, mode) == PlanMode::kGlobal) {
    internal::NodeProblem problem{loads, shape.num_gpus, slots_per_gpu};
    return std::max(1.0, internal::NodeLowerBound(problem) / mean);
  }
  const int num_groups = shape.num_groups;
  const int group_size = shape.num_experts / num_groups;
  const int per_node = num_groups / shape.num_nodes;
  const int gpus_per_node = shape.num_gpus / shape.num_nodes;
  auto node_bound = [&](uint32_t mask) {
    internal::NodeProblem problem;
    problem.num_gpus = gpus_per_node;
    problem.slots_per_gpu = slots_per_gpu;
    for (int g = 0; g < num_groups; ++g) {
      if (!(mask & (1u << g))) continue;
      problem.loads.insert(problem.loads.end(), loads.begin() + g * group_size,
                           loads.begin() + (g + 1) * group_size);
    }
    return internal::NodeLowerBound(problem);
  };
  double best = 0.0;
  std::vector<uint32_t> blocks;
  if (internal::BottleneckPartition(num_groups, per_node, node_bound, &best, &blocks)) {
    return std::max(1.0, best / mean);
  }
  // Too many groups to enumerate: a node holding group g also holds
  // per_node - 1 other groups whose experts take at least one slot each, so
  // g's experts have at most the rest of the node's slots.
  double bound = 0.0;
  for (int g = 0; g < num_groups; ++g) {
    internal::NodeProblem problem;
    problem.num_gpus = gpus_per_node;
    problem.slots_per_gpu = slots_per_gpu;
    problem.loads.assign(loads.begin() + g * group_size, loads.begin() + (g + 1) * group_size);
    const int free_slots = shape.num_replicas / shape.num_nodes - (per_node - 1) * group_size;
    // NodeLowerBound reads the slot count from num_gpus * slots_per_gpu, so
    // check the slot condition with a problem of equal GPU count and a
    // reduced slot count expressed through the loads' counts directly.
    double lo = 0.0, hi = 0.0;
    for (double l : problem.loads)
      hi = std::max(hi, l);
    double sum = 0.0;
    for (double l : problem.loads)
      sum += l;
    lo = std::max(sum, hi) / gpus_per_node;
    auto feasible = [&](double t) {
      int64_t slots = 0;
      for (double l : problem.loads) {
        const int c = internal::MinCount(l, t, gpus_per_node);
        if (c == 0) return false;
        slots += c;
      }
      return slots <= free_slots;
    };
    hi = std::max(hi, lo);
    if (!feasible(lo)) {
      for (int it = 0; it < 200 && hi - lo > 1e-13 * hi; ++it) {
        const double mid = 0.5 * (lo + hi);
        (feasible(mid) ? hi : lo) = mid;
      }
    }
    bound = std::max(bound, lo);
  }
  return std::max(1.0, bound / mean);
}

}  // namespace moe::policies
