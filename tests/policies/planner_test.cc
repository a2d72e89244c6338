// Tests of the replication planner (policies/include/moe/policies/planner.h):
// constraints on random shapes, the EPLB baseline against reference figures,
// never worse than EPLB, a valid lower bound, migration and locality.

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include <catch2/catch.hpp>

#include "moe/policies/planner.h"

namespace moe::policies {
namespace {

struct RefCase {
  PlannerShape shape;
  std::vector<std::vector<double>> loads;
  std::vector<double> eplb;
};

// The first cases of shared/bench/planner_cases.json, with the max/mean
// DeepSeek EPLB's rebalance_experts reaches on them.
const std::vector<RefCase>& ReferenceCases() {
  static const std::vector<RefCase> cases = {
      {{16, 24, 4, 2, 8},
       {{2152, 2500, 3119, 767, 900, 1420, 2696, 1726, 11121, 3446, 1567, 5140, 1372, 2223, 1854,
         24533},
        {1219, 3808, 2366, 2553, 2155, 4479, 2498, 1346, 12459, 4079, 384, 9700, 1801, 986, 1741,
         3153},
        {921, 1967, 3182, 996, 1825, 2481, 2307, 1462, 2583, 907, 1877, 1510, 927, 958, 30598, 902},
        {1149, 2937, 1782, 895, 4129, 1584, 1009, 3943, 1329, 4336, 1663, 656, 878, 2580, 6943,
         3382}},
       {1.2881086930383552, 1.331262448151735, 1.8975434543255782, 1.117251350087171}},
      {{64, 96, 8, 4, 16},
       {{1336, 34049, 1636, 1101, 1129, 3148, 2192, 715,  2433, 2007, 2739, 3489, 5165,
         1117, 823,   2849, 1522, 1021, 2545, 1988, 2251, 1529, 978,  3885, 7906, 977,
         3714, 1833,  1537, 2128, 3753, 1139, 1037, 473,  8831, 1278, 1594, 1194, 2021,
         421,  1480,  813,  7355, 3797, 1385, 2345, 1412, 1572, 1787, 422,  2061, 951,
         3219, 40631, 2169, 3121, 941,  1229, 2460, 878,  1072, 2943, 2941, 2038},
        {1267, 5618,  1663, 3422, 2236, 2079, 1430, 741,  1282, 2382, 2279, 3936, 3711,
         3637, 15917, 4084, 2124, 989,  1575, 914,  3025, 1349, 3141, 3029, 5072, 1289,
         2218, 2425,  8191, 2719, 1865, 1423, 1292, 2238, 1119, 1303, 551,  1853, 51958,
         2412, 1136,  9622, 2951, 663,  1576, 2537, 934,  3204, 932,  2448, 2197, 1396,
         827,  1976,  1383, 2025, 3098, 2166, 980,  1330, 903,  1475, 2468, 1685},
        {1548, 1692, 1478, 1478, 1604, 2133, 2318, 1320, 611,   2829, 2480, 650,   529,
         2557, 1766, 1665, 2386, 392,  1184, 2875, 2189, 1648,  3538, 5911, 43027, 545,
         3328, 2199, 2320, 2661, 764,  3395, 444,  1364, 942,   1895, 2935, 3408,  4228,
         7007, 2152, 304,  1434, 1998, 1299, 6533, 1105, 35149, 1167, 3388, 1052,  1637,
         2528, 708,  609,  1601, 1238, 1845, 7997, 1450, 1814,  1788, 1877, 2751},
        {1552, 2788, 778,   3197, 2944, 1013, 3593, 4095, 2120,  7242, 1284, 4624, 962,
         1523, 1705, 2215,  1745, 2470, 1664, 2562, 1402, 1359,  2912, 1817, 2127, 1357,
         2374, 722,  42558, 3572, 2501, 3057, 1656, 1022, 1231,  3479, 524,  1609, 1454,
         1066, 2109, 1096,  910,  3059, 2936, 1811, 2224, 2742,  1703, 911,  798,  1427,
         1236, 1438, 3791,  1894, 874,  2787, 2952, 1080, 11442, 1954, 2394, 1980}},
       {1.3178298747192596, 1.526233287229138, 1.3775927569734856, 1.541907685150354}},
      {{64, 80, 8, 2, 16},
       {{4150, 2567, 4081, 948,  1171, 2150, 1478, 3750, 699,  2637, 1341, 2025, 2608,
         4697, 2262, 5956, 1934, 2020, 2514, 1234, 1856, 2164, 1500, 3419, 1542, 4100,
         3635, 2675, 2957, 9024, 6090, 7043, 4206, 2239, 2468, 1231, 2681, 1440, 2148,
         1559, 2291, 788,  3245, 2024, 2251, 931,  702,  1590, 2090, 2081, 1023, 5621,
         1416, 1313, 3004, 1078, 2291, 1059, 693,  2693, 2708, 655,  1165, 11152},
        {1254,  2273, 4586,  1338, 2322,  962,  3684, 986,  2075, 1995, 946,  3669, 3337,
         1894,  1454, 2588,  2251, 1080,  531,  2067, 3422, 2241, 1721, 4834, 516,  2917,
         900,   978,  2494,  1659, 5675,  2378, 2228, 2517, 1451, 1947, 929,  2226, 1630,
         13035, 1057, 32216, 2939, 1194,  933,  1645, 2196, 2308, 1768, 1121, 2375, 1444,
         4435,  1216, 2241,  1424, 72504, 1642, 2391, 990,  2959, 2173, 1859, 1153},
        {47316, 1349, 1539, 2971, 530,   2301, 3550, 2064, 2766, 846,  1633, 1225,  1833,
         1104,  1320, 1698, 1153, 2189,  1840, 2453, 1074, 1588, 1685, 1920, 2077,  1903,
         1680,  1335, 1509, 2077, 18106, 884,  2380, 1381, 2173, 1581, 2353, 68895, 2168,
         76031, 1039, 1856, 1430, 1122,  2789, 2191, 673,  2159, 1538, 1935, 4014,  3028,
         1320,  895,  6791, 3602, 1916,  1374, 635,  2187, 1701, 1725, 1634, 822},
        {924,  7752, 2890, 1909, 2992, 2316,  1991, 2430, 1795, 3485, 1753, 1557, 1238,
         1768, 2336, 2879, 1694, 2239, 1403,  4320, 823,  888,  3703, 1515, 1043, 1007,
         1561, 2408, 2502, 2048, 1821, 3303,  1938, 1433, 967,  1669, 1040, 1848, 1200,
         1425, 1716, 652,  521,  2339, 79608, 3115, 935,  1176, 1301, 1244, 1045, 6233,
         1739, 8259, 1823, 1430, 1265, 2370,  676,  804,  500,  2640, 1807, 4289}},
       {1.0721693650595312, 1.2594161358374492, 1.4926282924895309, 1.4662501971919861}},
  };
  return cases;
}

// A random shape: sometimes one node, one GPU per node, replicas == experts,
// experts not a multiple of the slots per GPU; hierarchical-capable or not.
struct RandomCase {
  PlannerShape shape;
  std::vector<double> loads;
};

RandomCase MakeRandomCase(std::mt19937_64& rng) {
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  RandomCase c;
  PlannerShape& s = c.shape;
  s.num_nodes = pick(1, 4);
  const int gpus_per_node = pick(1, 4);
  s.num_gpus = s.num_nodes * gpus_per_node;
  const bool hierarchical = pick(0, 3) != 0;
  s.num_groups = hierarchical ? s.num_nodes * pick(1, 3) : s.num_nodes * pick(1, 3) + 1;
  if (!hierarchical && s.num_nodes == 1) s.num_groups = 1;  // groups % 1 == 0 anyway
  const int group_size = pick(1, 4);
  s.num_experts = s.num_groups * group_size;
  const int min_per_gpu = (s.num_experts + s.num_gpus - 1) / s.num_gpus;
  const int per_gpu = min_per_gpu + pick(0, 2);
  s.num_replicas = s.num_gpus * per_gpu;
  c.loads.resize(s.num_experts);
  std::lognormal_distribution<double> load(5.0, 1.0);
  for (double& l : c.loads)
    l = std::round(load(rng));
  if (pick(0, 1) == 1) c.loads[pick(0, s.num_experts - 1)] *= 20;  // a hot expert
  c.loads[0] = std::max(c.loads[0], 1.0);
  return c;
}

}  // namespace

TEST_CASE("EPLB baseline reproduces the reference figures", "[planner]") {
  for (const RefCase& c : ReferenceCases()) {
    for (size_t l = 0; l < c.loads.size(); ++l) {
      auto plan = PlanEplb(c.shape, c.loads[l]);
      REQUIRE(plan.ok());
      CHECK(plan->max_over_mean == Approx(c.eplb[l]).epsilon(1e-6));
      REQUIRE(EvaluatePlan(c.shape, c.loads[l], plan->phy2log).ok());
    }
  }
}

TEST_CASE("default planner beats EPLB on the reference cases and stays above the bound",
          "[planner]") {
  PlannerOptions options;  // no clock: deterministic, work-bounded
  for (const RefCase& c : ReferenceCases()) {
    for (size_t l = 0; l < c.loads.size(); ++l) {
      PlannerInput input{c.shape, c.loads[l], {}, {}, 0.0};
      auto report = PlanReplication(input, options);
      REQUIRE(report.ok());
      auto checked = EvaluatePlan(c.shape, c.loads[l], report->plan.phy2log);
      REQUIRE(checked.ok());
      CHECK(checked->max_over_mean == Approx(report->plan.max_over_mean));
      CHECK(report->plan.max_over_mean <= c.eplb[l] * (1 + 1e-9));
      CHECK(report->lower_bound <= report->plan.max_over_mean * (1 + 1e-9));
      // Within 2% of the bound (case 0 layer 2 needs the pairing condition).
      CHECK(report->plan.max_over_mean <= report->lower_bound * 1.02);
      CHECK(report->eplb_max_over_mean == Approx(c.eplb[l]).epsilon(1e-6));
    }
  }
}

TEST_CASE("plans satisfy the constraints on random shapes", "[planner]") {
  std::mt19937_64 rng(7);
  PlannerOptions options;
  for (int trial = 0; trial < 150; ++trial) {
    RandomCase c = MakeRandomCase(rng);
    INFO("trial " << trial << ": experts " << c.shape.num_experts << " replicas "
                  << c.shape.num_replicas << " groups " << c.shape.num_groups << " nodes "
                  << c.shape.num_nodes << " gpus " << c.shape.num_gpus);
    REQUIRE(ValidateShape(c.shape, PlanMode::kAuto).ok());
    for (PlanMode mode : {PlanMode::kAuto, PlanMode::kGlobal}) {
      auto eplb = PlanEplb(c.shape, c.loads, mode);
      REQUIRE(eplb.ok());
      REQUIRE(EvaluatePlan(c.shape, c.loads, eplb->phy2log, mode).ok());
      options.mode = mode;
      PlannerInput input{c.shape, c.loads, {}, {}, 0.0};
      auto report = PlanReplication(input, options);
      REQUIRE(report.ok());
      const Plan& plan = report->plan;
      auto checked = EvaluatePlan(c.shape, c.loads, plan.phy2log, mode);
      REQUIRE(checked.ok());
      REQUIRE(static_cast<int>(plan.phy2log.size()) == c.shape.num_replicas);
      CHECK(*std::min_element(plan.replica_count.begin(), plan.replica_count.end()) >= 1);
      CHECK(checked->replica_count == plan.replica_count);
      CHECK(plan.max_over_mean <= eplb->max_over_mean * (1 + 1e-9));
      auto bound = LowerBound(c.shape, c.loads, mode);
      REQUIRE(bound.ok());
      CHECK(*bound <= plan.max_over_mean * (1 + 1e-9));
      CHECK(*bound <= eplb->max_over_mean * (1 + 1e-9));
      CHECK(*bound >= 1.0);
    }
  }
}

TEST_CASE("edge shapes: one node, one GPU per node, replicas == experts", "[planner]") {
  const std::vector<double> loads = {5, 1, 9, 3, 7, 2, 8, 4};
  for (PlannerShape shape :
       {PlannerShape{8, 8, 2, 2, 4}, PlannerShape{8, 12, 4, 1, 4}, PlannerShape{8, 12, 4, 4, 4},
        PlannerShape{8, 9, 1, 1, 1}, PlannerShape{8, 10, 2, 2, 2}}) {
    PlannerInput input{shape, loads, {}, {}, 0.0};
    auto report = PlanReplication(input, PlannerOptions{});
    REQUIRE(report.ok());
    REQUIRE(EvaluatePlan(shape, loads, report->plan.phy2log).ok());
    CHECK(report->plan.max_over_mean <= report->eplb_max_over_mean * (1 + 1e-9));
    CHECK(report->lower_bound <= report->plan.max_over_mean * (1 + 1e-9));
  }
  // One GPU: every plan is perfectly balanced.
  auto single = PlanReplication({PlannerShape{8, 9, 1, 1, 1}, loads, {}, {}, 0.0}, {});
  REQUIRE(single.ok());
  CHECK(single->plan.max_over_mean == Approx(1.0));
  CHECK(single->lower_bound == Approx(1.0));
}

TEST_CASE("the lower bound is tight where the optimum is known", "[planner]") {
  // Two GPUs of one slot, two equal experts: max/mean 1 is reachable.
  auto even = LowerBound(PlannerShape{2, 2, 1, 1, 2}, {3, 3});
  REQUIRE(even.ok());
  CHECK(*even == Approx(1.0));
  // One expert takes 90% of the load and may not be split beyond 2 GPUs'
  // worth of slots: the bound must see it.
  auto hot = LowerBound(PlannerShape{2, 2, 1, 1, 2}, {9, 1});
  REQUIRE(hot.ok());
  CHECK(*hot == Approx(1.8));
}

// The least max GPU load of any plan for one node: every count vector
// (each >= 1, summing to gpus * per_gpu), each packed exactly (items
// largest first into GPUs with room, skipping GPUs equal in load and fill
// to one already tried, pruned at the best so far).
double BruteForceNodeOptimum(const std::vector<double>& loads, int gpus, int per_gpu) {
  const int n = static_cast<int>(loads.size());
  const int slots = gpus * per_gpu;
  double best = 1e300;
  std::vector<int> counts(n, 1);
  std::vector<double> items, load(gpus);
  std::vector<int> fill(gpus);
  std::function<void(size_t, double)> pack = [&](size_t i, double top) {
    if (top >= best) return;
    if (i == items.size()) {
      best = top;
      return;
    }
    for (int b = 0; b < gpus; ++b) {
      if (fill[b] == per_gpu) continue;
      bool seen = false;
      for (int a = 0; a < b && !seen; ++a)
        seen = fill[a] == fill[b] && load[a] == load[b];
      if (seen) continue;
      load[b] += items[i];
      ++fill[b];
      pack(i + 1, std::max(top, load[b]));
      load[b] -= items[i];
      --fill[b];
    }
  };
  std::function<void(int, int)> choose = [&](int e, int left) {
    if (e == n - 1) {
      counts[e] = 1 + left;
      items.clear();
      for (int x = 0; x < n; ++x) {
        for (int k = 0; k < counts[x]; ++k)
          items.push_back(loads[x] / counts[x]);
      }
      std::sort(items.rbegin(), items.rend());
      std::fill(load.begin(), load.end(), 0.0);
      std::fill(fill.begin(), fill.end(), 0);
      pack(0, 0.0);
      return;
    }
    for (int extra = 0; extra <= left; ++extra) {
      counts[e] = 1 + extra;
      choose(e + 1, left - extra);
    }
  };
  choose(0, slots - n);
  return best;
}

TEST_CASE("the lower bound never exceeds the brute-force optimum", "[planner]") {
  std::mt19937_64 rng(7);
  int raised = 0, counted = 0;
  double log_gap = 0.0;
  for (int trial = 0; trial < 400; ++trial) {
    const int gpus = 2 + static_cast<int>(rng() % 3);     // 2..4
    const int per_gpu = 2 + static_cast<int>(rng() % 2);  // 2..3
    const int slots = gpus * per_gpu;
    const int experts = std::max(2, slots - static_cast<int>(rng() % 5));
    std::vector<double> loads(experts);
    std::lognormal_distribution<double> spread(0.0, trial % 2 ? 1.5 : 0.6);
    for (double& l : loads)
      l = std::round(100 * spread(rng)) + (trial % 7 == 0 ? 0 : 1);
    // Often one expert as hot as several GPUs' worth, as in the cases file.
    if (trial % 3 == 0) loads[rng() % experts] *= 2.0 + static_cast<double>(rng() % 12);
    const double total = std::accumulate(loads.begin(), loads.end(), 0.0);
    if (!(total > 0)) continue;
    auto bound = LowerBound(PlannerShape{experts, slots, 1, 1, gpus}, loads);
    REQUIRE(bound.ok());
    const double optimum = BruteForceNodeOptimum(loads, gpus, per_gpu) / (total / gpus);
    INFO("trial " << trial << ": " << gpus << " GPUs x " << per_gpu << " slots, " << experts
                  << " experts");
    CHECK(*bound <= optimum * (1 + 1e-9));
    if (*bound > 1.0 + 1e-9) ++raised;
    log_gap += std::log(optimum / *bound);
    ++counted;
  }
  // The bound is not trivially 1, and close: the basic conditions alone
  // (mean, burden, big replicas) average about 2.5% below the optimum here.
  CHECK(raised > 100);
  CHECK(std::exp(log_gap / counted) < 1.015);
}

TEST_CASE("migration: the plan in force with unchanged loads moves nothing", "[planner]") {
  std::mt19937_64 rng(11);
  for (int trial = 0; trial < 30; ++trial) {
    RandomCase c = MakeRandomCase(rng);
    PlannerInput input{c.shape, c.loads, {}, {}, 0.0};
    auto first = PlanReplication(input, PlannerOptions{});
    REQUIRE(first.ok());
    input.previous_phy2log = first->plan.phy2log;
    auto again = PlanReplication(input, PlannerOptions{});
    REQUIRE(again.ok());
    CHECK(again->num_moved == 0);
    CHECK(again->plan.phy2log == first->plan.phy2log);
    // EPLB's plan in force: a limit of zero moves keeps it exactly.
    auto eplb = PlanEplb(c.shape, c.loads);
    REQUIRE(eplb.ok());
    input.previous_phy2log = eplb->phy2log;
    PlannerOptions frozen;
    frozen.max_moves = 0;
    auto kept = PlanReplication(input, frozen);
    REQUIRE(kept.ok());
    CHECK(kept->num_moved == 0);
    CHECK(kept->plan.max_over_mean == Approx(eplb->max_over_mean));
  }
}

TEST_CASE("migration: a move limit is honoured and a weight trades balance for moves",
          "[planner]") {
  const RefCase& c = ReferenceCases()[1];
  auto eplb = PlanEplb(c.shape, c.loads[1]);
  REQUIRE(eplb.ok());
  PlannerInput input{c.shape, c.loads[1], eplb->phy2log, {}, 0.0};
  auto free_plan = PlanReplication(input, PlannerOptions{});
  REQUIRE(free_plan.ok());
  for (int limit : {1, 4, 10}) {
    PlannerOptions options;
    options.max_moves = limit;
    auto limited = PlanReplication(input, options);
    REQUIRE(limited.ok());
    CHECK(limited->num_moved <= limit);
    CHECK(CountMovedReplicas(c.shape, eplb->phy2log, limited->plan.phy2log) == limited->num_moved);
    CHECK(limited->plan.max_over_mean <= eplb->max_over_mean * (1 + 1e-9));
  }
  PlannerOptions heavy;
  heavy.move_weight = 1000.0;  // any move costs more than any balance gain
  auto still = PlanReplication(input, heavy);
  REQUIRE(still.ok());
  CHECK(still->num_moved == 0);
  CHECK(free_plan->plan.max_over_mean <= still->plan.max_over_mean * (1 + 1e-9));
}

TEST_CASE("locality: co-activated experts share GPUs among near-equal plans", "[planner]") {
  // Eight equal experts on four GPUs of two slots: every pairing is balanced;
  // co-activation pairs (0,7), (1,6), (2,5), (3,4) should share a GPU.
  const PlannerShape shape{8, 8, 1, 1, 4};
  const std::vector<double> loads(8, 100.0);
  std::vector<double> co(64, 0.0);
  for (int e = 0; e < 8; ++e)
    co[e * 8 + e] = 100;
  for (int a = 0; a < 4; ++a) {
    co[a * 8 + (7 - a)] = 90;
    co[(7 - a) * 8 + a] = 90;
  }
  PlannerInput input{shape, loads, {}, co, 200.0};
  auto report = PlanReplication(input, PlannerOptions{});
  REQUIRE(report.ok());
  CHECK(report->plan.max_over_mean == Approx(1.0));
  for (int gpu = 0; gpu < 4; ++gpu) {
    CHECK(report->plan.phy2log[2 * gpu] + report->plan.phy2log[2 * gpu + 1] == 7);
  }
  // Tokens: 400 selections over 200 tokens, 360 of them in co-located pairs.
  CHECK(report->gpu_span == Approx((800.0 - 360.0) / 200.0));
}

TEST_CASE("bad input names the field", "[planner]") {
  PlannerInput input{PlannerShape{8, 6, 2, 2, 2}, std::vector<double>(8, 1.0), {}, {}, 0.0};
  auto r = PlanReplication(input, PlannerOptions{});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("replicas") != std::string::npos);
  input.shape = PlannerShape{8, 8, 2, 2, 2};
  input.loads.resize(7);
  r = PlanReplication(input, PlannerOptions{});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("loads") != std::string::npos);
  input.loads.assign(8, 1.0);
  input.previous_phy2log = {0, 1, 2, 3, 4, 5, 6, 6};  // expert 7 has no replica
  r = PlanReplication(input, PlannerOptions{});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().message().find("previous plan") != std::string::npos);
  CHECK_FALSE(ValidateShape(PlannerShape{8, 8, 3, 2, 2}, PlanMode::kHierarchical).ok());
  CHECK_FALSE(ParsePlanMode("fast").ok());
}

TEST_CASE("moved replicas count per GPU, ignoring order within a GPU", "[planner]") {
  const PlannerShape shape{4, 4, 1, 1, 2};
  CHECK(CountMovedReplicas(shape, {0, 1, 2, 3}, {1, 0, 3, 2}) == 0);
  CHECK(CountMovedReplicas(shape, {0, 1, 2, 3}, {2, 1, 0, 3}) == 2);
}

}  // namespace moe::policies
