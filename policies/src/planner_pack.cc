// One node's subproblem: replica counts and the packing of replicas onto
// GPUs with exactly slots_per_gpu slots each (a cardinality-constrained
// multiway partition), by greedy and differencing starts and local search.

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <queue>

#include "planner_internal.h"

namespace moe::policies::internal {
namespace {

// Items of a packing: replica sizes, sorted by size descending, and the
// expert each belongs to.
struct Items {
  std::vector<double> size;
  std::vector<int> expert;
};

Items MakeItems(const std::vector<double>& loads, const std::vector<int>& counts) {
  Items items;
  for (size_t e = 0; e < loads.size(); ++e) {
    for (int k = 0; k < counts[e]; ++k) {
      items.size.push_back(loads[e] / counts[e]);
      items.expert.push_back(static_cast<int>(e));
    }
  }
  std::vector<int> order(items.size.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return items.size[a] > items.size[b]; });
  Items sorted;
  for (int i : order) {
    sorted.size.push_back(items.size[i]);
    sorted.expert.push_back(items.expert[i]);
  }
  return sorted;
}

// bins[b]: item indices on GPU b; load[b]: their total size.
struct Packing {
  std::vector<std::vector<int>> bins;
  std::vector<double> load;
  double Max() const { return *std::max_element(load.begin(), load.end()); }
};

void Recompute(const Items& items, Packing* p) {
  for (size_t b = 0; b < p->bins.size(); ++b) {
    double sum = 0.0;
    for (int i : p->bins[b])
      sum += items.size[i];
    p->load[b] = sum;
  }
}

// Longest-processing-time first with a cardinality limit per bin.
Packing PackGreedy(const Items& items, int num_bins, int per_bin) {
  Packing p;
  p.bins.assign(num_bins, {});
  p.load.assign(num_bins, 0.0);
  for (size_t i = 0; i < items.size.size(); ++i) {
    int best = -1;
    for (int b = 0; b < num_bins; ++b) {
      if (static_cast<int>(p.bins[b].size()) < per_bin && (best < 0 || p.load[b] < p.load[best])) {
        best = b;
      }
    }
    p.bins[best].push_back(static_cast<int>(i));
    p.load[best] += items.size[i];
  }
  return p;
}

// Balanced largest differencing (Karmarkar-Karp for equal-cardinality
// multiway partitions): each run of num_bins consecutive items is a partial
// solution; repeatedly merge the two partial solutions with the largest
// spread, heaviest subset of one with the lightest of the other.
Packing PackDifferencing(const Items& items, int num_bins, int per_bin) {
  struct Partial {
    std::vector<std::vector<int>> sets;
    std::vector<double> sums;
    double Spread() const {
      auto [lo, hi] = std::minmax_element(sums.begin(), sums.end());
      return *hi - *lo;
    }
  };
  std::vector<Partial> parts;
  for (int r = 0; r < per_bin; ++r) {
    Partial part;
    part.sets.resize(num_bins);
    part.sums.resize(num_bins);
    for (int b = 0; b < num_bins; ++b) {
      const int i = r * num_bins + b;
      part.sets[b] = {i};
      part.sums[b] = items.size[i];
    }
    parts.push_back(std::move(part));
  }
  auto cmp = [&](int a, int b) { return parts[a].Spread() < parts[b].Spread(); };
  std::priority_queue<int, std::vector<int>, decltype(cmp)> heap(cmp);
  for (int k = 0; k < static_cast<int>(parts.size()); ++k)
    heap.push(k);
  while (heap.size() > 1) {
    const int a = heap.top();
    heap.pop();
    const int b = heap.top();
    heap.pop();
    std::vector<int> oa(num_bins), ob(num_bins);
    std::iota(oa.begin(), oa.end(), 0);
    std::iota(ob.begin(), ob.end(), 0);
    std::sort(oa.begin(), oa.end(),
              [&](int x, int y) { return parts[a].sums[x] > parts[a].sums[y]; });
    std::sort(ob.begin(), ob.end(),
              [&](int x, int y) { return parts[b].sums[x] < parts[b].sums[y]; });
    Partial merged;
    merged.sets.resize(num_bins);
    merged.sums.resize(num_bins);
    for (int k = 0; k < num_bins; ++k) {
      merged.sets[k] = parts[a].sets[oa[k]];
      merged.sets[k].insert(merged.sets[k].end(), parts[b].sets[ob[k]].begin(),
                            parts[b].sets[ob[k]].end());
      merged.sums[k] = parts[a].sums[oa[k]] + parts[b].sums[ob[k]];
    }
    parts[a] = std::move(merged);
    heap.push(a);
  }
  Packing p;
  p.bins = parts[heap.top()].sets;
  p.load = parts[heap.top()].sums;
  return p;
}

// Swaps between the most loaded bin and the others while one lowers it:
// one-for-one, then two-for-two. Returns when no swap helps, or on the
// deadline.
void LocalSearch(const Items& items, bool pair_swaps, const Deadline& deadline, Packing* p) {
  const int num_bins = static_cast<int>(p->bins.size());
  const double* size = items.size.data();
  for (int iteration = 0;; ++iteration) {
    if ((iteration & 63) == 63 && deadline.Expired()) return;
    int top = 0;
    for (int b = 1; b < num_bins; ++b) {
      if (p->load[b] > p->load[top]) top = b;
    }
    const double top_load = p->load[top];
    double best = top_load * (1 - 1e-12);
    int best_h = -1, bi = -1, bj = -1;
    const std::vector<int>& tb = p->bins[top];
    for (int h = 0; h < num_bins; ++h) {
      if (h == top) continue;
      const double gap = top_load - p->load[h];
      if (gap <= 0) continue;
      for (size_t i = 0; i < tb.size(); ++i) {
        for (size_t j = 0; j < p->bins[h].size(); ++j) {
          const double d = size[tb[i]] - size[p->bins[h][j]];
          if (d <= 0 || d >= gap) continue;
          const double v = std::max(top_load - d, p->load[h] + d);
          if (v < best) {
            best = v;
            best_h = h;
            bi = static_cast<int>(i);
            bj = static_cast<int>(j);
          }
        }
      }
    }
    if (best_h >= 0) {
      std::swap(p->bins[top][bi], p->bins[best_h][bj]);
      const double d = size[p->bins[best_h][bj]] - size[p->bins[top][bi]];
      p->load[top] -= d;
      p->load[best_h] += d;
      continue;
    }
    if (!pair_swaps) return;
    // Two-for-two.
    int bi2 = -1, bj2 = -1;
    for (int h = 0; h < num_bins; ++h) {
      if (h == top) continue;
      const double gap = top_load - p->load[h];
      if (gap <= 0) continue;
      const std::vector<int>& hb = p->bins[h];
      for (size_t i = 0; i < tb.size(); ++i) {
        for (size_t i2 = i + 1; i2 < tb.size(); ++i2) {
          const double si = size[tb[i]] + size[tb[i2]];
          for (size_t j = 0; j < hb.size(); ++j) {
            for (size_t j2 = j + 1; j2 < hb.size(); ++j2) {
              const double d = si - size[hb[j]] - size[hb[j2]];
              if (d <= 0 || d >= gap) continue;
              const double v = std::max(top_load - d, p->load[h] + d);
              if (v < best) {
                best = v;
                best_h = h;
                bi = static_cast<int>(i);
                bi2 = static_cast<int>(i2);
                bj = static_cast<int>(j);
                bj2 = static_cast<int>(j2);
              }
            }
          }
        }
      }
    }
    if (best_h < 0) return;
    std::swap(p->bins[top][bi], p->bins[best_h][bj]);
    std::swap(p->bins[top][bi2], p->bins[best_h][bj2]);
    Recompute(items, p);
  }
}

// Load on the fullest GPU from an expert with `load` split over c replicas
// on num_gpus GPUs: ceil(c / num_gpus) replicas share one GPU.
double Burden(double load, int c, int num_gpus) {
  return load * ((c + num_gpus - 1) / num_gpus) / c;
}

// Adds slots until the counts sum to num_slots: each to the expert with the
// highest burden among those whose burden an extra replica does not raise
// (a replica beyond a multiple of num_gpus doubles up on some GPU); when none
// is left, to the one whose burden grows least.
// Only experts whose replicas are at most `max_size` take slots while any
// of them can.
void FillCounts(const std::vector<double>& loads, int num_slots, int num_gpus,
                std::vector<int>* counts,
                double max_size = std::numeric_limits<double>::infinity()) {
  std::vector<int>& c = *counts;
  int used = std::accumulate(c.begin(), c.end(), 0);
  const int n = static_cast<int>(loads.size());
  while (used < num_slots) {
    int best = -1, fallback = -1;
    double best_key = -1.0, fallback_key = std::numeric_limits<double>::infinity();
    for (int pass = 0; pass < 2 && best < 0 && fallback < 0; ++pass) {
      for (int e = 0; e < n; ++e) {
        if (pass == 0 && loads[e] / c[e] > max_size) continue;
        const double now = Burden(loads[e], c[e], num_gpus);
        const double next = Burden(loads[e], c[e] + 1, num_gpus);
        if (next <= now) {
          if (now > best_key) {
            best_key = now;
            best = e;
          }
        } else if (next < fallback_key) {
          fallback_key = next;
          fallback = e;
        }
      }
    }
    ++c[best >= 0 ? best : fallback];
    ++used;
  }
}

struct Candidate {
  std::vector<int> counts;
  Items items;
  Packing packing;
  double max_load = 0.0;
};

Candidate Evaluate(const NodeProblem& problem, std::vector<int> counts, bool pair_swaps,
                   const Deadline& deadline) {
  Candidate best;
  best.counts = std::move(counts);
  best.items = MakeItems(problem.loads, best.counts);
  best.packing = PackGreedy(best.items, problem.num_gpus, problem.slots_per_gpu);
  LocalSearch(best.items, pair_swaps, deadline, &best.packing);
  best.max_load = best.packing.Max();
  if (problem.num_gpus > 1 && problem.slots_per_gpu > 1) {
    Packing kk = PackDifferencing(best.items, problem.num_gpus, problem.slots_per_gpu);
    LocalSearch(best.items, pair_swaps, deadline, &kk);
    if (kk.Max() < best.max_load) {
      best.packing = std::move(kk);
      best.max_load = best.packing.Max();
    }
  }
  return best;
}

NodeSolution ToSolution(const Candidate& c) {
  NodeSolution s;
  s.counts = c.counts;
  s.gpus.resize(c.packing.bins.size());
  for (size_t b = 0; b < c.packing.bins.size(); ++b) {
    for (int i : c.packing.bins[b])
      s.gpus[b].push_back(c.items.expert[i]);
  }
  s.max_load = c.max_load;
  return s;
}

// Random swaps involving the most loaded bin, then local search; keeps the
// result when it is no worse. Returns true when it strictly improved.
bool Perturb(const Items& items, const Deadline& deadline, std::mt19937_64* rng, Packing* p) {
  const int num_bins = static_cast<int>(p->bins.size());
  const int per_bin = static_cast<int>(p->bins[0].size());
  if (num_bins < 2) return false;
  Packing trial = *p;
  const int num_kicks = 1 + static_cast<int>((*rng)() % 3);
  for (int k = 0; k < num_kicks; ++k) {
    int top = 0;
    for (int b = 1; b < num_bins; ++b) {
      if (trial.load[b] > trial.load[top]) top = b;
    }
    const int a = k == 0 ? top : static_cast<int>((*rng)() % num_bins);
    int h = static_cast<int>((*rng)() % (num_bins - 1));
    if (h >= a) ++h;
    const int i = static_cast<int>((*rng)() % per_bin);
    const int j = static_cast<int>((*rng)() % per_bin);
    std::swap(trial.bins[a][i], trial.bins[h][j]);
  }
  Recompute(items, &trial);
  LocalSearch(items, true, deadline, &trial);
  const double before = p->Max();
  const double after = trial.Max();
  if (after <= before) {
    *p = std::move(trial);
    return after < before * (1 - 1e-12);
  }
  return false;
}

// Moves one slot from an expert with several replicas to an expert on the
// most loaded GPU and repacks from the current placement. Returns true when
// it strictly improved.
bool ExchangeCount(const NodeProblem& problem, const Deadline& deadline, Candidate* c) {
  const int top = static_cast<int>(
      std::max_element(c->packing.load.begin(), c->packing.load.end()) - c->packing.load.begin());
  std::vector<int> gainers;
  for (int i : c->packing.bins[top])
    gainers.push_back(c->items.expert[i]);
  std::sort(gainers.begin(), gainers.end(), [&](int a, int b) {
    return problem.loads[a] / c->counts[a] > problem.loads[b] / c->counts[b];
  });
  gainers.erase(std::unique(gainers.begin(), gainers.end()), gainers.end());
  // Donors: experts with spare replicas whose per-replica load grows least.
  std::vector<int> donors;
  for (size_t e = 0; e < c->counts.size(); ++e) {
    if (c->counts[e] >= 2) donors.push_back(static_cast<int>(e));
  }
  auto after = [&](int e) { return problem.loads[e] / (c->counts[e] - 1); };
  std::sort(donors.begin(), donors.end(), [&](int a, int b) { return after(a) < after(b); });
  if (donors.size() > 4) donors.resize(4);
  // Also the reverse: an expert on the top bin gives a replica to the
  // experts with the heaviest replicas.
  struct Move {
    int x, y;
    bool from_top;  // y's replica leaves the top bin
  };
  std::vector<Move> moves;
  for (int x : gainers) {
    for (int y : donors)
      moves.push_back({x, y, false});
  }
  std::vector<int> heavy(c->counts.size());
  std::iota(heavy.begin(), heavy.end(), 0);
  std::partial_sort(heavy.begin(), heavy.begin() + std::min<size_t>(4, heavy.size()), heavy.end(),
                    [&](int a, int b) {
                      return problem.loads[a] / c->counts[a] > problem.loads[b] / c->counts[b];
                    });
  heavy.resize(std::min<size_t>(4, heavy.size()));
  for (int y : gainers) {
    if (c->counts[y] < 2) continue;
    for (int x : heavy)
      moves.push_back({x, y, true});
  }
  for (const auto& [x, y, from_top] : moves) {
    {
      if (x == y) continue;
      std::vector<int> counts = c->counts;
      ++counts[x];
      --counts[y];
      // Place by keeping each bin's experts, replacing one y by x in the
      // lightest bin holding y, then repack locally.
      std::vector<std::vector<int>> bin_experts(c->packing.bins.size());
      int donor_bin = -1;
      for (size_t b = 0; b < c->packing.bins.size(); ++b) {
        for (int i : c->packing.bins[b])
          bin_experts[b].push_back(c->items.expert[i]);
        if (std::find(bin_experts[b].begin(), bin_experts[b].end(), y) != bin_experts[b].end() &&
            (donor_bin < 0 || c->packing.load[b] < c->packing.load[donor_bin] ||
             (from_top && static_cast<int>(b) == top))) {
          if (from_top && donor_bin == top) continue;
          donor_bin = static_cast<int>(b);
        }
      }
      *std::find(bin_experts[donor_bin].begin(), bin_experts[donor_bin].end(), y) = x;
      Candidate trial;
      trial.counts = counts;
      trial.items = MakeItems(problem.loads, counts);
      // Map experts back to item indices.
      std::vector<std::vector<int>> by_expert(counts.size());
      for (size_t i = 0; i < trial.items.expert.size(); ++i) {
        by_expert[trial.items.expert[i]].push_back(static_cast<int>(i));
      }
      trial.packing.bins.resize(bin_experts.size());
      trial.packing.load.resize(bin_experts.size());
      for (size_t b = 0; b < bin_experts.size(); ++b) {
        for (int e : bin_experts[b]) {
          trial.packing.bins[b].push_back(by_expert[e].back());
          by_expert[e].pop_back();
        }
      }
      Recompute(trial.items, &trial.packing);
      LocalSearch(trial.items, true, deadline, &trial.packing);
      trial.max_load = trial.packing.Max();
      if (trial.max_load < c->max_load * (1 - 1e-12)) {
        *c = std::move(trial);
        return true;
      }
      if (deadline.Expired()) return false;
    }
  }
  return false;
}

// Counts that keep the big replicas (above half of `max_load`) of `counts`,
// one fewer for the expert of the largest of them when `free_gpu` (a GPU
// freed for other big replicas), one replica for every other expert, and
// the remaining slots each splitting the currently smallest replica (small
// replicas fill the GPUs beside the big ones). Empty when not applicable.
std::vector<int> SmallFill(const NodeProblem& problem, const std::vector<int>& counts,
                           double max_load, bool free_gpu) {
  const int n = static_cast<int>(counts.size());
  std::vector<int> fill(n, 1);
  int big = -1, used = 0;
  for (int e = 0; e < n; ++e) {
    if (problem.loads[e] / counts[e] > 0.5 * max_load) {
      fill[e] = counts[e];
      if (counts[e] >= 2 &&
          (big < 0 || problem.loads[e] / counts[e] > problem.loads[big] / counts[big])) {
        big = e;
      }
    }
    used += fill[e];
  }
  if (free_gpu) {
    if (big < 0) return {};
    --fill[big];
    --used;
  }
  if (used > problem.num_slots()) return {};
  for (; used < problem.num_slots(); ++used) {
    int light = -1;
    for (int e = 0; e < n; ++e) {
      if (fill[e] == counts[e] && problem.loads[e] / counts[e] > 0.5 * max_load) continue;
      if (light < 0 || problem.loads[e] / fill[e] < problem.loads[light] / fill[light]) light = e;
    }
    if (light < 0) return {};
    ++fill[light];
  }
  return fill;
}

}  // namespace

