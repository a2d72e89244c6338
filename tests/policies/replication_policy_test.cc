// Tests of the replication policy (policies/include/moe/policies/
// replication_policy.h): when it re-places a layer, what it proposes, and that
// it stays within the migration budget and the planner's constraints.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "moe/policies/planner.h"
#include "moe/policies/replication_policy.h"
#include "policy_test_util.h"

namespace moe::policies {
namespace {

using testing::Contains;
using testing::ValidateMessage;

LayerEstimate Layer(uint32_t id, std::vector<double> load) {
  LayerEstimate l;
  l.layer = id;
  l.expert_load = std::move(load);
  return l;
}

// 8 experts in 12 slots on 4 devices (3 slots each). The default placement
// puts experts 0..3 on two slots and 4..7 on one.
EngineSnapshot RepSnapshot(std::vector<LayerEstimate> layers, uint32_t num_replicas = 12,
                           uint32_t num_devices = 4) {
  EngineSnapshot s = testing::BaseSnapshot(/*steps_in_epoch=*/64);
  s.num_replicas = num_replicas;
  s.num_devices = num_devices;
  s.layers = std::move(layers);
  return s;
}

std::vector<int> ToInt(const std::vector<uint32_t>& v) {
  return std::vector<int>(v.begin(), v.end());
}

PlannerShape Shape(const EngineSnapshot& s, const ReplicationPolicyParams& p) {
  return {static_cast<int>(s.num_experts), static_cast<int>(s.num_replicas),
          static_cast<int>(p.num_groups), static_cast<int>(p.num_nodes),
          static_cast<int>(s.num_devices)};
}

// Device max-over-mean of `placement` under `load` (EvaluatePlan, global mode
// so that any placement is scored).
double MaxOverMean(const EngineSnapshot& s, const std::vector<double>& load,
                   const std::vector<uint32_t>& placement) {
  PlannerShape shape = Shape(s, {});
  auto plan = EvaluatePlan(shape, load, ToInt(placement), PlanMode::kGlobal);
  REQUIRE(plan.ok());
  return plan->max_over_mean;
}

int Replicas(const std::vector<uint32_t>& placement, uint32_t expert) {
  int n = 0;
  for (uint32_t e : placement)
    n += e == expert ? 1 : 0;
  return n;
}

// Expert 5 (one replica by default) takes 80 of 150: its device carries 95
// against a mean of 37.5 (max/mean 2.533).
const std::vector<double> kHotLoad = {10, 10, 10, 10, 10, 80, 10, 10};
const std::vector<uint32_t> kDefault12 = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3};

TEST_CASE("Replication gives a hot expert more replicas and lowers the device max/mean",
          "[replication]") {
  ReplicationPolicyParams p;
  REQUIRE(Validate(p).ok());
  EngineSnapshot s = RepSnapshot({Layer(0, kHotLoad)});
  auto prop = ProposeReplication(s, p);
  REQUIRE(prop);
  CHECK(prop->policy == "replication");
  CHECK(prop->knob == "phy2log");
  CHECK(prop->layer == -1);
  REQUIRE(prop->current_placements.size() == 1);
  REQUIRE(prop->placements.size() == 1);
  CHECK(prop->current_placements[0] == kDefault12);  // the default, spelled out
  const std::vector<uint32_t>& after = prop->placements[0];
  REQUIRE(after.size() == 12);
  CHECK(Replicas(after, 5) > 1);

  CHECK(prop->current == Approx(95.0 / 37.5));
  CHECK(prop->current == Approx(MaxOverMean(s, kHotLoad, kDefault12)));
  CHECK(prop->value == Approx(MaxOverMean(s, kHotLoad, after)));
  CHECK(prop->value <= prop->current * (1 - p.min_gain));
  CHECK(CountMovedReplicas(Shape(s, p), ToInt(kDefault12), ToInt(after)) <= p.max_moves);

  CHECK(Contains(prop->reason, "layer 0"));
  CHECK(Contains(prop->reason, "2.533"));
  CHECK(Contains(prop->reason,
                 "hottest expert 5 on " + std::to_string(Replicas(after, 5)) + " replicas"));
}

TEST_CASE("Replication proposes nothing with one device, no replicas, few steps or no load",
          "[replication]") {
  ReplicationPolicyParams p;  // min_steps 32
  CHECK_FALSE(ProposeReplication(RepSnapshot({Layer(0, kHotLoad)}, 12, 1), p));
  CHECK_FALSE(ProposeReplication(RepSnapshot({Layer(0, kHotLoad)}, 0, 4), p));
  EngineSnapshot young = RepSnapshot({Layer(0, kHotLoad)});
  young.steps_in_epoch = 31;
  CHECK_FALSE(ProposeReplication(young, p));
  young.steps_in_epoch = 32;
  CHECK(ProposeReplication(young, p));
  CHECK_FALSE(ProposeReplication(RepSnapshot({}), p));
  CHECK_FALSE(ProposeReplication(RepSnapshot({Layer(0, {})}), p));
  CHECK_FALSE(ProposeReplication(RepSnapshot({Layer(0, std::vector<double>(8, 0.0))}), p));
}

TEST_CASE("Replication needs a gain of at least min_gain", "[replication]") {
  // 8 experts in 8 slots, 2 per device: the default pairs (0,1) .. (6,7) carry
  // 20.8, 20, 20, 19.2 (max/mean 1.04); pairing hot with cold reaches 1.0, a
  // gain of 3.8%.
  const std::vector<double> load = {10.4, 10.4, 10, 10, 10, 10, 9.6, 9.6};
  EngineSnapshot s = RepSnapshot({Layer(0, load)}, 8, 4);
  ReplicationPolicyParams p;  // min_gain 0.05
  CHECK_FALSE(ProposeReplication(s, p));
  p.min_gain = 0.03;
  auto prop = ProposeReplication(s, p);
  REQUIRE(prop);
  CHECK(prop->current == Approx(1.04));
  CHECK(prop->value == Approx(1.0));
  // Balanced loads: nothing to gain at all.
  p.min_gain = 0.001;
  CHECK_FALSE(ProposeReplication(RepSnapshot({Layer(0, std::vector<double>(8, 10.0))}, 8, 4), p));
}

TEST_CASE("Replication never proposes a no-op", "[replication]") {
  // Expert 0 takes 80 of 150 and has no spare slot to spread over: its device
  // carries at least 80 + 10 whatever the placement (max/mean 2.4).
  const std::vector<double> load = {80, 10, 10, 10, 10, 10, 10, 10};
  ReplicationPolicyParams p;
  p.min_gain = 0.001;
  EngineSnapshot s = RepSnapshot({Layer(0, load)}, 8, 4);
  CHECK(MaxOverMean(s, load, {0, 1, 2, 3, 4, 5, 6, 7}) == Approx(2.4));
  CHECK_FALSE(ProposeReplication(s, p));
}

TEST_CASE("Replication moves at most max_moves replicas per layer", "[replication]") {
  const std::vector<double> other = {5, 5, 5, 5, 20, 10, 10, 90};
  EngineSnapshot s = RepSnapshot({Layer(0, kHotLoad), Layer(1, other)});
  ReplicationPolicyParams p;
  p.max_moves = -1;
  auto free = ProposeReplication(s, p);
  REQUIRE(free);
  int free_moves = 0;
  for (size_t l = 0; l < 2; ++l) {
    free_moves = std::max(
        free_moves, CountMovedReplicas(Shape(s, p), ToInt(kDefault12), ToInt(free->placements[l])));
  }
  REQUIRE(free_moves > 1);  // the limits below bind

  for (int max_moves : {1, 2, 3}) {
    CAPTURE(max_moves);
    p.max_moves = max_moves;
    auto prop = ProposeReplication(s, p);
    REQUIRE(prop);
    REQUIRE(prop->placements.size() == 2);
    for (size_t l = 0; l < 2; ++l) {
      CAPTURE(l);
      const std::vector<uint32_t>& before = prop->current_placements[l];
      const std::vector<uint32_t>& after = prop->placements[l];
      CHECK(CountMovedReplicas(Shape(s, p), ToInt(before), ToInt(after)) <= max_moves);
      // The guard counts changed slots; the planner keeps kept experts in place.
      int changed_slots = 0;
      for (size_t slot = 0; slot < after.size(); ++slot)
        changed_slots += after[slot] != before[slot] ? 1 : 0;
      CHECK(changed_slots <= max_moves);
    }
    CHECK(prop->value >= free->value - 1e-12);  // a budget never helps balance
  }

  // move_weight prices each move: at 100 / 12 per replica no gain pays for one.
  p.max_moves = -1;
  p.move_weight = 100;
  CHECK_FALSE(ProposeReplication(s, p));
}

TEST_CASE("Replication keeps every expert and every slot", "[replication]") {
  const ReplicaCountRule rule = GENERATE(ReplicaCountRule::kBalance, ReplicaCountRule::kDemand);
  CAPTURE(ReplicaCountRuleName(rule));
  std::mt19937 rng(7);
  std::exponential_distribution<double> skew(0.1);
  ReplicationPolicyParams p;
  p.min_gain = 0.01;
  p.replica_counts = rule;
  // kDemand may trade up to min_gain of device balance for room.
  const double slack = rule == ReplicaCountRule::kDemand ? p.min_gain : 0.0;
  int num_proposals = 0;
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<LayerEstimate> layers;
    for (uint32_t l = 0; l < 3; ++l) {
      std::vector<double> load(8);
      for (double& x : load)
        x = 1 + skew(rng);
      layers.push_back(Layer(l, load));
    }
    EngineSnapshot s = RepSnapshot(layers, 16, 4);
    auto prop = ProposeReplication(s, p);
    if (!prop) continue;
    ++num_proposals;
    REQUIRE(prop->placements.size() == 3);
    REQUIRE(prop->current_placements.size() == 3);
    for (size_t l = 0; l < 3; ++l) {
      const std::vector<uint32_t>& after = prop->placements[l];
      REQUIRE(after.size() == 16);
      for (uint32_t e = 0; e < 8; ++e)
        CHECK(Replicas(after, e) >= 1);
      for (uint32_t e : after)
        CHECK(e < 8);
      CHECK(MaxOverMean(s, s.layers[l].expert_load, after) <=
            MaxOverMean(s, s.layers[l].expert_load, prop->current_placements[l]) * (1 + slack) +
                1e-12);
    }
  }
  CHECK(num_proposals > 0);
}

