// PlanWorker: replication plans of large shapes run off the control thread and
// are handed out only under the epoch they were planned for; small shapes are
// planned inline.

#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "moe/common/clock.h"
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

}  // namespace
}  // namespace moe::controller