double NodeMaxLoad(const NodeProblem& problem, const NodeSolution& solution) {
  double worst = 0.0;
  for (const auto& gpu : solution.gpus) {
    double sum = 0.0;
    for (int e : gpu)
      sum += problem.loads[e] / solution.counts[e];
    worst = std::max(worst, sum);
  }
  return worst;
}

NodeSolution SolveNode(const NodeProblem& problem, Effort effort, const Deadline& deadline,
                       std::mt19937_64* rng, double target) {
  const int num_experts = static_cast<int>(problem.loads.size());
  const int num_slots = problem.num_slots();
  const double bound = NodeLowerBound(problem);
  // Closer than kStopGap to the bound is below the noise of measured loads.
  const double done = std::max(bound * (1 + kStopGap), target);

  // Candidate counts: EPLB's water-filling, the same aware of replicas that
  // double up on a GPU, and the counts the lower bound asks for (each
  // expert's burden within the bound) topped up the same way.
  std::vector<std::vector<int>> count_sets;
  auto add_set = [&](std::vector<int> counts) {
    if (std::find(count_sets.begin(), count_sets.end(), counts) == count_sets.end()) {
      count_sets.push_back(std::move(counts));
    }
  };
  add_set(ReplicateGreedy(problem.loads, num_slots));
  {
    std::vector<int> counts(num_experts, 1);
    FillCounts(problem.loads, num_slots, problem.num_gpus, &counts);
    add_set(std::move(counts));
  }
  {
    std::vector<int> counts;
    double t = bound * (1 + 1e-9);
    for (int k = 0; k < 4 && !NodeFeasible(problem, t, &counts); ++k)
      t *= 1.001;
    if (!counts.empty()) {
      std::vector<int> topped = counts;
      FillCounts(problem.loads, num_slots, problem.num_gpus, &topped, 0.5 * t);
      add_set(std::move(topped));
      FillCounts(problem.loads, num_slots, problem.num_gpus, &counts);
      add_set(std::move(counts));
    }
  }
  auto evaluate_all = [&](const std::vector<std::vector<int>>& sets, double stop) {
    Candidate best;
    best.max_load = std::numeric_limits<double>::infinity();
    for (const auto& counts : sets) {
      if (best.max_load <= stop) break;
      Candidate c = Evaluate(problem, counts, effort != Effort::kQuick, deadline);
      if (c.max_load < best.max_load) best = std::move(c);
    }
    return best;
  };
  Candidate best = evaluate_all(count_sets, done);
  auto improve = [&](Candidate* c) {
    if (effort == Effort::kQuick || c->max_load <= done || problem.num_gpus <= 1) return;
    int stale = 0;
    const int max_stale = effort == Effort::kShort ? 16 : 60 + 4 * problem.num_gpus;
    while (stale < max_stale && c->max_load > done && !deadline.Expired()) {
      bool improved = false;
      if (stale % 8 == 0) improved = ExchangeCount(problem, deadline, c);
      if (!improved) {
        improved = Perturb(c->items, deadline, rng, &c->packing);
        c->max_load = c->packing.Max();
      }
      stale = improved ? 0 : stale + 1;
    }
  };
  improve(&best);
  // Deep effort still short of the bound: a second family of starts,
  // SmallFill of the best counts (their big replicas kept, small ones split;
  // and the same with a GPU freed), improved separately as it tends to lead
  // to a different local optimum.
  std::vector<std::vector<int>> fill_sets;
  for (bool free_gpu : {false, true}) {
    if (effort == Effort::kQuick || best.max_load <= done || deadline.Expired()) break;
    std::vector<int> fill = SmallFill(problem, best.counts, best.max_load, free_gpu);
    if (!fill.empty() &&
        std::find(count_sets.begin(), count_sets.end(), fill) == count_sets.end()) {
      fill_sets.push_back(std::move(fill));
    }
  }
  if (!fill_sets.empty()) {
    Candidate filled = evaluate_all(fill_sets, done);
    improve(&filled);
    if (filled.max_load < best.max_load) best = std::move(filled);
  }
  return ToSolution(best);
}

}  // namespace moe::policies::internal
