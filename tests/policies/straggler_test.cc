// Tests of straggler handling: the cost model prices a slow device by its
// factor (policies/cost_model.h), DeviceSpeedEstimator learns the factors
// from measured device times, and the replication policy moves load off a
// slow device (replication_policy.h).

#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "moe/policies/cost_model.h"
#include "moe/policies/planner.h"
#include "moe/policies/replication_policy.h"
#include "policy_test_util.h"

namespace moe::policies {
namespace {

using testing::Contains;

CostModel Model(std::vector<double> factors) {
  CostModel m;
  m.device = {10.0, 1.0};
  m.overhead = {5.0, 0.0};
  m.device_factor = std::move(factors);
  m.calibrated = true;
  return m;
}

TEST_CASE("A slow device's rows cost its factor times the fit", "[straggler][cost]") {
  const std::vector<double> rows = {100, 100, 100, 60};
  // Without factors the most rows cost the most: 5 + (10 + 100) + 2.
  CHECK(LayerPathUs(Model({}), 64, rows, 2.0) == Approx(117.0));
  // Device 3 at 3x: its 60 rows cost 3 x 70 = 210.
  CHECK(LayerPathUs(Model({1, 1, 1, 3}), 64, rows, 2.0) == Approx(5 + 210 + 2));
  // A factor list shorter than the devices counts 1 past its end.
  CHECK(LayerPathUs(Model({1, 1}), 64, rows, 2.0) == Approx(117.0));
}

TEST_CASE("The balanced reference lets every device finish together", "[straggler][cost]") {
  // 360 rows, no factors: 90 each, 10 + 90.
  CHECK(BalancedLayerPathUs(Model({}), 64, 360, 4, 0) == Approx(5 + 100.0));
  // f = 1, 1, 1, 3: T = (360 + 4 x 10) / (3 + 1/3) = 120; the fast devices
  // run 110 rows each and the slow one 30 (3 x (10 + 30) = 120).
  CHECK(BalancedLayerPathUs(Model({1, 1, 1, 3}), 64, 360, 4, 0) == Approx(5 + 120.0));
  // A device too slow to help gets no rows: 20 rows over one fast device.
  CHECK(BalancedLayerPathUs(Model({1, 100}), 64, 20, 2, 0) == Approx(5 + 30.0));
  // Balanced never costs more than any split of the same rows.
  const CostModel m = Model({1, 1.5, 1, 3});
  const double balanced = BalancedLayerPathUs(m, 64, 360, 4, 0);
  std::mt19937_64 rng(3);
  std::uniform_real_distribution<double> u(0, 1);
  for (int i = 0; i < 200; ++i) {
    std::vector<double> w = {u(rng), u(rng), u(rng), u(rng)};
    const double sum = w[0] + w[1] + w[2] + w[3];
    for (double& x : w)
      x = x / sum * 360;
    CHECK(LayerPathUs(m, 64, w, 0) >= balanced - 1e-9);
  }
}

// One step of `layers` layers on 4 devices, device 3 at `slow` x.
void AddStep(DeviceSpeedEstimator& speed, std::mt19937_64& rng, int layers, double slow) {
  const AffineCost fit{10.0, 1.0};
  std::uniform_real_distribution<double> noise(0.9, 1.1);
  for (int l = 0; l < layers; ++l)
    for (size_t d = 0; d < 4; ++d)
      speed.Add(d, 100, 110 * noise(rng) * (d == 3 ? slow : 1.0), fit);
  speed.EndStep();
}

TEST_CASE("DeviceSpeedEstimator finds the slow device and ignores noise", "[straggler][cost]") {
  const AffineCost fit{10.0, 1.0};
  std::mt19937_64 rng(11);
  DeviceSpeedEstimator speed(/*window=*/16);
  // Too few steps yet: no factors.
  for (int i = 0; i < 7; ++i)
    AddStep(speed, rng, 4, 3.0);
  speed.Update();
  CHECK(speed.Factors().empty());
  for (int i = 0; i < 16; ++i)
    AddStep(speed, rng, 4, 3.0);
  speed.Update();
  REQUIRE(speed.Factors().size() == 4);
  CHECK(speed.FactorOf(0) == 1.0);  // within the deadband
  CHECK(speed.FactorOf(3) == Approx(3.0).epsilon(0.1));
  // Bad measurements are ignored, not averaged in.
  speed.Add(3, 100, -1, fit);
  speed.Add(3, 100, std::numeric_limits<double>::infinity(), fit);
  speed.Add(3, 0, 50, fit);
  speed.EndStep();
  speed.Update();
  CHECK(speed.FactorOf(3) == Approx(3.0).epsilon(0.1));

  // The device recovers: once its window holds normal ratios, no factors.
  for (int i = 0; i < 16; ++i)
    AddStep(speed, rng, 4, 1.0);
  speed.Update();
  CHECK(speed.Factors().empty());
}

TEST_CASE("DeviceSpeedEstimator sees a slowdown half a window after it, whatever the depth",
          "[straggler][cost]") {
  for (int layers : {1, 4, 61}) {
    INFO(layers << " layers");
    std::mt19937_64 rng(3);
    DeviceSpeedEstimator speed(/*window=*/16);
    for (int i = 0; i < 40; ++i)
      AddStep(speed, rng, layers, 1.0);
    speed.Update();
    REQUIRE(speed.Factors().empty());
    int seen_after = -1;
    for (int i = 1; i <= 40 && seen_after < 0; ++i) {
      AddStep(speed, rng, layers, 3.0);
      speed.Update();
      if (speed.FactorOf(3) > 2.0) seen_after = i;
    }
    // The upper median of 16 ratios is a slow one once 8 of them are.
    CHECK(seen_after == 8);
  }
}

// 8 experts of equal load in 8 slots on 4 devices: balanced by load.
EngineSnapshot EvenSnapshot(std::vector<double> factors) {
  EngineSnapshot s = testing::BaseSnapshot(/*steps_in_epoch=*/64);
  s.num_replicas = 8;
  s.num_devices = 4;
  LayerEstimate l;
  l.layer = 0;
  l.expert_load = {40, 40, 10, 10, 10, 10, 40, 40};
  s.layers = {l};
  s.cost_model = Model(std::move(factors));
  return s;
}

TEST_CASE("Replication moves load off a slow device", "[straggler][replication]") {
  ReplicationPolicyParams p;
  p.max_moves = -1;
  // Default placement: devices hold {0,1} {2,3} {4,5} {6,7}: loads 80 20 20 80.
  // With every device at 1 the best plan evens the loads (50 each).
  auto even = ProposeReplication(EvenSnapshot({}), p);
  REQUIRE(even);
  // Device 0 at 3x: it must end with the least load (ties allowed).
  auto slow = ProposeReplication(EvenSnapshot({3, 1, 1, 1}), p);
  REQUIRE(slow);
  const std::vector<uint32_t>& after = slow->placements[0];
  const std::vector<double> load = EvenSnapshot({}).layers[0].expert_load;
  std::vector<double> device(4, 0);
  for (size_t s = 0; s < after.size(); ++s)
    device[s / 2] += load[after[s]];
  for (size_t d = 1; d < 4; ++d)
    CHECK(device[0] <= device[d]);
  // Time ratio: 3 x 80 over balanced (200 / (1/3 + 3) = 60) before.
  CHECK(slow->current == Approx(240.0 / 60.0));
  CHECK(slow->value < slow->current * (1 - p.min_gain));
  // Whole experts: the slow device takes the two of 10 (3 x 20 = 60), one
  // fast device the two of 40 (80): the best a packing can do.
  CHECK(device[0] == Approx(20.0));
  CHECK(slow->value == Approx(80.0 / 60.0));
  CHECK(Contains(slow->reason, "device 0 at 3.00x"));
  // A balanced load on even devices is left alone; on a slow device it is not.
  EngineSnapshot balanced = EvenSnapshot({});
  balanced.layers[0].expert_load = {40, 10, 40, 10, 40, 10, 40, 10};
  CHECK_FALSE(ProposeReplication(balanced, p));
  balanced.cost_model.device_factor = {1, 1, 2.5, 1};
  auto moved = ProposeReplication(balanced, p);
  REQUIRE(moved);
  CHECK(moved->value < moved->current);
}

TEST_CASE("Moving load off a slow device respects max_moves and the move cost",
          "[straggler][replication]") {
  ReplicationPolicyParams p;
  p.max_moves = 2;
  auto slow = ProposeReplication(EvenSnapshot({3, 1, 1, 1}), p);
  REQUIRE(slow);
  const PlannerShape shape{8, 8, 1, 1, 4};
  std::vector<int> before(slow->current_placements[0].begin(), slow->current_placements[0].end());
  std::vector<int> after(slow->placements[0].begin(), slow->placements[0].end());
  CHECK(CountMovedReplicas(shape, before, after) <= 2);
  // A move cost above any gain: nothing is proposed.
  p.max_moves = -1;
  p.move_weight = 100;
  CHECK_FALSE(ProposeReplication(EvenSnapshot({3, 1, 1, 1}), p));
}

}  // namespace
}  // namespace moe::policies
