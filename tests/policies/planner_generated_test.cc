// Tests of the replication planner on generated hierarchical cases
// (policies/include/moe/policies/planner_cases.h): shapes the reference
// cases do not cover, with hot groups and few spare slots per node. Every
// layer must be valid and within 2% of the planner's own lower bound.

#include <algorithm>
#include <cmath>
#include <vector>

#include <catch2/catch.hpp>

#include "moe/policies/planner.h"
#include "moe/policies/planner_cases.h"

namespace moe::policies {
namespace {

// Checks what EvaluatePlan checks, written out again from the contract, so
// that a bug shared by the planner and EvaluatePlan cannot hide: every
// expert has a replica, every group sits on one node, every node holds
// groups / nodes groups; and recomputes max_over_mean.
double CheckHierarchical(const PlannerShape& s, const std::vector<double>& loads,
                         const std::vector<int>& phy2log) {
  REQUIRE(static_cast<int>(phy2log.size()) == s.num_replicas);
  const int per_gpu = s.num_replicas / s.num_gpus;
  const int gpus_per_node = s.num_gpus / s.num_nodes;
  const int group_size = s.num_experts / s.num_groups;
  std::vector<int> count(s.num_experts, 0), node_of(s.num_groups, -1), groups_on(s.num_nodes, 0);
  for (int slot = 0; slot < s.num_replicas; ++slot) {
    const int e = phy2log[slot];
    REQUIRE(e >= 0);
    REQUIRE(e < s.num_experts);
    ++count[e];
    const int node = slot / per_gpu / gpus_per_node;
    int& home = node_of[e / group_size];
    if (home < 0) {
      home = node;
      ++groups_on[node];
    }
    REQUIRE(home == node);
  }
  for (int c : count)
    REQUIRE(c >= 1);
  for (int n : groups_on)
    REQUIRE(n == s.num_groups / s.num_nodes);
  std::vector<double> gpu(s.num_gpus, 0.0);
  double total = 0.0;
  for (int slot = 0; slot < s.num_replicas; ++slot) {
    gpu[slot / per_gpu] += loads[phy2log[slot]] / count[phy2log[slot]];
  }
  for (double l : loads)
    total += l;
  return *std::max_element(gpu.begin(), gpu.end()) / (total / s.num_gpus);
}

}  // namespace

TEST_CASE("generated cases are seeded, whole, skewed and validated", "[planner][generated]") {
  for (const PlannerShape& shape : {kShape128x16, kShape256x8}) {
    auto a = GeneratePlannerCase(shape, 3, 5);
    auto b = GeneratePlannerCase(shape, 3, 5);
    auto c = GeneratePlannerCase(shape, 3, 6);
    REQUIRE(a.ok());
    REQUIRE(b.ok());
    REQUIRE(c.ok());
    CHECK(a->loads == b->loads);
    CHECK(a->loads != c->loads);
    REQUIRE(a->loads.size() == 3);
    const int group_size = shape.num_experts / shape.num_groups;
    for (const auto& layer : a->loads) {
      REQUIRE(static_cast<int>(layer.size()) == shape.num_experts);
      for (double l : layer) {
        CHECK(l >= 1);
        CHECK(l == std::round(l));
      }
      // Skewed: the hottest group well above the mean group, and some
      // expert well above its group's mean.
      std::vector<double> group(shape.num_groups, 0.0);
      double total = 0.0, hottest_expert = 0.0;
      for (int e = 0; e < shape.num_experts; ++e) {
        group[e / group_size] += layer[e];
        total += layer[e];
        hottest_expert = std::max(hottest_expert, layer[e]);
      }
      CHECK(*std::max_element(group.begin(), group.end()) > 1.3 * total / shape.num_groups);
      CHECK(hottest_expert > 3.0 * total / shape.num_experts);
    }
  }
  CHECK_FALSE(GeneratePlannerCase(kShape128x16, 0, 1).ok());
  CHECK_FALSE(GeneratePlannerCase(PlannerShape{128, 160, 6, 4, 32}, 1, 1).ok());
  PlannerCaseOptions bad;
  bad.pareto_alpha = 1.0;
  auto r = GeneratePlannerCase(kShape256x8, 1, 1, bad);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().ToString().find("pareto_alpha") != std::string::npos);
  bad = {};
  bad.max_hot_groups = 9;
  CHECK_FALSE(GeneratePlannerCase(kShape256x8, 1, 1, bad).ok());
}

TEST_CASE("every generated layer is valid and within 2% of the lower bound",
          "[planner][generated]") {
  PlannerOptions options;  // no clock: deterministic, work-bounded
  int num_layers = 0;
  for (const PlannerShape& shape : {kShape128x16, kShape256x8}) {
    for (uint64_t seed = 1; seed <= 3; ++seed) {
      auto generated = GeneratePlannerCase(shape, 8, seed);
      REQUIRE(generated.ok());
      for (size_t l = 0; l < generated->loads.size(); ++l) {
        const std::vector<double>& loads = generated->loads[l];
        INFO("experts " << shape.num_experts << " groups " << shape.num_groups << " seed " << seed
                        << " layer " << l);
        PlannerInput input{shape, loads, {}, {}, 0.0};
        auto report = PlanReplication(input, options);
        REQUIRE(report.ok());
        CHECK(report->mode == PlanMode::kHierarchical);
        const double value = CheckHierarchical(shape, loads, report->plan.phy2log);
        CHECK(value == Approx(report->plan.max_over_mean).epsilon(1e-12));
        auto eplb = PlanEplb(shape, loads);
        REQUIRE(eplb.ok());
        // The bound is below every plan we know of; the plan within 2% of it.
        CHECK(report->lower_bound >= 1.0);
        CHECK(report->lower_bound <= value * (1 + 1e-9));
        CHECK(report->lower_bound <= eplb->max_over_mean * (1 + 1e-9));
        CHECK(value <= eplb->max_over_mean * (1 + 1e-9));
        CHECK(value <= report->lower_bound * 1.02);
        ++num_layers;
      }
    }
  }
  CHECK(num_layers == 48);
}

}  // namespace moe::policies
