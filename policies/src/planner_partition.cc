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
// Largest group count indexed by a flat table of 2^groups entries, for the
// block index (4 bytes each) and for Solve's memo (16 bytes each).
constexpr int kMaxFlatGroups = 20;
constexpr int kMaxFlatMemoGroups = 16;

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
  by_lowest_.assign(num_groups, {});
  for (int i = 0; i < num_blocks(); ++i)
    by_lowest_[std::countr_zero(masks_[i])].push_back(i);
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
  std::vector<std::vector<int>> sorted = by_lowest_;
  for (auto& list : sorted) {
    std::stable_sort(list.begin(), list.end(), [&](int a, int b) { return values[a] < values[b]; });
  }
  const uint32_t full = num_groups_ == 32 ? ~0u : ((1u << num_groups_) - 1);
  // memo[used]: the best bottleneck of the groups outside `used`, and the
  // block of the lowest free group that attains it (-1: none). Flat up to
  // kMaxFlatMemoGroups groups, else hashed.
  const bool flat = num_groups_ <= kMaxFlatMemoGroups;
  std::vector<std::pair<double, int>> flat_memo(flat ? size_t{1} << num_groups_ : 0,
                                                {std::nan(""), -1});
  std::unordered_map<uint32_t, std::pair<double, int>> hashed;
  auto find = [&](uint32_t used) -> const std::pair<double, int>* {
    if (flat) return std::isnan(flat_memo[used].first) ? nullptr : &flat_memo[used];
    auto it = hashed.find(used);
    return it == hashed.end() ? nullptr : &it->second;
  };
  auto solve = [&](auto&& self, uint32_t used) -> double {
    if (used == full) return -kInf;
    if (const auto* hit = find(used)) return hit->first;
    const int lowest = std::countr_zero(full & ~used);
    double best = upper;
    int choice = -1;
    for (int i : sorted[lowest]) {
      const double v = values[i];
      if (!(v < best)) break;
      if (masks_[i] & used) continue;
      const double total = std::max(v, self(self, used | masks_[i]));
      if (total < best) {
        best = total;
        choice = i;
      }
    }
    (flat ? flat_memo[used] : hashed[used]) = {best, choice};
    return best;
  };
  const double best = solve(solve, 0);
  if (find(0)->second < 0) return kInf;
  for (uint32_t used = 0; used != full;) {
    const int i = find(used)->second;
    partition->push_back(i);
    used |= masks_[i];
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
