// Advisory mode (decide and audit, send nothing) and a learner that resumes
// after the controller restarts mid-run, against an engine played by the test.

#include <catch2/catch.hpp>

#include <map>
#include <string>
#include <vector>

#include "controller_harness.h"

namespace moe::controller {
namespace {

// Demand {500, 300, 150, 50} token-slots of 1000 (500 tokens, top_k 2): at
// cf 1.0 each expert holds 250, so 300 are dropped; at cf 1.5 (375), 125.
void SkewedDemand(telemetry::LayerRecord& l) {
  l.expert_demand = {500, 300, 150, 50};
  l.expert_tokens = {250, 250, 150, 50};
  l.dropped = 300;
  l.overflowed = 300;
}

TEST_CASE(
    "Advisory mode records every decision with its prediction and sends nothing; a reload "
    "to active takes over",
    "[controller][advisory]") {
  Harness h([](ControllerOptions& o) { o.mode = ControlMode::kAdvisory; });
  h.Steps(8, 0, 0.0, SkewedDemand);
  CHECK(h.Tick().empty());
  h.Steps(8, 0, 0.0, SkewedDemand);
  CHECK(h.Tick().empty());  // in the guard's cooldown: rejected, audited
  CHECK(h.controller().stats().commands_sent == 0);
  CHECK(h.controller().stats().advisory == 1);

  REQUIRE(h.Reload([](ControllerOptions& o) { o.mode = ControlMode::kActive; }).ok());
  h.clock().Advance(1000 * kMs);  // past the cooldown
  h.Steps(8, 0, 0.0, SkewedDemand);
  auto sent = h.Tick();
  REQUIRE(sent.size() == 1);
  CHECK(sent[0].epoch == 1);  // the advisory decision used no epoch

  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 3);
  const storage::DecisionRow& advisory = rows[0];
  CHECK(advisory.status == "advisory");
  CHECK(advisory.verdict != "rejected");
  CHECK_FALSE(advisory.epoch.has_value());
  CHECK_FALSE(advisory.sent_ns.has_value());
  CHECK(advisory.command_json.find("\"capacity_factor\"") != std::string::npos);
  INFO(advisory.prediction_json);
  CHECK(advisory.prediction_json.find("\"demand counterfactual\"") != std::string::npos);
  CHECK(advisory.prediction_json.find("\"drop_rate_before\":0.3") != std::string::npos);
  REQUIRE(advisory.predicted_gain.has_value());
  CHECK(*advisory.predicted_gain > 0);  // fewer drops predicted
  CHECK(rows[1].status == "rejected");
  CHECK_FALSE(rows[1].prediction_json.empty());  // every decision carries its prediction
  CHECK(rows[2].status == "sent");
  CHECK(rows[2].predicted_gain.has_value());
}

TEST_CASE("A per-engine mode overrides the daemon's", "[controller][advisory]") {
  SECTION("advisory engine under an active daemon") {
    Harness h([](ControllerOptions& o) { o.engine_modes["e1"] = ControlMode::kAdvisory; });
    h.Steps(8, 0, 0.10);
    CHECK(h.Tick().empty());
    CHECK(h.controller().stats().advisory == 1);
  }
  SECTION("active engine under an advisory daemon") {
    Harness h([](ControllerOptions& o) {
      o.mode = ControlMode::kAdvisory;
      o.engine_modes["e1"] = ControlMode::kActive;
    });
    h.Steps(8, 0, 0.10);
    CHECK(h.Tick().size() == 1);
    CHECK(h.controller().stats().advisory == 0);
  }
}

TEST_CASE("The learner, restarted mid-run, resumes from what it persisted",
          "[controller][learning][restart]") {
  Harness h([](ControllerOptions& o) {
    LearningOnly(o);
    // Fixed ports: the engine reconnects to the restarted controller.
    o.telemetry_endpoint = moe::testing::FreeLoopbackEndpoint();
    o.command_endpoint = moe::testing::FreeLoopbackEndpoint();
  });
  ExploreFirstTwoValues(h);
  h.Steps(5, 2, 0.05);  // cf 2.0, mid-epoch: not learnt yet
  // As moe-engine does, the engine's Hello follows the settings it applies.
  telemetry::Hello now = h.hello();
  now.epoch = 2;
  now.knobs.capacity_factor = 2.0f;
  h.engine().UpdateHello(now);

  h.RestartController();
  h.Steps(8, 2, 0.05);
  auto next = h.Tick();
  // Epochs 0 and 1 came back from the database, epoch 2's settings from the
  // Hello: every arm is known, and 1.5 was the best.
  REQUIRE(next.size() == 1);
  CHECK(next[0].epoch == 3);
  CHECK(*next[0].knobs.capacity_factor == Approx(1.5));
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE_FALSE(rows.empty());
  CHECK(rows.back().proposal_json.find("exploit") != std::string::npos);
  std::map<uint64_t, int> learnt;
  std::map<uint64_t, double> values;
  for (const storage::LearningSampleRow& r : h.Samples()) {
    ++learnt[r.epoch];
    values[r.epoch] = r.value;
  }
  CHECK(learnt == std::map<uint64_t, int>{{0, 1}, {1, 1}, {2, 1}});  // none learnt twice
  CHECK(values[0] == Approx(1.0));
  CHECK(values[1] == Approx(1.5));
  CHECK(values[2] == Approx(2.0));
}

TEST_CASE("A restarted learner does not learn again the epoch in force it had learnt",
          "[controller][learning][restart]") {
  Harness h([](ControllerOptions& o) {
    LearningOnly(o);
    o.telemetry_endpoint = moe::testing::FreeLoopbackEndpoint();
    o.command_endpoint = moe::testing::FreeLoopbackEndpoint();
  });
  h.Steps(8, 0, 0.10);
  auto first = h.Tick();  // learns epoch 0, explores 1.5
  REQUIRE(first.size() == 1);
  h.RestartController();  // before the ack: epoch 0 is still in force
  h.Steps(8, 0, 0.10);
  h.Tick();
  std::map<uint64_t, int> learnt;
  for (const storage::LearningSampleRow& r : h.Samples())
    ++learnt[r.epoch];
  CHECK(learnt == std::map<uint64_t, int>{{0, 1}});
}

}  // namespace
}  // namespace moe::controller
