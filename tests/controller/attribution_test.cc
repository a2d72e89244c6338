// The learner's attribution: which knobs, regime and reward each epoch is
// credited with. One test per defect the learner had (issue 9): each failed on
// the code before its fix.

#include <catch2/catch.hpp>

#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "controller_harness.h"

namespace moe::controller {
namespace {

// The learning samples of `rows`, by epoch.
std::map<uint64_t, storage::LearningSampleRow> ByEpoch(
    const std::vector<storage::LearningSampleRow>& rows) {
  std::map<uint64_t, storage::LearningSampleRow> out;
  for (const storage::LearningSampleRow& r : rows) {
    INFO("epoch " << r.epoch << " learnt twice");
    CHECK(out.count(r.epoch) == 0);
    out[r.epoch] = r;
  }
  return out;
}

// Captures the log lines spdlog writes while it lives.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = spdlog::default_logger()->sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  bool Contains(const std::string& text) const {
    for (const std::string& line : sink_->last_formatted()) {
      if (line.find(text) != std::string::npos) return true;
    }
    return false;
  }

 private:
  std::shared_ptr<spdlog::sinks::ringbuffer_sink_mt> sink_;
};

TEST_CASE("Defect 1: an epoch that is rolled back is learnt too", "[controller][attribution]") {
  Harness h([](ControllerOptions& o) {
    LearningOnly(o);
    o.rollback_enabled = true;  // the outcome (4 steps) comes before learning's 8
    o.guard.capacity_factor.max_change = 1.0;
  });
  h.Steps(8, 0, 0.10);  // cf 1.0
  auto explore = h.Tick();
  REQUIRE(explore.size() == 1);
  REQUIRE(*explore[0].knobs.capacity_factor == Approx(1.5));
  h.Ack(explore[0], true);
  h.Steps(4, 1, 0.60);  // cf 1.5 is terrible here: measured and rolled back at once
  auto rollback = h.Tick();
  REQUIRE(rollback.size() == 1);
  CHECK(*rollback[0].knobs.capacity_factor == Approx(1.0));
  h.Ack(rollback[0], true);
  h.Steps(8, 2, 0.10);
  // 1.5 is known (and bad): the next exploration is 2.0, not 1.5 again.
  auto next = h.Tick();
  REQUIRE(next.size() == 1);
  CHECK(*next[0].knobs.capacity_factor == Approx(2.0));
  auto samples = ByEpoch(h.Samples());
  REQUIRE(samples.count(1) == 1);
  CHECK(samples[1].value == Approx(1.5));
  CHECK(samples[1].steps == 4);
  CHECK(samples[1].reward < samples[0].reward);
}

TEST_CASE("Defect 2: a clamped value is learnt as the value applied, not as the nearest arm",
          "[controller][attribution]") {
  Harness h([](ControllerOptions& o) {
    LearningOnly(o);
    o.learning.arms = {{1.0}, {2.0}};  // one step of the guard (0.5) apart is not enough
  });
  h.Steps(8, 0, 0.10);  // cf 1.0: many drops
  auto explore = h.Tick();
  REQUIRE(explore.size() == 1);
  CHECK(*explore[0].knobs.capacity_factor == Approx(1.5));  // 2.0 clamped by the guard
  h.Ack(explore[0], true);
  h.Steps(8, 1, 0.0);  // cf 1.5: no drops at all
  auto onward = h.Tick();
  REQUIRE(onward.size() == 1);
  CHECK(*onward[0].knobs.capacity_factor == Approx(2.0));  // 2.0 is still unexplored
  h.Ack(onward[0], true);
  h.Steps(8, 2, 0.05);  // cf 2.0: some drops
  // 1.0 (reward about -1) is worse than 2.0 (about -0.5): stay. Crediting
  // 1.5's perfect epoch to the arm 1.0 made 1.0 look best.
  CHECK(h.Tick().empty());
  auto samples = ByEpoch(h.Samples());
  REQUIRE(samples.size() == 3);
  CHECK(samples[0].value == Approx(1.0));
  CHECK(samples[1].value == Approx(1.5));
  CHECK(samples[2].value == Approx(2.0));
}

// Demand {100, 100, 700, 100} token-slots; capacity 100 per expert serves
// {100, 100, 100, 100}: balanced as served, 2.8x as demanded.
void CappedHotExpert(telemetry::LayerRecord& l) {
  l.num_token_slots = 1000;
  l.expert_demand = {100, 100, 700, 100};
  l.expert_tokens = {100, 100, 100, 100};
  l.dropped = 600;
  l.overflowed = 600;
}

TEST_CASE("Defect 3: the regime is bucketed by demand, which capacity does not cap",
          "[controller][attribution]") {
  Harness h([](ControllerOptions& o) { o.learning.imbalance_edges = {1.5, 2.5}; });
  h.Steps(8, 0, 0.0, CappedHotExpert);
  auto raise = h.Tick();  // the capacity policy answers the drops
  REQUIRE(raise.size() == 1);
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 1);
  INFO(rows[0].inputs_json);
  CHECK(rows[0].inputs_json.find("\"regime\":\"imbalance 2 of 3") != std::string::npos);
}

