// Migration and locality: relabelling plans onto the plan in force,
// movement-limited improvement of the plan in force, and co-location swaps.

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>

#include "planner_internal.h"

namespace moe::policies::internal {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Multiset intersection size of two small expert lists.
int Overlap(std::vector<int> a, std::vector<int> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  int common = 0;
  size_t i = 0, j = 0;
  while (i < a.size() && j < b.size()) {
    if (a[i] == b[j]) {
      ++common;
      ++i;
      ++j;
    } else if (a[i] < b[j]) {
      ++i;
    } else {
      ++j;
    }
  }
  return common;
}

std::vector<int> GpuSlots(const std::vector<int>& phy2log, int gpu, int per) {
  return std::vector<int>(phy2log.begin() + static_cast<size_t>(gpu) * per,
                          phy2log.begin() + static_cast<size_t>(gpu + 1) * per);
}

}  // namespace

std::vector<int> MinCostAssignment(const std::vector<double>& cost, int n) {
  // Potentials u (rows), v (columns); p[j]: row matched to column j (1-based).
  std::vector<double> u(n + 1, 0.0), v(n + 1, 0.0);
  std::vector<int> p(n + 1, 0), way(n + 1, 0);
  for (int i = 1; i <= n; ++i) {
    p[0] = i;
    int j0 = 0;
    std::vector<double> minv(n + 1, kInf);
    std::vector<char> used(n + 1, 0);
    do {
      used[j0] = 1;
      const int i0 = p[j0];
      double delta = kInf;
      int j1 = 0;
      for (int j = 1; j <= n; ++j) {
        if (used[j]) continue;
        const double cur = cost[static_cast<size_t>(i0 - 1) * n + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) {
          minv[j] = cur;
          way[j] = j0;
        }
        if (minv[j] < delta) {
          delta = minv[j];
          j1 = j;
        }
      }
      for (int j = 0; j <= n; ++j) {
        if (used[j]) {
          u[p[j]] += delta;
          v[j] -= delta;
        } else {
          minv[j] -= delta;
        }
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const int j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0 != 0);
  }
  std::vector<int> column(n, 0);
  for (int j = 1; j <= n; ++j)
    column[p[j] - 1] = j - 1;
  return column;
}

std::vector<int> AlignToPrevious(const PlannerShape& shape, int num_nodes,
                                 const std::vector<int>& plan, const std::vector<int>& previous) {
  const int per = shape.num_replicas / shape.num_gpus;
  const int gpn = shape.num_gpus / num_nodes;
  std::vector<std::vector<int>> now(shape.num_gpus), before(shape.num_gpus);
  for (int g = 0; g < shape.num_gpus; ++g) {
    now[g] = GpuSlots(plan, g, per);
    before[g] = GpuSlots(previous, g, per);
  }
  // gpu_target[g]: where plan's GPU g goes.
  std::vector<int> gpu_target(shape.num_gpus);
  std::vector<double> node_cost(static_cast<size_t>(num_nodes) * num_nodes);
  std::vector<std::vector<int>> inner(static_cast<size_t>(num_nodes) * num_nodes);
  for (int a = 0; a < num_nodes; ++a) {
    for (int b = 0; b < num_nodes; ++b) {
      std::vector<double> cost(static_cast<size_t>(gpn) * gpn);
      for (int i = 0; i < gpn; ++i) {
        for (int j = 0; j < gpn; ++j) {
          cost[static_cast<size_t>(i) * gpn + j] = -Overlap(now[a * gpn + i], before[b * gpn + j]);
        }
      }
      std::vector<int> match = MinCostAssignment(cost, gpn);
      double total = 0.0;
      for (int i = 0; i < gpn; ++i)
        total += cost[static_cast<size_t>(i) * gpn + match[i]];
      node_cost[static_cast<size_t>(a) * num_nodes + b] = total;
      inner[static_cast<size_t>(a) * num_nodes + b] = std::move(match);
    }
  }
  const std::vector<int> node_match = MinCostAssignment(node_cost, num_nodes);
  for (int a = 0; a < num_nodes; ++a) {
    const int b = node_match[a];
    const std::vector<int>& match = inner[static_cast<size_t>(a) * num_nodes + b];
    for (int i = 0; i < gpn; ++i)
      gpu_target[a * gpn + i] = b * gpn + match[i];
  }
  std::vector<int> out(shape.num_replicas, -1);
  for (int g = 0; g < shape.num_gpus; ++g) {
    const int t = gpu_target[g];
    std::vector<int> left = now[g];
    std::vector<char> filled(per, 0);
    // Keep experts at the slot they held before, then fill the rest in order.
    for (int k = 0; k < per; ++k) {
      auto it = std::find(left.begin(), left.end(), before[t][k]);
      if (it != left.end()) {
        out[static_cast<size_t>(t) * per + k] = *it;
        filled[k] = 1;
        left.erase(it);
      }
    }
    size_t next = 0;
    for (int k = 0; k < per; ++k) {
      if (!filled[k]) out[static_cast<size_t>(t) * per + k] = left[next++];
    }
  }
  return out;
}

std::vector<int> ImproveFromPrevious(const PlannerShape& shape, int num_nodes,
                                     const std::vector<double>& loads,
                                     const std::vector<int>& previous, int max_moves,
                                     double move_weight, const Deadline& deadline) {
  const int num_gpus = shape.num_gpus;
  const int per = shape.num_replicas / num_gpus;
  const int gpn = num_gpus / num_nodes;
  const int num_slots = shape.num_replicas;
  double total = 0.0;
  for (double l : loads)
    total += l;
  const double mean = total / num_gpus;
  std::vector<int> cur = previous;
  std::vector<int> counts(shape.num_experts, 0);
  for (int e : cur)
    ++counts[e];
  std::vector<std::vector<int>> before(num_gpus);
  for (int g = 0; g < num_gpus; ++g)
    before[g] = GpuSlots(previous, g, per);
  auto gpu_moved = [&](int g, const std::vector<int>& plan) {
    return per - Overlap(GpuSlots(plan, g, per), before[g]);
  };
  auto loads_of = [&](const std::vector<int>& plan, const std::vector<int>& c) {
    std::vector<double> gl(num_gpus, 0.0);
    for (int s = 0; s < num_slots; ++s)
      gl[s / per] += loads[plan[s]] / c[plan[s]];
    return gl;
  };
  std::vector<double> gl = loads_of(cur, counts);
  int moved = 0;
  auto objective = [&](double max_load, int mv) {
    return max_load / mean + move_weight * mv / num_slots;
  };
  const int limit = max_moves < 0 ? num_slots : max_moves;
  for (int step = 0; step < 4 * num_slots && moved < limit; ++step) {
    if (deadline.Expired()) break;
    const int top = static_cast<int>(std::max_element(gl.begin(), gl.end()) - gl.begin());
    const double j_now = objective(gl[top], moved);
    const int node = top / gpn;
    // Best change by improvement per replica moved.
    double best_score = 0.0;
    std::vector<int> best_plan;
    auto consider = [&](std::vector<int>& plan, const std::vector<int>& c,
                        const std::vector<int>& touched) {
      int mv = moved;
      for (int g : touched)
        mv += gpu_moved(g, plan) - gpu_moved(g, cur);
      if (mv > limit) return;
      const std::vector<double> nl = loads_of(plan, c);
      const double j_new = objective(*std::max_element(nl.begin(), nl.end()), mv);
      const double score = (j_now - j_new) / std::max(1, mv - moved);
      if (score > best_score + 1e-15) {
        best_score = score;
        best_plan = plan;
      }
    };
    std::vector<int> trial = cur;
    for (int i = top * per; i < (top + 1) * per; ++i) {
      for (int h = node * gpn; h < (node + 1) * gpn; ++h) {
        if (h == top) continue;
        for (int j = h * per; j < (h + 1) * per; ++j) {
          const int x = cur[i], y = cur[j];
          if (x == y) continue;
          // Swap x and y when it lowers the top GPU.
          if (loads[x] / counts[x] > loads[y] / counts[y]) {
            std::swap(trial[i], trial[j]);
            consider(trial, counts, {top, h});
            std::swap(trial[i], trial[j]);
          }
          // One more replica of x in place of a spare replica of y.
          if (counts[y] >= 2) {
            std::vector<int> c = counts;
            ++c[x];
            --c[y];
            trial[j] = x;
            consider(trial, c, {h});
            trial[j] = y;
          }
        }
      }
      if (deadline.Expired()) break;
    }
    if (best_plan.empty()) break;
    int mv = 0;
    for (int g = 0; g < num_gpus; ++g)
      mv += gpu_moved(g, best_plan);
    cur = std::move(best_plan);
    std::fill(counts.begin(), counts.end(), 0);
    for (int e : cur)
      ++counts[e];
    gl = loads_of(cur, counts);
    moved = mv;
  }
  return cur;
}

std::vector<int> ImproveLocality(const PlannerShape& shape, int num_nodes,
                                 const std::vector<double>& loads, const std::vector<int>& plan,
                                 const std::vector<double>& coactivation, double max_ratio,
                                 const Deadline& deadline) {
  const int num_experts = shape.num_experts;
  const int num_gpus = shape.num_gpus;
  const int per = shape.num_replicas / num_gpus;
  const int gpn_swap = num_gpus / num_nodes;  // swaps stay inside these blocks
  // Physical nodes for the node-level preference (also in global mode).
  const int gpn_phys =
      shape.num_gpus % shape.num_nodes == 0 ? num_gpus / shape.num_nodes : num_gpus;
  const int num_phys = num_gpus / gpn_phys;
  constexpr double kNodeWeight = 0.25;
  double total = 0.0;
  for (double l : loads)
    total += l;
  const double cap = max_ratio * total / num_gpus;
  std::vector<int> cur = plan;
  std::vector<int> counts(num_experts, 0);
  for (int e : cur)
    ++counts[e];
  std::vector<double> gl(num_gpus, 0.0);
  for (int s = 0; s < shape.num_replicas; ++s)
    gl[s / per] += loads[cur[s]] / counts[cur[s]];
  auto co = [&](int a, int b) { return coactivation[static_cast<size_t>(a) * num_experts + b]; };
  // aff_gpu[g][e] = sum_b!=e C(e, b) * share of b on g; aff_node likewise.
  std::vector<std::vector<double>> aff_gpu(num_gpus, std::vector<double>(num_experts, 0.0));
  std::vector<std::vector<double>> aff_node(num_phys, std::vector<double>(num_experts, 0.0));
  auto add_share = [&](int gpu, int b, double w) {
    for (int e = 0; e < num_experts; ++e) {
      if (e == b) continue;
      const double c = co(e, b) * w;
      if (c == 0) continue;
      aff_gpu[gpu][e] += c;
      aff_node[gpu / gpn_phys][e] += c;
    }
  };
  for (int s = 0; s < shape.num_replicas; ++s)
    add_share(s / per, cur[s], 1.0 / counts[cur[s]]);
  // Gain of moving one replica of x from g1 to g2 and one of y back.
  auto gain = [&](int x, int g1, int y, int g2) {
    const double sx = 1.0 / counts[x], sy = 1.0 / counts[y];
    const double dgpu = -sx * aff_gpu[g1][x] - sy * aff_gpu[g2][y] +
                        sy * (aff_gpu[g1][y] - co(y, x) * sx) +
                        sx * (aff_gpu[g2][x] - co(x, y) * sy);
    double dnode = 0.0;
    const int n1 = g1 / gpn_phys, n2 = g2 / gpn_phys;
    if (n1 != n2) {
      dnode = -sx * aff_node[n1][x] - sy * aff_node[n2][y] +
              sy * (aff_node[n1][y] - co(y, x) * sx) + sx * (aff_node[n2][x] - co(x, y) * sy);
    }
    return dgpu + kNodeWeight * dnode;
  };
  for (int sweep = 0; sweep < 4; ++sweep) {
    bool changed = false;
    for (int i = 0; i < shape.num_replicas; ++i) {
      if (deadline.Expired()) return cur;
      const int g1 = i / per;
      const int block = g1 / gpn_swap;
      double best = 1e-12;
      int best_j = -1;
      for (int j = block * gpn_swap * per; j < (block + 1) * gpn_swap * per; ++j) {
        const int g2 = j / per;
        if (g2 == g1 || cur[i] == cur[j]) continue;
        const double d = loads[cur[i]] / counts[cur[i]] - loads[cur[j]] / counts[cur[j]];
        if (gl[g1] - d > cap || gl[g2] + d > cap) continue;
        const double v = gain(cur[i], g1, cur[j], g2);
        if (v > best) {
          best = v;
          best_j = j;
        }
      }
      if (best_j < 0) continue;
      const int x = cur[i], y = cur[best_j], g2 = best_j / per;
      add_share(g1, x, -1.0 / counts[x]);
      add_share(g2, y, -1.0 / counts[y]);
      add_share(g1, y, 1.0 / counts[y]);
      add_share(g2, x, 1.0 / counts[x]);
      const double d = loads[x] / counts[x] - loads[y] / counts[y];
      gl[g1] -= d;
      gl[g2] += d;
      std::swap(cur[i], cur[best_j]);
      changed = true;
    }
    if (!changed) break;
  }
  return cur;
}

}  // namespace moe::policies::internal
