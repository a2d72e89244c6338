// Group-to-node partitions: every block of groups, the exact bottleneck
// partition over a value per block, and the hierarchical lower bound built on
// it.

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "planner_internal.h"

namespace moe::policies::internal {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Largest number of groups and of blocks the partition enumerates.
constexpr int kMaxPartitionGroups = 24;
constexpr int64_t kMaxPartitionBlocks = 20000;
// Largest group count indexed by a flat table of 2^groups block indices.
constexpr int kMaxFlatGroups = 20;

int64_t CountSubsets(int n, int k, int64_t cap) {
  long double c = 1;
  for (int i = 1; i <= k; ++i) {
    c = c * (n - k + i) / i;
    if (c > cap) return cap;
  }
  return static_cast<int64_t>(c + 0.5);
}

}  // namespace

BlockPartition::BlockPartition(int num_groups, int block) : num_groups_(num_groups) {
  if (num_groups <= 0 || num_groups > kMaxPartitionGroups || block <= 0 ||
      num_groups % block != 0 ||
      CountSubsets(num_groups, block, kMaxPartitionBlocks + 1) > kMaxPartitionBlocks) {
    return;
  }
  // Blocks in increasing mask order: next combination by Gosper's hack.
  const uint64_t limit = uint64_t{1} << num_groups;
  for (uint64_t m = (uint64_t{1} << block) - 1; m < limit;) {
    masks_.push_back(static_cast<uint32_t>(m));
    const uint64_t c = m & (~m + 1);
    const uint64_t r = m + c;
    m = (((r ^ m) >> 2) / c) | r;
  }
  if (num_groups <= kMaxFlatGroups) {
    flat_index_.assign(size_t{1} << num_groups, -1);
    for (int i = 0; i < num_blocks(); ++i)
      flat_index_[masks_[i]] = i;
  }
  ok_ = true;
}

int BlockPartition::Index(uint32_t mask) const {
  if (!flat_index_.empty()) return mask < flat_index_.size() ? flat_index_[mask] : -1;
  auto it = std::lower_bound(masks_.begin(), masks_.end(), mask);
  return it != masks_.end() && *it == mask ? static_cast<int>(it - masks_.begin()) : -1;
}

double BlockPartition::Solve(const std::vector<double>& values, std::vector<int>* partition,
                             double upper) const {
  partition->clear();
  if (!ok_) return kInf;
  // least[g]: the smallest value of a block holding group g; the rest's
  // bottleneck is at least the largest least[g] over its groups.
  std::vector<double> least(num_groups_, kInf);
  for (int i = 0; i < num_blocks(); ++i) {
    for (uint32_t m = masks_[i]; m != 0; m &= m - 1)
      least[std::countr_zero(m)] = std::min(least[std::countr_zero(m)], values[i]);
  }
  // Groups relabelled by least[] descending, so that each state branches on
  // its most constrained free group (the hot one first) and the floor
  // prunes early. mask[i]: block i in the new labels.
  std::vector<int> order(num_groups_), label(num_groups_);
  for (int g = 0; g < num_groups_; ++g)
    order[g] = g;
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return least[a] > least[b]; });
  for (int k = 0; k < num_groups_; ++k)
    label[order[k]] = k;
  std::vector<uint32_t> mask(num_blocks());
  std::vector<std::vector<int>> sorted(num_groups_);
  for (int i = 0; i < num_blocks(); ++i) {
    uint32_t m = 0;
    for (uint32_t b = masks_[i]; b != 0; b &= b - 1)
      m |= 1u << label[std::countr_zero(b)];
    mask[i] = m;
    sorted[std::countr_zero(m)].push_back(i);
  }
  for (auto& list : sorted) {
    std::stable_sort(list.begin(), list.end(), [&](int x, int y) { return values[x] < values[y]; });
  }
  std::vector<double> least_label(num_groups_);
  for (int g = 0; g < num_groups_; ++g)
    least_label[label[g]] = least[g];
  const uint32_t full = num_groups_ == 32 ? ~0u : ((1u << num_groups_) - 1);
  // memo[used]: for the groups outside `used`, the best bottleneck when
  // `exact`, else a lower bound on it (a search under that cutoff found
  // nothing); `choice`: the block of the lowest free group attaining it.
  // Hashed: the pruning below visits few states.
  struct Memo {
    double value = 0.0;
    int choice = -1;
    bool exact = false;
  };
  std::unordered_map<uint32_t, Memo> memo;
  memo.reserve(1024);
  auto find = [&](uint32_t used) -> const Memo* {
    auto it = memo.find(used);
    return it == memo.end() ? nullptr : &it->second;
  };
  auto solve = [&](auto&& self, uint32_t used, double cutoff) -> double {
    if (used == full) return -kInf;
    if (const Memo* hit = find(used)) {
      if (hit->exact || hit->value >= cutoff) return hit->value;
    }
    double floor = -kInf;
    for (uint32_t m = full & ~used; m != 0; m &= m - 1)
      floor = std::max(floor, least_label[std::countr_zero(m)]);
    if (floor >= cutoff) return floor;
    const int lowest = std::countr_zero(full & ~used);
    double best = cutoff;
    int choice = -1;
    for (int i : sorted[lowest]) {
      const double v = values[i];
      if (!(v < best)) break;
      if (mask[i] & used) continue;
      const double total = std::max(v, self(self, used | mask[i], best));
      if (total < best) {
        best = total;
        choice = i;
      }
    }
    memo[used] = {best, choice, choice >= 0};
    return best;
  };
  const double best = solve(solve, 0, upper);
  const Memo* root = find(0);
  if (root == nullptr || root->choice < 0) return kInf;
  for (uint32_t used = 0; used != full;) {
    const int i = find(used)->choice;
    partition->push_back(i);
    used |= mask[i];
  }
  return best;
}

NodeProblem BlockProblem(const PlannerShape& shape, const std::vector<double>& loads,
                         uint32_t mask) {
  NodeProblem problem;
  problem.num_gpus = shape.num_gpus / shape.num_nodes;
  problem.slots_per_gpu = shape.num_replicas / shape.num_gpus;
  const int group_size = shape.num_experts / shape.num_groups;
  for (int g = 0; g < shape.num_groups; ++g) {
    if (!(mask & (1u << g))) continue;
    problem.loads.insert(problem.loads.end(), loads.begin() + g * group_size,
                         loads.begin() + (g + 1) * group_size);
  }
  return problem;
}

HierarchicalBound ComputeHierarchicalBound(const PlannerShape& shape,
                                           const std::vector<double>& loads,
                                           const BlockPartition& blocks) {
  HierarchicalBound result;
  const int n = blocks.num_blocks();
  result.block_bound.resize(n);
  result.refined.assign(n, 0);
  for (int i = 0; i < n; ++i)
    result.block_bound[i] = NodeLowerBound(BlockProblem(shape, loads, blocks.mask(i)));
  // Each round refines the blocks of the best partition; values only rise,
  // so when no block of the best partition changes it is optimal for the
  // refined bounds too.
  for (;;) {
    result.value = blocks.Solve(result.block_bound, &result.partition);
    bool changed = false;
    for (int i : result.partition) {
      if (result.refined[i]) continue;
      result.refined[i] = 1;
      const double refined = NodeLowerBoundRefined(BlockProblem(shape, loads, blocks.mask(i)));
      if (refined > result.block_bound[i]) {
        result.block_bound[i] = refined;
        changed = true;
      }
    }
    if (!changed) break;
  }
  return result;
}

}  // namespace moe::policies::internal
