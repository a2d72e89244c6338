// The lower bound on max_over_mean: node conditions (basic and refined) and
// the public LowerBound over group partitions (planner_partition.cc).

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>

#include "moe/policies/planner.h"
#include "planner_internal.h"

namespace moe::policies {
namespace internal {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
// Largest item count and spare-slot budget for the exact small-items sum.
constexpr int kSigmaExactItems = 16;
constexpr int kSigmaMaxBudget = 24;
// Most interval end points the pairing check takes, and the spare-slot
// counts it checks one by one.
constexpr size_t kMaxPairingPoints = 96;
constexpr int kPairingSpareSteps = 8;

// Refined conditions on a node's max GPU load t, all necessary: see
// docs/planner.md ("The lower bound"). Every plan with max load <= t has
// counts c_e >= MinCount (basic), exactly s items, and exactly p per GPU.

// Lower bounds on the sum of the k smallest of a plan's items, k = 0 .. kmax
// (result [kmax + 1]), for every count vector with c[e] >= base[e], the
// extras c[e] - base[e] of experts not `free` summing to at most `budget`,
// and free experts' counts at most base[e] + free_extra. Exact, by a dynamic
// programme over (items taken, extras used). Among experts of equal base
// and freedom only the kmax lightest can take part: an unused lighter one
// could take a heavier one's count and items for less.
std::vector<double> SigmaExact(const std::vector<double>& loads, const std::vector<int>& base,
                               int kmax, int budget, const std::vector<char>& free,
                               int free_extra) {
  const int n = static_cast<int>(loads.size());
  kmax = std::max(0, kmax);
  // Beyond these sizes the table is too big; 0 is always valid.
  if (budget > kSigmaMaxBudget || kmax > kSigmaExactItems) {
    return std::vector<double>(kmax + 1, 0.0);
  }
  std::vector<int> order(n);
  for (int e = 0; e < n; ++e)
    order[e] = e;
  std::sort(order.begin(), order.end(), [&](int a, int b) {
    if (base[a] != base[b]) return base[a] < base[b];
    if (free[a] != free[b]) return free[a] < free[b];
    return loads[a] < loads[b];
  });
  const int width = budget + 1;
  std::vector<double> best((kmax + 1) * width, kInf), next;
  best[0] = 0.0;
  int run = 0;
  for (int i = 0; i < n; ++i) {
    const int e = order[i];
    const bool same = i > 0 && base[order[i - 1]] == base[e] && free[order[i - 1]] == free[e];
    run = same ? run + 1 : 0;
    if (run >= kmax) continue;
    next = best;
    for (int j = 0; j < kmax; ++j) {
      for (int x = 0; x <= budget; ++x) {
        const double have = best[j * width + x];
        if (have == kInf) continue;
        if (free[e]) {
          const int most = base[e] + free_extra;
          for (int take = 1; take <= std::min(kmax - j, most); ++take) {
            double& slot = next[(j + take) * width + x];
            slot = std::min(slot, have + take * loads[e] / most);
          }
          continue;
        }
        for (int extra = 0; x + extra <= budget; ++extra) {
          const int c = base[e] + extra;
          for (int take = 1; take <= std::min(kmax - j, c); ++take) {
            double& slot = next[(j + take) * width + x + extra];
            slot = std::min(slot, have + take * loads[e] / c);
          }
        }
      }
    }
    best.swap(next);
  }
  std::vector<double> sigma(kmax + 1, 0.0);
  for (int k = 1; k <= kmax; ++k) {
    double v = kInf;
    for (int x = 0; x <= budget; ++x)
      v = std::min(v, best[k * width + x]);
    // Fewer items than k can only come from a relaxation too loose to
    // matter; 0 is always valid.
    sigma[k] = v == kInf ? 0.0 : v;
  }
  return sigma;
}

// sigma[k] for k in [0, s]: a lower bound on the sum of the k smallest items
// of any plan whose counts are at least `base` (summing to s - extra): the
// larger of SigmaExact (k <= slots_per_gpu) and the k - extra smallest
// items at the base counts (each extra replica lowers the number of base
// items taken by at most one).
std::vector<double> SigmaTable(const std::vector<double>& loads, const std::vector<int>& base,
                               int num_slots, int slots_per_gpu) {
  std::vector<double> items;
  for (size_t e = 0; e < loads.size(); ++e) {
    for (int i = 0; i < base[e]; ++i)
      items.push_back(loads[e] / base[e]);
  }
  std::sort(items.begin(), items.end());
  const int extra = num_slots - static_cast<int>(items.size());
  std::vector<double> sigma(num_slots + 1, 0.0);
  double prefix = 0.0;
  for (int k = extra + 1; k <= num_slots; ++k) {
    prefix += items[k - extra - 1];
    sigma[k] = prefix;
  }
  const std::vector<char> none(loads.size(), 0);
  const int kmax = std::min({num_slots, slots_per_gpu, kSigmaExactItems});
  const std::vector<double> exact = SigmaExact(loads, base, kmax, extra, none, 0);
  for (int k = 1; k <= kmax; ++k)
    sigma[k] = std::max(sigma[k], exact[k]);
  return sigma;
}

// Whether c replicas of an expert with `load` can sit on some d GPUs: their
// d * p slots hold the c replicas and d * p - c other items (at least
// sigma[d * p - c]) within d * t, and the GPU with ceil(c / d) replicas
// holds p - ceil(c / d) others.
bool CountAdmissible(double load, int c, double t, int num_gpus, int slots_per_gpu,
                     const std::vector<double>& sigma) {
  const double slack = t * 1e-12;
  for (int d = (c + slots_per_gpu - 1) / slots_per_gpu; d <= std::min(c, num_gpus); ++d) {
    const int most = (c + d - 1) / d;
    if (load + sigma[d * slots_per_gpu - c] > d * (t + slack)) continue;
    if (load * most / c + sigma[slots_per_gpu - most] > t + slack) continue;
    return true;
  }
  return false;
}

// Fewest slots for counts >= cmin such that at most num_gpus replicas exceed
// t / 2 (the knapsack of NodeFeasible).
int64_t SlotsWithBigReplicas(const std::vector<double>& loads, const std::vector<int>& cmin,
                             double t, int num_gpus) {
  int64_t slots = 0, big_units = 0, all_extra = 0;
  std::vector<int> weight, extra;
  for (size_t e = 0; e < loads.size(); ++e) {
    slots += cmin[e];
    if (loads[e] / cmin[e] > 0.5 * t * (1 + 1e-12)) {
      const double need = std::ceil(2 * loads[e] / t * (1 - 1e-12));
      weight.push_back(cmin[e]);
      extra.push_back(std::max(0, static_cast<int>(need) - cmin[e]));
      big_units += cmin[e];
      all_extra += extra.back();
    }
  }
  if (big_units <= num_gpus) return slots;
  std::vector<int64_t> best(num_gpus + 1, 0);
  for (size_t i = 0; i < weight.size(); ++i) {
    for (int c = num_gpus; c >= weight[i]; --c)
      best[c] = std::max(best[c], best[c - weight[i]] + extra[i]);
  }
  return slots + all_extra - best[num_gpus];
}

// Pairing: of the g + 1 largest items two share a GPU with p - 2 others, so
// x_g + x_{g+1} <= R = t - sigma_{p-2}; equivalently some z in [0, R / 2]
// has at most g items above z and at most g - 1 above R - z. Checked over
// intervals [z_lo, z_hi] covering [0, R / 2] with the looser thresholds
// (z_hi, R - z_lo), choosing counts >= cmin by a knapsack over (items above
// z_hi, items above R - z_lo). `extra_budget` bounds the sum of count raises
// over cmin; `sigma_p2` is the lower bound on the p - 2 smallest items.
bool PairingFeasible(const std::vector<double>& loads, const std::vector<int>& cmin, double r_pair,
                     double theta, int num_gpus, int extra_budget) {
  const int n = static_cast<int>(loads.size());
  if (r_pair <= 0) return false;
  const double half = 0.5 * r_pair;
  // z below theta shares one check (replicas at or above theta, above R);
  // end points and intervals cover [theta, R / 2].
  std::vector<double> points;
  if (half >= theta) {
    points = {theta, half};
    for (int e = 0; e < n; ++e) {
      for (int c = cmin[e]; c <= cmin[e] + std::min(extra_budget, 8); ++c) {
        const double v = loads[e] / c;
        if (v > theta && v < half) points.push_back(v);
        if (r_pair - v > theta && r_pair - v < half) points.push_back(r_pair - v);
      }
    }
    std::sort(points.begin(), points.end());
    points.erase(std::unique(points.begin(), points.end()), points.end());
    if (points.size() > kMaxPairingPoints) {
      // Keep the top ones; an interval check across the gap stays valid.
      points.erase(points.begin() + 1, points.end() - (kMaxPairingPoints - 1));
    }
  }
  const int g = num_gpus;
  const int width = g;  // b in [0, g - 1]
  std::vector<int> best, next;
  // Whether a replica of size v counts as above threshold thr: strictly, or
  // inclusively (at or above); rounding errs towards not counting.
  auto above = [](double v, double thr, bool inclusive) {
    return inclusive ? v > thr * (1 - 1e-12) : v > thr * (1 + 1e-12);
  };
  // Counts >= cmin with at most g replicas above (a_thr, a_incl) and at most
  // g - 1 above (b_thr, b_incl), within extra_budget raises.
  auto check = [&](double a_thr, bool a_incl, double b_thr, bool b_incl) {
    // best[a * width + b]: least extra slots with a replicas above the first
    // threshold and b above the second.
    best.assign((g + 1) * width, INT32_MAX);
    best[0] = 0;
    for (int e = 0; e < n; ++e) {
      if (!above(loads[e] / cmin[e], a_thr, a_incl)) continue;
      struct Option {
        int extra, a, b;
      };
      Option options[3];
      int num_options = 0;
      auto add = [&](int c) {
        const double v = loads[e] / c;
        const int a = above(v, a_thr, a_incl) ? c : 0;
        const int b = above(v, b_thr, b_incl) ? c : 0;
        if (a <= g && b <= g - 1) options[num_options++] = {c - cmin[e], a, b};
      };
      // The fewest count not above a threshold.
      auto below = [&](double thr, bool inclusive) {
        int c = std::max(cmin[e], static_cast<int>(std::ceil(loads[e] / thr * (1 - 1e-9))));
        while (above(loads[e] / c, thr, inclusive))
          ++c;
        return c;
      };
      add(cmin[e]);
      if (above(loads[e] / cmin[e], b_thr, b_incl)) add(below(b_thr, b_incl));
      if (a_thr > 0) add(below(a_thr, a_incl));
      next.assign(best.size(), INT32_MAX);
      bool any = false;
      for (int a = 0; a <= g; ++a) {
        for (int b = 0; b < width; ++b) {
          const int have = best[a * width + b];
          if (have == INT32_MAX) continue;
          for (int o = 0; o < num_options; ++o) {
            const Option& op = options[o];
            const int na = a + op.a, nb = b + op.b, nx = have + op.extra;
            if (na > g || nb >= width || nx > extra_budget) continue;
            int& slot = next[na * width + nb];
            if (nx < slot) {
              slot = nx;
              any = true;
            }
          }
        }
      }
      best.swap(next);
      if (!any) return false;
    }
    return true;
  };
  // z at an end point, or inside an open interval (where replicas above z
  // include those at or above the interval's top, and replicas above R - z
  // include those at or above R - its bottom); from the top, where few
  // replicas are above z and checks are cheap.
  for (size_t i = points.size(); i-- > 0;) {
    if (check(points[i], false, r_pair - points[i], false)) return true;
    if (i > 0 && check(points[i], true, r_pair - points[i - 1], true)) return true;
  }
  if (check(theta, true, r_pair, false)) return true;
  return false;
}

// The refined conditions at t (the basic ones of NodeFeasible assumed).
bool RefinedFeasible(const NodeProblem& problem, double t) {
  const int g = problem.num_gpus, p = problem.slots_per_gpu, s = problem.num_slots();
  const int n = static_cast<int>(problem.loads.size());
  const std::vector<double>& loads = problem.loads;
  std::vector<int> cmin(n);
  for (int e = 0; e < n; ++e) {
    cmin[e] = MinCount(loads[e], t, g);
    if (cmin[e] == 0) return false;
  }
  const std::vector<double> sigma = SigmaTable(loads, cmin, s, p);
  // Fewest admissible counts.
  std::vector<int> fewest(n);
  int64_t used = 0;
  for (int e = 0; e < n; ++e) {
    int c = cmin[e];
    while (c <= s && !CountAdmissible(loads[e], c, t, g, p, sigma))
      ++c;
    if (c > s) return false;
    fewest[e] = c;
    used += c;
  }
  if (used > s || SlotsWithBigReplicas(loads, fewest, t, g) > s) return false;
  if (p < 2 || g < 1) return true;
  // Pairing. Experts with a replica above theta at their fewest counts
  // (theta: half the (g+1)-th largest such replica) may have their counts
  // raised by the pairing knapsack, whose thresholds are all >= theta;
  // they are free in sigma (up to fewest + spare), the others share the q
  // spare slots the knapsack leaves. Each q is checked, those from
  // kPairingSpareSteps on in one check (smallest sigma, largest budget).
  const int spare = static_cast<int>(s - used);
  std::vector<double> sizes;
  for (int e = 0; e < n; ++e) {
    for (int i = 0; i < fewest[e] && i <= g; ++i)
      sizes.push_back(loads[e] / fewest[e]);
  }
  if (static_cast<int>(sizes.size()) <= g) return true;
  std::nth_element(sizes.begin(), sizes.begin() + g, sizes.end(), std::greater<double>());
  const double theta = 0.5 * sizes[g];
  if (!(theta > 0)) return true;
  // Every replica counted above a threshold in the pairing check is above
  // theta * (1 - 1e-12): a wider margin here keeps such experts free.
  std::vector<char> free(n, 0);
  for (int e = 0; e < n; ++e)
    free[e] = loads[e] / fewest[e] > theta * (1 - 1e-9) ? 1 : 0;
  for (int q = 0; q <= spare; ++q) {
    const int q_hi = q < kPairingSpareSteps ? q : spare;
    const double sigma_p2 =
        std::max(sigma[p - 2], SigmaExact(loads, fewest, p - 2, q_hi, free, spare)[p - 2]);
    if (PairingFeasible(loads, fewest, t - sigma_p2, theta, g, spare - q)) return true;
    if (q_hi == spare) break;
  }
  return false;
}

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

double NodeLowerBoundRefined(const NodeProblem& problem) {
  const double basic = NodeLowerBound(problem);
  if (!std::isfinite(basic) || basic <= 0) return basic;
  // The refined conditions hold at every t at or above the optimum, so the
  // infeasible end of a bisection stays below it.
  auto refined = [&](double t) { return Feasible(problem, t) && RefinedFeasible(problem, t); };
  const double start = basic * (1 + 1e-12);
  if (refined(start)) return basic;
  double lo = start, hi = start;
  for (int it = 0; it < 64 && !refined(hi); ++it) {
    lo = hi;
    hi *= 1.0625;
  }
  if (!refined(hi)) return lo;
  for (int it = 0; it < 60 && hi - lo > 1e-10 * hi; ++it) {
    const double mid = 0.5 * (lo + hi);
    (refined(mid) ? hi : lo) = mid;
  }
  return lo;
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
    return std::max(1.0, internal::NodeLowerBoundRefined(problem) / mean);
  }
  const int num_groups = shape.num_groups;
  const int group_size = shape.num_experts / num_groups;
  const int per_node = num_groups / shape.num_nodes;
  const int gpus_per_node = shape.num_gpus / shape.num_nodes;
  const internal::BlockPartition blocks(num_groups, per_node);
  if (blocks.ok()) {
    return std::max(1.0, internal::ComputeHierarchicalBound(shape, loads, blocks).value / mean);
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