TEST_CASE("Replication starts from the placement in force", "[replication]") {
  ReplicationPolicyParams p;
  EngineSnapshot s = RepSnapshot({Layer(0, kHotLoad)});
  auto first = ProposeReplication(s, p);
  REQUIRE(first);
  // Once the plan is in force, the layer is balanced: nothing more to do.
  s.knobs.phy2log = first->placements;
  CHECK_FALSE(ProposeReplication(s, p));

  // Layer 0 placed by the previous plan, layer 1 (same load) at the default,
  // layer 2 (no telemetry) spelled out from the default.
  EngineSnapshot two = RepSnapshot({Layer(0, kHotLoad), Layer(1, kHotLoad)});
  two.knobs.phy2log = {first->placements[0], {}, {}};
  auto prop = ProposeReplication(two, p);
  REQUIRE(prop);
  REQUIRE(prop->current_placements.size() == 3);
  REQUIRE(prop->placements.size() == 3);
  CHECK(prop->current_placements[0] == first->placements[0]);
  CHECK(prop->placements[0] == first->placements[0]);  // left alone
  CHECK(prop->current_placements[1] == kDefault12);
  CHECK(prop->placements[1] != kDefault12);
  CHECK(prop->current_placements[2] == kDefault12);
  CHECK(prop->placements[2] == kDefault12);
  CHECK_FALSE(Contains(prop->reason, "layer 0"));
  CHECK(Contains(prop->reason, "layer 1"));
  // current and value: means over the two measured layers.
  const double balanced = MaxOverMean(two, kHotLoad, first->placements[0]);
  CHECK(prop->current == Approx((balanced + 95.0 / 37.5) / 2));
  CHECK(prop->value == Approx((balanced + MaxOverMean(two, kHotLoad, prop->placements[1])) / 2));
}

