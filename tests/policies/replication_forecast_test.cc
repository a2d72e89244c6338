// Tests of the replication policy's look-ahead (replication_policy.h,
// load_forecast.h): planning on the forecast of the next window against the
// window mean, the fallback when the snapshot holds no per-step demand, and
// how replica counts follow demand.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "moe/policies/planner.h"
#include "moe/policies/replication_policy.h"
#include "policy_test_util.h"

namespace moe::policies {
namespace {

using testing::Contains;
using testing::ValidateMessage;

int Replicas(const std::vector<uint32_t>& placement, uint32_t expert) {
  return static_cast<int>(std::count(placement.begin(), placement.end(), expert));
}

std::vector<double> Hot(uint32_t expert) {
  std::vector<double> row(8, 10.0);
  row[expert] = 80;
  return row;
}

// 8 experts in 12 slots on 4 devices. The window: 16 steps with expert 0
// hot, then 8 with expert 5 hot; the layer estimate holds the window mean.
EngineSnapshot ShiftSnapshot() {
  EngineSnapshot s;
  s.engine_id = "e1";
  s.epoch = 2;
  s.steps_in_epoch = 24;
  s.num_experts = 8;
  s.num_replicas = 12;
  s.num_devices = 4;
  s.knobs.capacity_scope = telemetry::CapacityScope::kSlot;  // replica counts follow demand
  LayerEstimate est;
  est.layer = 0;
  est.expert_demand.assign(8, 0.0);
  for (uint64_t t = 0; t < 24; ++t) {
    StepDemand d;
    d.step = 100 + t;
    d.epoch = 2;
    d.tokens = 150.0 / 2;
    d.layers = {Hot(t < 16 ? 0 : 5)};
    for (size_t e = 0; e < 8; ++e)
      est.expert_demand[e] += d.layers[0][e] / 24.0;
    s.recent.push_back(std::move(d));
  }
  est.expert_load = est.expert_demand;
  s.layers.push_back(std::move(est));
  return s;
}

TEST_CASE("Replication plans on the forecast: the new hot expert gets the replicas",
          "[replication][forecast]") {
  const EngineSnapshot s = ShiftSnapshot();
  ReplicationPolicyParams mean_params;
  mean_params.min_steps = 1;
  mean_params.max_moves = -1;
  mean_params.forecast.method = ForecastMethod::kWindowMean;
  ReplicationPolicyParams ahead = mean_params;
  ahead.forecast.method = ForecastMethod::kRecent;
  REQUIRE(Validate(ahead).ok());

  auto by_mean = ProposeReplication(s, mean_params);
  auto by_forecast = ProposeReplication(s, ahead);
  REQUIRE(by_mean);
  REQUIRE(by_forecast);
  // Window mean 56.7 / 33.3 for experts 0 / 5: EPLB's rule gives 0 four
  // replicas and 5 two. The forecast (the last 8 steps) puts 80 on 5: five
  // replicas for 5, one for 0.
  CHECK(Replicas(by_mean->placements[0], 0) == 4);
  CHECK(Replicas(by_mean->placements[0], 5) == 2);
  CHECK(Replicas(by_forecast->placements[0], 5) == 5);
  CHECK(Replicas(by_forecast->placements[0], 0) == 1);
  CHECK(by_forecast->placements != by_mean->placements);
  CHECK(Contains(by_forecast->reason, "planned on the recent forecast"));
  CHECK(Contains(by_forecast->reason, "1 with a change in the window"));
  CHECK(Contains(by_mean->reason, "planned on the window mean"));

  // Judged on what comes next (expert 5 hot), the look-ahead plan is better
  // balanced.
  PlannerShape shape{8, 12, 1, 1, 4};
  auto ToInt = [](const std::vector<uint32_t>& v) { return std::vector<int>(v.begin(), v.end()); };
  auto next_mean = EvaluatePlan(shape, Hot(5), ToInt(by_mean->placements[0]), PlanMode::kGlobal);
  auto next_ahead =
      EvaluatePlan(shape, Hot(5), ToInt(by_forecast->placements[0]), PlanMode::kGlobal);
  REQUIRE(next_mean.ok());
  REQUIRE(next_ahead.ok());
  CHECK(next_ahead->max_over_mean < next_mean->max_over_mean);
}

TEST_CASE("Replication falls back to the window mean without per-step demand",
          "[replication][forecast]") {
  EngineSnapshot s = ShiftSnapshot();
  ReplicationPolicyParams ahead;
  ahead.min_steps = 1;
  ahead.max_moves = -1;
  ReplicationPolicyParams mean_params = ahead;
  mean_params.forecast.method = ForecastMethod::kWindowMean;
  auto by_mean = ProposeReplication(s, mean_params);
  REQUIRE(by_mean);

  // No recent steps, one step only, or rows of another size: the window mean.
  for (int variant = 0; variant < 3; ++variant) {
    CAPTURE(variant);
    EngineSnapshot v = s;
    if (variant == 0) v.recent.clear();
    if (variant == 1) {
      const StepDemand first = v.recent[0];
      v.recent.clear();
      v.recent.push_back(first);
    }
    if (variant == 2)
      for (size_t i = 0; i < v.recent.size(); ++i)
        v.recent[i].layers[0].resize(7);
    auto p = ProposeReplication(v, ahead);
    REQUIRE(p);
    CHECK(p->placements == by_mean->placements);
    CHECK(Contains(p->reason, "planned on the window mean"));
  }
  // Rows of zeros only: the forecast refuses them, the window mean decides.
  EngineSnapshot zeros = s;
  for (size_t i = 0; i < zeros.recent.size(); ++i)
    zeros.recent[i].layers[0].assign(8, 0.0);
  auto z = ProposeReplication(zeros, ahead);
  REQUIRE(z);
  CHECK(z->placements == by_mean->placements);
}

TEST_CASE("Replica counts follow demand, or balance alone with kBalance",
          "[replication][forecast]") {
  // Expert 5 takes 80 of 150; 12 slots on 4 devices.
  EngineSnapshot s = ShiftSnapshot();
  s.recent.clear();
  s.layers[0].expert_demand = Hot(5);
  s.layers[0].expert_load = Hot(5);
  ReplicationPolicyParams p;
  p.min_steps = 1;
  p.max_moves = -1;
  p.replica_counts = ReplicaCountRule::kDemand;
  auto demand = ProposeReplication(s, p);
  REQUIRE(demand);
  CHECK(Replicas(demand->placements[0], 5) == 5);  // 80 / 5 = 16 per replica
  p.replica_counts = ReplicaCountRule::kBalance;
  auto balance = ProposeReplication(s, p);
  REQUIRE(balance);
  // Device balance needs fewer: the planner stops when the devices are even.
  CHECK(Replicas(balance->placements[0], 5) >= 2);
  CHECK(Replicas(balance->placements[0], 5) <= 5);
  // kAuto follows the scope in force: per slot, demand; per expert or
  // unknown, balance.
  p.replica_counts = ReplicaCountRule::kAuto;
  auto auto_slot = ProposeReplication(s, p);
  REQUIRE(auto_slot);
  CHECK(auto_slot->placements == demand->placements);
  for (bool unknown : {false, true}) {
    EngineSnapshot e = s;
    if (unknown) {
      e.knobs.capacity_scope = KnobValues{}.capacity_scope;  // the default
    } else {
      e.knobs.capacity_scope = telemetry::CapacityScope::kExpert;
    }
    auto auto_expert = ProposeReplication(e, p);
    REQUIRE(auto_expert);
    CHECK(auto_expert->placements == balance->placements);
  }
  CHECK(ReplicaCountRuleName(ReplicaCountRule::kAuto) == "auto");
  CHECK(ReplicaCountRuleName(ReplicaCountRule::kDemand) == "demand");
  CHECK(ReplicaCountRuleName(ReplicaCountRule::kBalance) == "balance");

  // kDemand within a budget: at most max_moves replicas move.
  for (int max_moves : {1, 2, 3}) {
    CAPTURE(max_moves);
    ReplicationPolicyParams b;
    b.min_steps = 1;
    b.max_moves = max_moves;
    auto prop = ProposeReplication(s, b);
    REQUIRE(prop);
    PlannerShape shape{8, 12, 1, 1, 4};
    const auto& before = prop->current_placements[0];
    const auto& after = prop->placements[0];
    CHECK(CountMovedReplicas(shape, std::vector<int>(before.begin(), before.end()),
                             std::vector<int>(after.begin(), after.end())) <= max_moves);
  }

  ReplicationPolicyParams bad;
  bad.forecast.horizon_steps = 0;
  CHECK(Contains(ValidateMessage(bad), "replication policy: forecast: horizon_steps"));
}

}  // namespace
}  // namespace moe::policies
