// The learner over joint settings (issue 9, item 6): one arm moves several
// knobs in one command, each sample is stored with every knob's value, and a
// restarted controller resumes from those samples.

#include <catch2/catch.hpp>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "controller_harness.h"

namespace moe::controller {
namespace {

using nlohmann::json;

// Learning alone over (capacity_factor, top_k): the engine starts at (1.0, 2).
void JointLearning(ControllerOptions& o) {
  LearningOnly(o);
  o.learning.knobs = {"capacity_factor", "top_k"};
  o.learning.arms = {{1.0, 2}, {1.5, 1}};
}

TEST_CASE(
    "Joint settings: an arm moves every knob that differs in one command, is learnt as "
    "one setting, and a restart resumes",
    "[controller][learning]") {
  moe::testing::TempDir keep;
  const std::string copy = keep.File("moectl.db");
  {
    Harness h(JointLearning);
    h.Steps(8, 0, 0.10);  // (1.0, 2): many drops
    auto explore = h.Tick();
    REQUIRE(explore.size() == 1);
    // The unexplored arm (1.5, 1) differs in both knobs: one command.
    REQUIRE(explore[0].knobs.capacity_factor.has_value());
    REQUIRE(explore[0].knobs.top_k.has_value());
    CHECK(*explore[0].knobs.capacity_factor == Approx(1.5));
    CHECK(*explore[0].knobs.top_k == 1);
    h.Ack(explore[0], true);
    h.Steps(8, 1, 0.01);      // (1.5, 1): few drops
    CHECK(h.Tick().empty());  // every arm known, the best in force

    std::vector<storage::DecisionRow> rows = h.Decisions();
    REQUIRE(rows.size() == 1);
    INFO(rows[0].proposal_json);
    CHECK(rows[0].policy == "learning");
    CHECK(rows[0].knob == "capacity_factor");
    const json proposal = json::parse(rows[0].proposal_json);
    REQUIRE(proposal.contains("with"));
    REQUIRE(proposal["with"].size() == 1);
    CHECK(proposal["with"][0]["knob"] == "top_k");
    CHECK(proposal["with"][0]["policy"] == "learning");
    const std::string reason = proposal["reason"];
    CHECK(reason.find("explore capacity_factor 1.5, top_k 1") != std::string::npos);
    CHECK(json::parse(rows[0].command_json)["with"].size() == 1);
    h.CopyDatabaseTo(copy);
  }
  {
    // The samples carry every knob's value, under the knobs' joined name.
    Harness read([&](ControllerOptions& o) {
      JointLearning(o);
      o.db_path = copy;
    });
    std::vector<storage::LearningSampleRow> samples = read.Samples();
    REQUIRE(samples.size() == 2);
    CHECK(samples[0].knob == "capacity_factor,top_k");
    CHECK(samples[0].setting == std::vector<double>{1.0, 2});
    CHECK(samples[1].setting == std::vector<double>{1.5, 1});
    CHECK(samples[1].value == 1.5);
  }
  // A new controller on that database resumes: an engine at (1.0, 2) in the
  // same regime goes straight to the best setting, (1.5, 1), in one command.
  Harness again([&](ControllerOptions& o) {
    JointLearning(o);
    o.db_path = copy;
  });
  again.Steps(8, 0, 0.10);
  auto first = again.Tick();
  REQUIRE(first.size() == 1);
  CHECK(*first[0].knobs.capacity_factor == Approx(1.5));
  REQUIRE(first[0].knobs.top_k.has_value());
  CHECK(*first[0].knobs.top_k == 1);
  std::vector<storage::DecisionRow> rows = again.Decisions();
  REQUIRE_FALSE(rows.empty());
  const json proposal = json::parse(rows.back().proposal_json);
  CHECK(proposal["reason"].get<std::string>().find("exploit capacity_factor 1.5, top_k 1") !=
        std::string::npos);
  // The prediction compares the learnt means of the two joint settings.
  CHECK(rows.back().prediction_json.find("learnt means") != std::string::npos);
  REQUIRE(rows.back().predicted_gain.has_value());
  CHECK(*rows.back().predicted_gain > 0);
}

TEST_CASE(
    "Joint settings: a knob the guard clamps is learnt as applied, and the setting it "
    "makes is credited to no arm",
    "[controller][learning]") {
  Harness h([](ControllerOptions& o) {
    JointLearning(o);
    o.learning.arms = {{1.0, 2}, {1.5, 4}};  // top_k 2 -> 4: the guard allows 1 a decision
  });
  h.Steps(8, 0, 0.10);
  auto move = h.Tick();
  REQUIRE(move.size() == 1);
  CHECK(*move[0].knobs.capacity_factor == Approx(1.5));
  REQUIRE(move[0].knobs.top_k.has_value());
  CHECK(*move[0].knobs.top_k == 3);  // clamped
  h.Ack(move[0], true);
  h.Steps(8, 1, 0.01);
  auto onto = h.Tick();  // off an arm: moves onto the arm (1.5, 4)
  REQUIRE(onto.size() == 1);
  CHECK_FALSE(onto[0].knobs.capacity_factor.has_value());
  CHECK(*onto[0].knobs.top_k == 4);
  h.Ack(onto[0], true);
  h.Steps(8, 2, 0.01);
  h.Tick();
  std::vector<storage::LearningSampleRow> samples = h.Samples();
  REQUIRE(samples.size() >= 2);
  CHECK(samples[0].setting == std::vector<double>{1.0, 2});
  CHECK(samples[1].setting == std::vector<double>{1.5, 3});  // what was applied
}

}  // namespace
}  // namespace moe::controller