TEST_CASE("Replication skips invalid shapes and placements", "[replication]") {
  ReplicationPolicyParams p;
  // Slots not a multiple of devices; fewer slots than experts.
  CHECK_FALSE(ProposeReplication(RepSnapshot({Layer(0, kHotLoad)}, 10, 4), p));
  CHECK_FALSE(ProposeReplication(RepSnapshot({Layer(0, kHotLoad)}, 4, 4), p));
  // Hierarchical planning with groups that do not divide the experts.
  ReplicationPolicyParams groups = p;
  groups.num_groups = 3;
  CHECK_FALSE(ProposeReplication(RepSnapshot({Layer(0, kHotLoad)}), groups));
  // A placement in force of the wrong length, with an unknown expert, or
  // leaving an expert without a replica.
  EngineSnapshot bad = RepSnapshot({Layer(0, kHotLoad)});
  bad.knobs.phy2log = {{0, 1, 2, 3, 4, 5, 6, 7}};
  CHECK_FALSE(ProposeReplication(bad, p));
  bad.knobs.phy2log = {{0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 9}};
  CHECK_FALSE(ProposeReplication(bad, p));
  bad.knobs.phy2log = {{0, 1, 2, 3, 4, 5, 6, 6, 0, 1, 2, 3}};
  CHECK_FALSE(ProposeReplication(bad, p));
  // One bad layer (16 experts in 12 slots) skips the whole snapshot.
  EngineSnapshot mixed = RepSnapshot({Layer(0, kHotLoad), Layer(1, std::vector<double>(16, 1.0))});
  CHECK_FALSE(ProposeReplication(mixed, p));
}

