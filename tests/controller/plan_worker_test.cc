// PlanWorker: replication plans of large shapes run off the control thread and
// are handed out only under the epoch they were planned for; small shapes are
// planned inline. With gain parameters the worker judges its plans on the
// snapshot they were made from, to the bit as the cycle would, and hands the
// gain out only for exactly the planned placements under the same settings.

#include <catch2/catch.hpp>

#include <chrono>
#include <cmath>
#include <thread>
#include <utility>
#include <vector>

#include "moe/common/clock.h"
#include "moe/policies/counterfactual_policy.h"
#include "plan_worker.h"

namespace moe::controller {
namespace {

policies::EngineSnapshot SkewedSnapshot(uint32_t num_layers, uint32_t num_experts,
                                        uint32_t num_replicas, uint32_t num_devices) {
  policies::EngineSnapshot s;
  s.engine_id = "e1";
  s.epoch = 3;
  s.steps_in_epoch = 64;
  s.num_experts = num_experts;
  s.num_replicas = num_replicas;
  s.num_devices = num_devices;
  for (uint32_t l = 0; l < num_layers; ++l) {
    policies::LayerEstimate est;
    est.layer = l;
    for (uint32_t e = 0; e < num_experts; ++e)
      // The hottest experts are the last ids, which the default placement
      // does not replicate: moving replicas to them pays.
      est.expert_load.push_back(1000.0 / (1.0 + (num_experts - 1 - e + l) % num_experts));
    s.layers.push_back(est);
  }
  return s;
}

// SkewedSnapshot with a fitted cost model and `num_steps` steps of demand
// that follows its loads: what PlacementGain replays.
policies::EngineSnapshot DemandSnapshot(uint32_t num_layers, int num_steps) {
  policies::EngineSnapshot s = SkewedSnapshot(num_layers, 256, 288, 32);
  s.knobs.top_k = 8;
  s.reference_top_k = 8;
  s.knobs.capacity_factor = 1.25;
  s.cost_model.calibrated = true;
  s.cost_model.device = {57.5, 0.75};
  s.cost_model.overhead = {33.8, 2.125};
  for (int i = 0; i < num_steps; ++i) {
    policies::StepDemand d;
    d.step = 100 + static_cast<uint64_t>(i);
    d.epoch = s.epoch;
    d.tokens = 512;
    d.all_to_all_us.assign(num_layers, 3.5);
    for (const policies::LayerEstimate& est : s.layers) {
      std::vector<double> demand;
      for (size_t e = 0; e < est.expert_load.size(); ++e)
        demand.push_back(std::floor(est.expert_load[e] / 4 + static_cast<double>((e + i) % 5)));
      d.layers.push_back(std::move(demand));
    }
    s.recent.push_back(std::move(d));
  }
  return s;
}

std::optional<policies::Proposal> AskUntilReady(PlanWorker& worker,
                                                const policies::EngineSnapshot& snapshot,
                                                const policies::ReplicationPolicyParams& params) {
  for (int i = 0; i < 3000; ++i) {
    auto got = worker.Ask(snapshot, params);
    if (got) return got;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

TEST_CASE("a large shape is planned on the worker and handed out under its epoch",
          "[plan_worker]") {
  PlanWorker worker;
  policies::ReplicationPolicyParams params;
  params.clock = SystemClock();
  params.time_budget_ms = 20;
  // 16 layers x 288 slots: over the inline limit.
  policies::EngineSnapshot snapshot = SkewedSnapshot(16, 256, 288, 32);
  REQUIRE(16 * 288 > PlanWorker::kInlineSlots);
  CHECK_FALSE(worker.Ask(snapshot, params).has_value());  // started, not ready
  CHECK(worker.plans_started() == 1);
  auto proposal = AskUntilReady(worker, snapshot, params);
  REQUIRE(proposal.has_value());
  CHECK(proposal->policy == "replication");
  CHECK(proposal->placements.size() == 16);
  CHECK(worker.plans_started() == 1);  // asking again did not plan again

  // The same epoch and steps: nothing new is due.
  CHECK_FALSE(worker.Ask(snapshot, params).has_value());
  CHECK(worker.plans_started() == 1);

  SECTION("min_steps more steps plan again") {
    snapshot.steps_in_epoch += params.min_steps;
    CHECK_FALSE(worker.Ask(snapshot, params).has_value());
    CHECK(worker.plans_started() == 2);
    CHECK(AskUntilReady(worker, snapshot, params).has_value());
  }
  SECTION("a plan finished under an older epoch is dropped, and the new epoch planned") {
    snapshot.steps_in_epoch += params.min_steps;
    CHECK_FALSE(worker.Ask(snapshot, params).has_value());  // plan for epoch 3
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    policies::EngineSnapshot next = snapshot;
    next.epoch = 4;
    bool handed_old = false;
    for (int i = 0; i < 3000 && worker.plans_started() < 3; ++i) {
      handed_old = handed_old || worker.Ask(next, params).has_value();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    CHECK_FALSE(handed_old);
    CHECK(worker.plans_started() == 3);
    CHECK(AskUntilReady(worker, next, params).has_value());
  }
}

TEST_CASE("too few steps or one device plan nothing", "[plan_worker]") {
  PlanWorker worker;
  policies::ReplicationPolicyParams params;
  policies::EngineSnapshot snapshot = SkewedSnapshot(16, 256, 288, 32);
  snapshot.steps_in_epoch = params.min_steps - 1;
  CHECK_FALSE(worker.Ask(snapshot, params).has_value());
  snapshot.steps_in_epoch = 64;
  snapshot.num_devices = 1;
  CHECK_FALSE(worker.Ask(snapshot, params).has_value());
  CHECK(worker.plans_started() == 0);
}

TEST_CASE("a small shape is planned inline, in the cycle that asks", "[plan_worker]") {
  PlanWorker worker;
  policies::ReplicationPolicyParams params;
  policies::EngineSnapshot snapshot = SkewedSnapshot(2, 4, 6, 2);
  auto proposal = worker.Ask(snapshot, params);
  REQUIRE(proposal.has_value());
  CHECK(proposal->knob == "phy2log");
  CHECK(worker.plans_started() == 0);
}

TEST_CASE("a plan made on the worker carries its gain, to the bit the inline one",
          "[plan_worker][gain]") {
  PlanWorker worker;
  PlanWorker::GainParams gain_params;
  gain_params.counterfactual.lookback_steps = 6;
  worker.set_gain_params(gain_params);
  policies::ReplicationPolicyParams params;
  params.clock = SystemClock();
  params.time_budget_ms = 20;
  const policies::EngineSnapshot snapshot = DemandSnapshot(16, 8);
  CHECK_FALSE(worker.Ask(snapshot, params).has_value());
  auto proposal = AskUntilReady(worker, snapshot, params);
  REQUIRE(proposal.has_value());
  REQUIRE_FALSE(proposal->placements.empty());
  CHECK(worker.gains_computed() == 1);
  const double inline_gain = policies::PlacementGain(
      snapshot, proposal->placements, gain_params.counterfactual, gain_params.reward);
  REQUIRE(inline_gain != 0);  // the demand tells placements apart

  SECTION("the same placements on the same snapshot: the same gain, taken once") {
    auto planned = worker.TakeGain(snapshot, proposal->placements);
    REQUIRE(planned.has_value());
    CHECK(planned->gain == inline_gain);  // to the bit
    CHECK(planned->through_step == snapshot.recent.back().step);
    CHECK(worker.gains_taken() == 1);
    CHECK_FALSE(worker.TakeGain(snapshot, proposal->placements).has_value());
  }
  SECTION("a later snapshot of the same epoch: the gain of the plan's own window") {
    policies::EngineSnapshot later = DemandSnapshot(16, 12);
    auto planned = worker.TakeGain(later, proposal->placements);
    REQUIRE(planned.has_value());
    CHECK(planned->gain == inline_gain);
    CHECK(planned->through_step == snapshot.recent.back().step);
  }
  SECTION("placements other than the plan's are judged by the caller") {
    std::vector<std::vector<uint32_t>> other = proposal->placements;
    std::swap(other.back().front(), other.back().back());
    REQUIRE(other != proposal->placements);
    CHECK_FALSE(worker.TakeGain(snapshot, other).has_value());
    CHECK_FALSE(worker.TakeGain(snapshot, proposal->placements).has_value());  // taken
  }
  SECTION("new gain parameters drop the gains worked out with the old ones") {
    worker.set_gain_params(gain_params);
    CHECK_FALSE(worker.TakeGain(snapshot, proposal->placements).has_value());
  }
}

TEST_CASE("a gain is not handed out under other settings it depends on", "[plan_worker][gain]") {
  // One change at a time, each on a fresh worker (a gain is taken once).
  const int which = GENERATE(0, 1, 2, 3, 4, 5);
  PlanWorker worker;
  worker.set_gain_params(PlanWorker::GainParams{});
  policies::ReplicationPolicyParams params;
  params.clock = SystemClock();
  params.time_budget_ms = 20;
  const policies::EngineSnapshot snapshot = DemandSnapshot(16, 8);
  auto proposal = AskUntilReady(worker, snapshot, params);
  REQUIRE(proposal.has_value());
  policies::EngineSnapshot changed = snapshot;
  if (which == 0) changed.epoch += 1;
  if (which == 1) changed.knobs.capacity_factor = 2.0;  // e.g. a joint setting
  if (which == 2) changed.knobs.top_k = 4;
  if (which == 3) changed.knobs.capacity_scope = telemetry::CapacityScope::kSlot;
  if (which == 4) changed.knobs.phy2log = proposal->placements;  // another placement in force
  if (which == 5) changed.reference_top_k = 4;
  CHECK_FALSE(worker.TakeGain(changed, proposal->placements).has_value());
  CHECK(worker.gains_taken() == 0);
}

TEST_CASE("without gain parameters, or planned inline, a plan carries no gain",
          "[plan_worker][gain]") {
  PlanWorker worker;
  policies::ReplicationPolicyParams params;
  params.clock = SystemClock();
  params.time_budget_ms = 20;
  SECTION("no gain parameters") {
    const policies::EngineSnapshot snapshot = DemandSnapshot(16, 8);
    auto proposal = AskUntilReady(worker, snapshot, params);
    REQUIRE(proposal.has_value());
    CHECK(worker.gains_computed() == 0);
    CHECK_FALSE(worker.TakeGain(snapshot, proposal->placements).has_value());
  }
  SECTION("a small shape, planned inline, is judged on the cycle's own snapshot") {
    worker.set_gain_params(PlanWorker::GainParams{});
    policies::EngineSnapshot snapshot = SkewedSnapshot(2, 4, 6, 2);
    snapshot.cost_model.calibrated = true;
    auto proposal = worker.Ask(snapshot, params);
    REQUIRE(proposal.has_value());
    CHECK_FALSE(worker.TakeGain(snapshot, proposal->placements).has_value());
    CHECK(worker.gains_computed() == 0);
  }
}

}  // namespace
}  // namespace moe::controller