TEST_CASE("Defect 3: replication plans on demand, not on the load capacity let through",
          "[controller][attribution][replication]") {
  // 2 devices x 3 slots for 4 experts; the default placement puts expert 2
  // on device 0 with halves of 0 and 1: 800 vs 200 demanded token-slots.
  Harness h(
      [](ControllerOptions& o) {
        o.capacity_enabled = false;
        o.replication_enabled = true;
      },
      [](telemetry::Hello& hello) {
        hello.num_devices = 2;
        hello.num_replicas = 6;
      });
  h.Steps(8, 0, 0.0, CappedHotExpert);
  auto plan = h.Tick();
  REQUIRE(plan.size() == 1);
  REQUIRE(plan[0].layer_knobs.size() == 2);
  for (const telemetry::LayerKnobs& lk : plan[0].layer_knobs) {
    REQUIRE(lk.knobs.phy2log.has_value());
    CHECK(std::count(lk.knobs.phy2log->begin(), lk.knobs.phy2log->end(), 2u) >= 2);
  }
}

TEST_CASE("Defect 4: after an ack timeout, telemetry settles whether the change was applied",
          "[controller][attribution]") {
  SECTION("applied: steps under the new epoch are measured, learnt and rolled back") {
    Harness h([](ControllerOptions& o) {
      o.learning.min_steps = 4;
      o.reward.drop_weight = 10;
    });
    h.Steps(8, 0, 0.05);
    auto sent = h.Tick();
    REQUIRE(sent.size() == 1);
    REQUIRE(sent[0].epoch == 1);
    const double applied = *sent[0].knobs.capacity_factor;
    REQUIRE(applied > 1.0);
    h.clock().Advance(2000 * kMs);  // past ack_timeout, no ack
    REQUIRE(h.controller().Poll(milliseconds(0)).ok());
    CHECK(h.controller().stats().failed_commands == 1);
    h.Steps(4, 1, 0.40);  // ...but the engine runs epoch 1, and badly
    auto rollback = h.Tick();
    REQUIRE(rollback.size() == 1);
    CHECK(rollback[0].epoch == 2);
    CHECK(*rollback[0].knobs.capacity_factor == Approx(1.0));
    std::vector<storage::DecisionRow> rows = h.Decisions();
    REQUIRE(rows.size() >= 2);
    CHECK(rows[0].status == "measured");
    CHECK(rows[0].ack_error.find("settled by telemetry") != std::string::npos);
    CHECK(rows[1].policy == "guard-rollback");
    auto samples = ByEpoch(h.Samples());
    REQUIRE(samples.count(1) == 1);
    CHECK(samples[1].value == Approx(applied));  // not the 1.0 in force before
  }
  SECTION("not applied: steps go on under the old epoch, the next decision follows") {
    Harness h;
    h.Steps(8, 0, 0.10);
    auto sent = h.Tick();
    REQUIRE(sent.size() == 1);
    h.clock().Advance(2000 * kMs);
    REQUIRE(h.controller().Poll(milliseconds(0)).ok());
    h.Steps(8, 0, 0.10);  // still epoch 0: the command was lost
    auto again = h.Tick();
    REQUIRE(again.size() == 1);
    CHECK(again[0].epoch == 2);
    std::vector<storage::DecisionRow> rows = h.Decisions();
    REQUIRE(rows.size() >= 2);
    CHECK(rows[0].status == "failed");
    CHECK(rows[0].ack_error.find("not applied") != std::string::npos);
  }
}

TEST_CASE("Defect 4: a periodic Hello that left before a change was applied changes nothing",
          "[controller][attribution]") {
  Harness h([](ControllerOptions& o) { o.learning.min_steps = 4; });
  h.Steps(8, 0, 0.10);
  auto sent = h.Tick();
  REQUIRE(sent.size() == 1);
  const double applied = *sent[0].knobs.capacity_factor;
  h.Ack(sent[0], true);
  // The Hello the engine sent just before it applied epoch 1 arrives after
  // the ack (another channel): it is not an engine restart.
  const uint64_t messages = h.controller().stats().messages;
  REQUIRE(h.engine().PublishHello(h.hello()).ok());
  h.PollUntil([&] { return h.controller().stats().messages > messages; });
  h.Steps(4, 1, 0.0);
  h.Tick();
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE_FALSE(rows.empty());
  CHECK(rows[0].status == "measured");
  auto samples = ByEpoch(h.Samples());
  REQUIRE(samples.count(1) == 1);
  CHECK(samples[1].value == Approx(applied));
}

TEST_CASE("Defect 5: a reload that changes the arms remaps statistics by value and logs it",
          "[controller][attribution]") {
  LogCapture log;
  Harness h([](ControllerOptions& o) {
    LearningOnly(o);
    o.guard.capacity_factor.max_change = 2.0;
  });
  ExploreFirstTwoValues(h);
  h.Steps(8, 2, 0.05);
  // New arms: 0.5 is new; 1.0, 1.5 and 2.0 keep what was learnt at them.
  REQUIRE(h.Reload([](ControllerOptions& o) {
             o.learning.arms = {{0.5}, {1.0}, {1.5}, {2.0}};
           }).ok());
  CHECK(log.Contains("learning: arms changed"));
  CHECK(log.Contains("0.5: new"));
  auto next = h.Tick();
  REQUIRE(next.size() == 1);
  // 0.5 is the only arm without samples: explored. Mapping by position gave
  // 0.5 the statistics of 1.0, 1.0 those of 1.5, left 1.5 empty and explored
  // it again.
  CHECK(*next[0].knobs.capacity_factor == Approx(0.5));
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE_FALSE(rows.empty());
  CHECK(rows.back().proposal_json.find("explore") != std::string::npos);
}

}  // namespace
}  // namespace moe::controller