TEST_CASE("Replication keeps replicas on their group's node in hierarchical mode",
          "[replication]") {
  // 8 experts in 8 slots on 4 devices, 2 nodes; groups {0..3} and {4..7}. The
  // default pairs carry 24, 20 | 20, 16 (max/mean 1.2). Within nodes the best
  // is 22, 22 | 18, 18 (1.1); across nodes, 12 + 8 everywhere (1.0).
  const std::vector<double> load = {12, 12, 10, 10, 10, 10, 8, 8};
  EngineSnapshot s = RepSnapshot({Layer(0, load)}, 8, 4);
  ReplicationPolicyParams p;
  p.num_nodes = 2;
  p.num_groups = 2;
  auto prop = ProposeReplication(s, p);
  REQUIRE(prop);
  CHECK(prop->current == Approx(1.2));
  CHECK(prop->value == Approx(1.1));
  const std::vector<uint32_t>& after = prop->placements[0];
  REQUIRE(after.size() == 8);
  for (size_t slot = 0; slot < 8; ++slot) {
    CAPTURE(slot);
    // Slot s sits on device s / 2, node s / 4; expert e in group e / 4.
    CHECK(after[slot] / 4 == after[slot - slot % 4] / 4);
  }

  p.num_groups = 1;  // 1 % 2 != 0: global planning, across nodes
  auto global = ProposeReplication(s, p);
  REQUIRE(global);
  CHECK(global->value == Approx(1.0));
}

TEST_CASE("Replication is deterministic", "[replication]") {
  ReplicationPolicyParams p;
  EngineSnapshot s = RepSnapshot({Layer(0, kHotLoad), Layer(1, {5, 5, 5, 5, 20, 10, 10, 90})});
  auto a = ProposeReplication(s, p);
  auto b = ProposeReplication(s, p);
  REQUIRE(a);
  REQUIRE(b);
  CHECK(a->placements == b->placements);
  CHECK(a->current_placements == b->current_placements);
  CHECK(a->current == b->current);
  CHECK(a->value == b->value);
  CHECK(a->reason == b->reason);
}

TEST_CASE("Replication parameters are validated", "[replication]") {
  ReplicationPolicyParams p;
  p.num_nodes = 0;
  CHECK(Contains(ValidateMessage(p), "num_nodes"));
  p = {};
  p.num_groups = 0;
  CHECK(Contains(ValidateMessage(p), "num_groups"));
  p = {};
  p.min_gain = 0;
  CHECK(Contains(ValidateMessage(p), "min_gain"));
  p = {};
  p.min_gain = 1;
  CHECK(Contains(ValidateMessage(p), "min_gain"));
  p = {};
  p.max_moves = 0;
  CHECK(Contains(ValidateMessage(p), "max_moves"));
  p = {};
  p.max_moves = -2;
  CHECK(Contains(ValidateMessage(p), "max_moves"));
  p = {};
  p.move_weight = -0.1;
  CHECK(Contains(ValidateMessage(p), "move_weight"));
  p = {};
  p.max_moves = -1;  // allowed: no limit
  p.move_weight = 0;
  CHECK(Validate(p).ok());
}

}  // namespace
}  // namespace moe::policies
