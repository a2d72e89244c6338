#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "moe/policies/learning_policy.h"
#include "policy_test_util.h"

namespace moe::policies {
namespace {

using testing::Contains;
using testing::ValidateMessage;

EngineSnapshot LSnapshot(double cf, double max_over_mean = 1.0, double tokens_per_step = 0) {
  EngineSnapshot s = testing::BaseSnapshot();
  s.knobs.capacity_factor = cf;
  s.max_over_mean = max_over_mean;
  s.tokens_per_step = tokens_per_step;
  return s;
}

// Gives every arm of `regime` `samples` samples of reward means[a].
void Teach(const std::string& regime, const std::vector<double>& means, uint32_t samples,
           const LearningPolicyParams& p, LearningState* state) {
  for (size_t a = 0; a < means.size(); ++a) {
    for (uint32_t i = 0; i < samples; ++i)
      Learn(regime, p.arms[a], means[a], p, state);
  }
}

TEST_CASE("RegimeOf buckets imbalance and tokens; an edge belongs to the upper bucket",
          "[learning]") {
  LearningPolicyParams p;  // imbalance_edges {1.5, 3.0}, no tokens edges
  CHECK(RegimeOf(LSnapshot(1.0, 1.0), p) == "imbalance 0 of 3, tokens 0 of 1");
  CHECK(RegimeOf(LSnapshot(1.0, 1.4999), p) == "imbalance 0 of 3, tokens 0 of 1");
  CHECK(RegimeOf(LSnapshot(1.0, 1.5), p) == "imbalance 1 of 3, tokens 0 of 1");
  CHECK(RegimeOf(LSnapshot(1.0, 2.9), p) == "imbalance 1 of 3, tokens 0 of 1");
  CHECK(RegimeOf(LSnapshot(1.0, 3.0), p) == "imbalance 2 of 3, tokens 0 of 1");
  CHECK(RegimeOf(LSnapshot(1.0, 50.0), p) == "imbalance 2 of 3, tokens 0 of 1");
  CHECK(RegimeOf(LSnapshot(1.0, 1.0, 1e9), p) == "imbalance 0 of 3, tokens 0 of 1");

  p.tokens_edges = {256, 4096};
  CHECK(RegimeOf(LSnapshot(1.0, 2.0, 255), p) == "imbalance 1 of 3, tokens 0 of 3");
  CHECK(RegimeOf(LSnapshot(1.0, 2.0, 256), p) == "imbalance 1 of 3, tokens 1 of 3");
  CHECK(RegimeOf(LSnapshot(1.0, 2.0, 4095), p) == "imbalance 1 of 3, tokens 1 of 3");
  CHECK(RegimeOf(LSnapshot(1.0, 2.0, 4096), p) == "imbalance 1 of 3, tokens 2 of 3");

  p.imbalance_edges = {};
  CHECK(RegimeOf(LSnapshot(1.0, 9.0, 300), p) == "imbalance 0 of 1, tokens 1 of 3");
}

TEST_CASE("NearestArm picks the nearest value, the lower arm on a tie", "[learning]") {
  LearningPolicyParams p;  // {1.0, 1.25, 1.5, 2.0, 3.0}
  CHECK(NearestArm({0.1}, p) == 0);
  CHECK(NearestArm({1.0}, p) == 0);
  CHECK(NearestArm({1.1}, p) == 0);
  CHECK(NearestArm({1.125}, p) == 0);  // tie between 1.0 and 1.25
  CHECK(NearestArm({1.13}, p) == 1);
  CHECK(NearestArm({1.5}, p) == 2);
  CHECK(NearestArm({1.75}, p) == 2);  // tie between 1.5 and 2.0
  CHECK(NearestArm({1.76}, p) == 3);
  CHECK(NearestArm({2.6}, p) == 4);
  CHECK(NearestArm({100}, p) == 4);
}

TEST_CASE("Learn accumulates per regime and value and counts samples", "[learning]") {
  LearningPolicyParams p;  // {1.0, 1.25, 1.5, 2.0, 3.0}
  LearningState state;
  Learn("a", {1.5}, -0.5, p, &state);
  Learn("a", {1.5}, -0.25, p, &state);
  Learn("a", {1.3}, -1.0, p, &state);  // no arm: kept as 1.3, credited to none
  Learn("b", {1.5}, 2.0, p, &state);
  CHECK(state.samples == 4);
  REQUIRE(state.regimes.size() == 2);
  const std::vector<ArmStats> a = ArmStatsOf("a", p, state);
  REQUIRE(a.size() == p.arms.size());
  CHECK(a[2].samples == 2);
  CHECK(a[2].reward_sum == -0.75);
  CHECK(a[2].Mean() == -0.375);
  CHECK(a[1].samples == 0);  // 1.3 is not 1.25
  CHECK(a[0].samples == 0);
  CHECK(a[0].Mean() == 0);
  CHECK(state.regimes.at("a").at(SettingKey({1.3})).samples == 1);
  const std::vector<ArmStats> b = ArmStatsOf("b", p, state);
  CHECK(b[2].samples == 1);
  CHECK(b[2].Mean() == 2.0);
  CHECK(b[1].samples == 0);

  // A value that crossed the wire as a float is its arm.
  Learn("a", {static_cast<double>(1.25f)}, -0.5, p, &state);
  CHECK(ArmStatsOf("a", p, state)[1].samples == 1);

  // Non-finite outcomes are not recorded.
  Learn("a", {1.5}, std::nan(""), p, &state);
  Learn("a", {std::nan("")}, -1, p, &state);
  CHECK(state.samples == 5);
  CHECK(ArmStatsOf("a", p, state)[2].samples == 2);
}

TEST_CASE("Defect 2: a value clamped between two arms is credited to neither", "[learning]") {
  // 2.0 -> 3.0 clamped to 2.5 used to land on 2.0 (the lower arm of a tie).
  LearningPolicyParams p;
  p.arms = {{1.0}, {2.0}, {3.0}};
  p.exploration = 0;
  LearningState state;
  const std::string regime = RegimeOf(LSnapshot(2.0), p);
  Learn(regime, {1.0}, -0.5, p, &state);
  Learn(regime, {3.0}, -0.4, p, &state);
  Learn(regime, {2.5}, 1.0, p, &state);  // the clamped epoch, excellent
  CHECK(ArmStatsOf(regime, p, state)[1].samples == 0);
  // 2.0 is still unexplored: explored, not exploited on 2.5's reward.
  auto move = ProposeLearning(LSnapshot(3.0), p, state);
  REQUIRE(move);
  CHECK(move->value == 2.0);
  CHECK(Contains(move->reason, "explore"));
}

TEST_CASE("Off an arm (a clamped move), the policy moves onto an arm", "[learning]") {
  LearningPolicyParams p;
  p.arms = {{1.0}, {2.0}, {3.0}};
  p.exploration = 0;
  LearningState state;
  const std::string regime = RegimeOf(LSnapshot(2.5), p);
  Teach(regime, {-0.5, -0.1, -0.4}, 1, p, &state);
  // At 2.5, nearest arm 2.0 (tie: the lower) is also the best: proposed,
  // though it is the "current" arm.
  auto move = ProposeLearning(LSnapshot(2.5), p, state);
  REQUIRE(move);
  CHECK(move->value == 2.0);
  CHECK(move->current == 2.5);
  // On the arm itself nothing more is proposed.
  CHECK_FALSE(ProposeLearning(LSnapshot(2.0), p, state));
}

TEST_CASE("Defect 3: the regime follows demand imbalance, not the served one", "[learning]") {
  LearningPolicyParams p;                       // imbalance edges {1.5, 3.0}
  EngineSnapshot capped = LSnapshot(1.0, 1.2);  // served: capacity capped the hot expert
  capped.demand_max_over_mean = 3.4;
  EngineSnapshot roomy = LSnapshot(2.0, 3.1);  // same demand, more room: served shows it
  roomy.demand_max_over_mean = 3.4;
  CHECK(DemandImbalance(capped) == 3.4);
  CHECK(RegimeOf(capped, p) == "imbalance 2 of 3, tokens 0 of 1");
  CHECK(RegimeOf(capped, p) == RegimeOf(roomy, p));
  // No demand reported: the served figure is all there is.
  CHECK(RegimeOf(LSnapshot(1.0, 1.2), p) == "imbalance 0 of 3, tokens 0 of 1");
}

TEST_CASE("Defect 5: ArmsChange says which arms keep statistics and which are new", "[learning]") {
  LearningPolicyParams before;
  before.arms = {{1.0}, {1.5}, {2.0}};
  LearningState state;
  Learn("r", {1.0}, -1, before, &state);
  Learn("r", {1.5}, -0.5, before, &state);
  Learn("r", {1.5}, -0.4, before, &state);
  LearningPolicyParams after = before;
  CHECK(ArmsChange(before, after, state).empty());
  after.arms = {{0.5}, {1.5}, {2.0}};
  const std::string line = ArmsChange(before, after, state);
  CHECK(Contains(line, "learning: arms changed from [1, 1.5, 2] to [0.5, 1.5, 2]"));
  CHECK(Contains(line, "0.5: new, 1.5: 2 samples, 2: new"));
  CHECK(Contains(line, "no longer arms: 1 (1 samples, kept)"));
  // The statistics follow the values: 1.5 keeps its two samples at index 1.
  CHECK(ArmStatsOf("r", after, state)[1].samples == 2);
  CHECK(ArmStatsOf("r", after, state)[0].samples == 0);
  LearningPolicyParams other = before;
  other.knobs = {"top_k"};
  other.arms = {{1}, {2}};
  CHECK(Contains(ArmsChange(before, other, state), "knobs changed from capacity_factor to top_k"));
}

TEST_CASE("Exploration walks to the nearest unexplored arm, never proposing the arm in force",
          "[learning]") {
  LearningPolicyParams p;  // {1.0, 1.25, 1.5, 2.0, 3.0}
  LearningState state;
  const std::string regime = RegimeOf(LSnapshot(1.5), p);

  // The arm in force has no sample yet: it is being measured now.
  CHECK_FALSE(ProposeLearning(LSnapshot(1.5), p, state));

  // Walk: from 1.5 every arm in turn, always the unexplored one nearest in value.
  double cf = 1.5;
  std::vector<double> walk;
  for (int i = 0; i < 10; ++i) {
    Learn(regime, {cf}, -1.0, p, &state);
    auto proposal = ProposeLearning(LSnapshot(cf), p, state);
    if (!proposal) break;
    CHECK(proposal->policy == "learning");
    CHECK(proposal->knob == "capacity_factor");
    CHECK(proposal->layer == -1);
    CHECK(proposal->current == cf);
    CHECK(proposal->value != cf);
    CHECK(Contains(proposal->reason, "regime " + regime));
    CHECK(Contains(proposal->reason, "explore"));
    walk.push_back(proposal->value);
    cf = proposal->value;
  }
  CHECK(walk == std::vector<double>{1.25, 1.0, 2.0, 3.0});

  // Equal distances go to the higher value.
  LearningPolicyParams even;
  even.arms = {{1.0}, {2.0}, {3.0}};
  LearningState fresh;
  Learn(RegimeOf(LSnapshot(2.0), even), {2.0}, -1.0, even, &fresh);
  auto up = ProposeLearning(LSnapshot(2.0), even, fresh);
  REQUIRE(up);
  CHECK(up->value == 3.0);

  // With min_samples 2, an arm in force holding one sample is still measured.
  even.min_samples = 2;
  CHECK_FALSE(ProposeLearning(LSnapshot(2.0), even, fresh));
  Learn(RegimeOf(LSnapshot(2.0), even), {2.0}, -1.0, even, &fresh);
  auto next = ProposeLearning(LSnapshot(2.0), even, fresh);
  REQUIRE(next);
  CHECK(next->value == 3.0);
}

TEST_CASE("Exploitation picks the best mean once every arm is known", "[learning]") {
  LearningPolicyParams p;
  p.exploration = 0;
  LearningState state;
  const std::string regime = RegimeOf(LSnapshot(2.0), p);
  Teach(regime, {-0.30, -0.20, -0.12, -0.18, -0.50}, 1, p, &state);
  Learn(regime, {1.5}, -0.12, p, &state);  // 1.5: 2 samples of -0.12

  auto proposal = ProposeLearning(LSnapshot(2.0), p, state);
  REQUIRE(proposal);
  CHECK(proposal->current == 2.0);
  CHECK(proposal->value == 1.5);
  CHECK(Contains(proposal->reason, "exploit capacity_factor 1.5"));
  CHECK(Contains(proposal->reason, "mean reward -0.120 over 2 samples"));
  CHECK(Contains(proposal->reason, "over 2 (mean -0.180 over 1)"));
  CHECK(Contains(proposal->reason, regime));

  // From anywhere else too; at the best arm nothing moves.
  for (double cf : {1.0, 1.25, 3.0}) {
    auto from = ProposeLearning(LSnapshot(cf), p, state);
    REQUIRE(from);
    CHECK(from->value == 1.5);
  }
  CHECK_FALSE(ProposeLearning(LSnapshot(1.5), p, state));
  // A value in force between arms (a clamped move) moves onto the best arm,
  // though it is the nearest one.
  auto onto = ProposeLearning(LSnapshot(1.55), p, state);
  REQUIRE(onto);
  CHECK(onto->value == 1.5);

  // Equal best means: the one nearest the arm in force.
  LearningState tie;
  Teach(regime, {-0.3, -0.1, -0.2, -0.1, -0.3}, 1, p, &tie);
  auto near = ProposeLearning(LSnapshot(1.5), p, tie);
  REQUIRE(near);
  CHECK(near->value == 1.25);
  auto from_top = ProposeLearning(LSnapshot(3.0), p, tie);
  REQUIRE(from_top);
  CHECK(from_top->value == 2.0);
}

TEST_CASE("With exploration > 0 a rarely tried arm is retried (UCB)", "[learning]") {
  LearningPolicyParams p;
  p.arms = {{1.0}, {2.0}};
  p.exploration = 0.1;
  LearningState state;
  const std::string regime = RegimeOf(LSnapshot(1.0), p);
  for (int i = 0; i < 50; ++i)
    Learn(regime, {1.0}, 0.0, p, &state);
  Learn(regime, {2.0}, -0.1, p, &state);

  // 2.0: -0.1 + 0.1 sqrt(ln 51 / 1) = 0.098 beats 1.0: 0 + 0.1 sqrt(ln 51 / 50) = 0.028.
  auto retry = ProposeLearning(LSnapshot(1.0), p, state);
  REQUIRE(retry);
  CHECK(retry->value == 2.0);
  CHECK(Contains(retry->reason, "exploit"));

  // Without the bonus the better mean stays.
  p.exploration = 0;
  CHECK_FALSE(ProposeLearning(LSnapshot(1.0), p, state));
  // A wider gap outweighs the bonus.
  p.exploration = 0.1;
  Learn(regime, {2.0}, -0.5, p, &state);  // 2.0: mean -0.3 over 2
  CHECK_FALSE(ProposeLearning(LSnapshot(1.0), p, state));
}

TEST_CASE("Regimes learn independently", "[learning]") {
  LearningPolicyParams p;
  p.exploration = 0;
  LearningState state;
  EngineSnapshot balanced = LSnapshot(1.5, 1.0);
  EngineSnapshot skewed = LSnapshot(1.5, 2.0);
  REQUIRE(RegimeOf(balanced, p) != RegimeOf(skewed, p));
  Teach(RegimeOf(skewed, p), {-0.4, -0.3, -0.2, -0.1, -0.3}, 1, p, &state);  // best 2.0

  // What the skewed regime learnt does not decide the balanced one: with no
  // sample there the arm in force is measured first, then the others explored.
  CHECK_FALSE(ProposeLearning(balanced, p, state));
  Learn(RegimeOf(balanced, p), {1.5}, -0.3, p, &state);
  auto balanced_move = ProposeLearning(balanced, p, state);
  REQUIRE(balanced_move);
  CHECK(Contains(balanced_move->reason, "explore"));
  CHECK(balanced_move->value == 1.25);
  auto skewed_move = ProposeLearning(skewed, p, state);
  REQUIRE(skewed_move);
  CHECK(skewed_move->value == 2.0);

  Teach(RegimeOf(balanced, p), {-0.1, -0.2, -0.3, -0.4, -0.5}, 1, p, &state);  // best 1.0
  auto balanced_best = ProposeLearning(balanced, p, state);
  REQUIRE(balanced_best);
  CHECK(balanced_best->value == 1.0);
  skewed_move = ProposeLearning(skewed, p, state);
  REQUIRE(skewed_move);
  CHECK(skewed_move->value == 2.0);

  // The tokens bucket is part of the regime too.
  p.tokens_edges = {1000};
  LearningState by_tokens;
  Teach(RegimeOf(LSnapshot(1.5, 1.0, 5000), p), {-0.4, -0.3, -0.2, -0.1, -0.3}, 1, p, &by_tokens);
  auto busy = ProposeLearning(LSnapshot(1.5, 1.0, 5000), p, by_tokens);
  REQUIRE(busy);
  CHECK(busy->value == 2.0);
  CHECK_FALSE(ProposeLearning(LSnapshot(1.5, 1.0, 10), p, by_tokens));  // unmeasured there
}

TEST_CASE("min_gain blocks small moves", "[learning]") {
  LearningPolicyParams p;
  p.arms = {{1.0}, {2.0}};
  p.exploration = 0;
  p.min_gain = 0.005;
  const std::string regime = RegimeOf(LSnapshot(1.0), p);

  LearningState small;
  Teach(regime, {-0.100, -0.096}, 1, p, &small);  // gain 0.004
  CHECK_FALSE(ProposeLearning(LSnapshot(1.0), p, small));

  LearningState large;
  Teach(regime, {-0.100, -0.094}, 1, p, &large);  // gain 0.006
  auto move = ProposeLearning(LSnapshot(1.0), p, large);
  REQUIRE(move);
  CHECK(move->value == 2.0);

  p.min_gain = 0;
  CHECK(ProposeLearning(LSnapshot(1.0), p, small));
}

TEST_CASE("min_steps holds the policy back on a young epoch", "[learning]") {
  LearningPolicyParams p;  // min_steps 16
  LearningState state;
  Learn(RegimeOf(LSnapshot(1.5), p), {1.5}, -1, p, &state);
  EngineSnapshot young = LSnapshot(1.5);
  young.steps_in_epoch = 15;
  CHECK_FALSE(ProposeLearning(young, p, state));
  young.steps_in_epoch = 16;
  auto move = ProposeLearning(young, p, state);
  REQUIRE(move);
  CHECK(move->value == 1.25);
}

TEST_CASE("Unlimited capacity (capacity_factor 0) is left alone", "[learning]") {
  LearningPolicyParams p;
  p.exploration = 0;
  LearningState state;
  const std::string regime = RegimeOf(LSnapshot(0), p);
  Teach(regime, {-0.5, -0.4, -0.3, -0.2, -0.1}, 1, p, &state);  // best 3.0
  CHECK_FALSE(ProposeLearning(LSnapshot(0), p, state));
  auto limited = ProposeLearning(LSnapshot(1.0), p, state);
  REQUIRE(limited);
  CHECK(limited->value == 3.0);
}

TEST_CASE("top_k and noise_std read their own value in force", "[learning]") {
  LearningPolicyParams k;
  k.knobs = {"top_k"};
  k.arms = {{1}, {2}, {4}};
  k.exploration = 0;
  REQUIRE(Validate(k).ok());
  EngineSnapshot s = LSnapshot(0);  // capacity unlimited: does not hold top_k back
  s.knobs.top_k = 4;
  s.knobs.noise_std = 0.05;
  CHECK(SettingInForce(s, k) == Setting{4});
  LearningState state;
  const std::string regime = RegimeOf(s, k);
  Teach(regime, {-0.3, -0.1, -0.2}, 1, k, &state);
  auto k_move = ProposeLearning(s, k, state);
  REQUIRE(k_move);
  CHECK(k_move->knob == "top_k");
  CHECK(k_move->current == 4);
  CHECK(k_move->value == 2);
  s.knobs.top_k = 2;
  CHECK_FALSE(ProposeLearning(s, k, state));

  LearningPolicyParams noise;
  noise.knobs = {"noise_std"};
  noise.arms = {{0}, {0.05}, {0.1}};
  noise.exploration = 0;
  REQUIRE(Validate(noise).ok());
  CHECK(SettingInForce(s, noise) == Setting{0.05});
  LearningState noise_state;
  Teach(regime, {-0.1, -0.3, -0.2}, 1, noise, &noise_state);
  auto n_move = ProposeLearning(s, noise, noise_state);
  REQUIRE(n_move);
  CHECK(n_move->knob == "noise_std");
  CHECK(n_move->current == 0.05);
  CHECK(n_move->value == 0);
  // noise_std 0 is a setting like any other (only capacity_factor 0 is special).
  s.knobs.noise_std = 0;
  CHECK_FALSE(ProposeLearning(s, noise, noise_state));
  s.knobs.noise_std = 0.1;
  REQUIRE(ProposeLearning(s, noise, noise_state));

  LearningPolicyParams cf;
  s.knobs.capacity_factor = 1.25;
  CHECK(SettingInForce(s, cf) == Setting{1.25});
}

TEST_CASE("Learning policy parameters are validated", "[learning]") {
  LearningPolicyParams p;
  REQUIRE(Validate(p).ok());
  p.knobs = {"overflow_policy"};  // an enum: not learnt
  CHECK(Contains(ValidateMessage(p), "knob"));
  p.knobs = {"phy2log"};
  CHECK(Contains(ValidateMessage(p), "knob"));
  p.knobs = {};
  CHECK(Contains(ValidateMessage(p), "knob"));
  p = {};
  p.knobs = {"capacity_factor", "capacity_factor"};
  p.arms = {{1, 1}, {2, 2}};
  CHECK(Contains(ValidateMessage(p), "twice"));
  p = {};
  p.knobs = {"capacity_factor", "top_k"};
  p.arms = {{1, 8}, {2}};  // one value short
  CHECK(Contains(ValidateMessage(p), "arms[1] has 1 values for 2 knobs"));
  p.arms = {{1, 8}, {2, 8}, {1.0000001, 8}};  // the same setting after ValueKey
  CHECK(Contains(ValidateMessage(p), "repeats"));
  p.arms = {{1, 8}, {2, 7.5}};
  CHECK(Contains(ValidateMessage(p), "values[1] (top_k) must be a whole number for top_k"));
  p.arms = {{2, 8}, {1, 6}};  // joint settings need no order
  CHECK(Validate(p).ok());
  p = {};
  p.arms = {{1.5}};
  CHECK(Contains(ValidateMessage(p), "values"));
  p = {};
  p.arms = {{1.0}, {2.0}, {2.0}};
  CHECK(Contains(ValidateMessage(p), "values"));
  p = {};
  p.arms = {{2.0}, {1.0}};
  CHECK(Contains(ValidateMessage(p), "values"));
  p = {};
  p.arms = {{0.0}, {1.0}};  // capacity_factor 0 means unlimited, not an arm
  CHECK(Contains(ValidateMessage(p), "values"));
  p = {};
  p.arms = {{1.0}, {INFINITY}};
  CHECK(Contains(ValidateMessage(p), "values"));
  p = {};
  p.knobs = {"top_k"};
  p.arms = {{1}, {1.5}};
  CHECK(Contains(ValidateMessage(p), "values"));
  p = {};
  p.knobs = {"noise_std"};
  p.arms = {{-0.1}, {0.1}};
  CHECK(Contains(ValidateMessage(p), "values"));
  p = {};
  p.imbalance_edges = {3.0, 1.5};
  CHECK(Contains(ValidateMessage(p), "imbalance_edges"));
  p = {};
  p.tokens_edges = {100, 100};
  CHECK(Contains(ValidateMessage(p), "tokens_edges"));
  p = {};
  p.exploration = -0.1;
  CHECK(Contains(ValidateMessage(p), "exploration"));
  p = {};
  p.min_samples = 0;
  CHECK(Contains(ValidateMessage(p), "min_samples"));
  p = {};
  p.min_gain = -0.001;
  CHECK(Contains(ValidateMessage(p), "min_gain"));
}

// A fake environment: reward = -(value - optimum)^2, optimum 1.5 under
// balanced load and 2.0 under skewed load. Each iteration the policy sees the
// snapshot, its proposal is applied, and the epoch that then runs is learnt.
TEST_CASE("A simulated loop converges to the best arm of each regime", "[learning]") {
  LearningPolicyParams p;  // defaults: exploration 0.1, min_gain 0.005
  REQUIRE(Validate(p).ok());
  const double balanced_load = 1.0;  // imbalance bucket 0
  const double skewed_load = 2.0;    // imbalance bucket 1
  auto optimum = [&](double load) { return load == balanced_load ? 1.5 : 2.0; };
  auto reward = [&](double load, double cf) {
    double d = cf - optimum(load);
    return -d * d;
  };

  LearningState state;
  double cf = 1.0;
  int num_moves = 0;
  // Regimes alternate every 10 epochs; the last 10 of each regime are scored.
  int num_last_at_optimum[2] = {0, 0};
  for (int i = 0; i < 60; ++i) {
    int phase = i / 10;
    double load = phase % 2 == 0 ? balanced_load : skewed_load;
    EngineSnapshot s = LSnapshot(cf, load);
    if (auto proposal = ProposeLearning(s, p, state)) {
      CHECK(proposal->value != cf);
      CHECK(proposal->current == cf);
      cf = proposal->value;
      ++num_moves;
    }
    Learn(RegimeOf(s, p), {cf}, reward(load, cf), p, &state);
    if (phase >= 4 && cf == optimum(load)) ++num_last_at_optimum[phase % 2];
  }
  CHECK(num_moves >= 10);  // every arm of both regimes was tried
  CHECK(num_last_at_optimum[0] >= 7);
  CHECK(num_last_at_optimum[1] >= 7);

  // In each regime the optimum is the most tried arm, and greedy play from
  // any arm goes to it.
  for (double load : {balanced_load, skewed_load}) {
    EngineSnapshot s = LSnapshot(1.0, load);
    const std::vector<ArmStats> stats = ArmStatsOf(RegimeOf(s, p), p, state);
    size_t best = NearestArm({optimum(load)}, p);
    for (size_t a = 0; a < stats.size(); ++a) {
      CHECK(stats[a].samples >= 1);
      if (a != best) CHECK(stats[a].samples < stats[best].samples);
    }
    LearningPolicyParams greedy = p;
    greedy.exploration = 0;
    for (const Setting& arm : p.arms) {
      const double from = arm[0];
      s.knobs.capacity_factor = from;
      auto move = ProposeLearning(s, greedy, state);
      if (from == optimum(load)) {
        CHECK_FALSE(move);
      } else {
        REQUIRE(move);
        CHECK(move->value == optimum(load));
      }
    }
  }
}

TEST_CASE("GridOf makes every combination, the first knob varying slowest", "[learning]") {
  CHECK(GridOf({{1, 2}, {6, 8}}) == std::vector<Setting>{{1, 6}, {1, 8}, {2, 6}, {2, 8}});
  CHECK(GridOf({{1, 2, 3}}) == std::vector<Setting>{{1}, {2}, {3}});
  CHECK(GridOf({{1, 2}, {}}).empty());
  CHECK(GridOf({}).empty());
  CHECK(KnobsName({"capacity_factor", "top_k"}) == "capacity_factor,top_k");
  CHECK(SettingText({"capacity_factor", "top_k"}, {2.5, 6}) == "capacity_factor 2.5, top_k 6");
}

// A joint learner of (capacity_factor, top_k) over a 2 x 2 grid.
LearningPolicyParams Joint() {
  LearningPolicyParams p;
  p.knobs = {"capacity_factor", "top_k"};
  p.arms = GridOf({{1.0, 2.0}, {4, 8}});  // (1, 4), (1, 8), (2, 4), (2, 8)
  p.exploration = 0;
  return p;
}

EngineSnapshot JSnapshot(double cf, uint32_t top_k) {
  EngineSnapshot s = LSnapshot(cf);
  s.knobs.top_k = top_k;
  return s;
}

TEST_CASE("Joint settings: statistics per setting, the nearest arm by spread-scaled distance",
          "[learning]") {
  const LearningPolicyParams p = Joint();
  REQUIRE(Validate(p).ok());
  CHECK(SettingInForce(JSnapshot(1.5, 8), p) == Setting{1.5, 8});
  // One unit of each knob is its spread over the arms (1 and 4).
  CHECK(NearestArm({1.0, 4}, p) == 0);
  CHECK(NearestArm({1.2, 7}, p) == 1);
  CHECK(NearestArm({1.9, 5}, p) == 2);
  CHECK(NearestArm({1.5, 6}, p) == 0);  // equidistant from all four: the lowest index

  LearningState state;
  const std::string regime = RegimeOf(JSnapshot(1.0, 8), p);
  Learn(regime, {1.0, 8}, -0.5, p, &state);
  Learn(regime, {1.0, 8}, -0.3, p, &state);
  Learn(regime, {1.0, 7}, -0.1, p, &state);  // clamped: credited to no arm
  Learn(regime, {1.0}, -0.1, p, &state);     // wrong size: not recorded
  CHECK(state.samples == 3);
  const std::vector<ArmStats> stats = ArmStatsOf(regime, p, state);
  CHECK(stats[1].samples == 2);
  CHECK(stats[1].Mean() == Approx(-0.4));
  CHECK(stats[0].samples == 0);
  CHECK(state.regimes.at(regime).at(SettingKey({1.0, 7})).samples == 1);
}

TEST_CASE("Joint settings: a move changes every knob that differs; the first is the proposal",
          "[learning]") {
  const LearningPolicyParams p = Joint();
  LearningState state;
  const std::string regime = RegimeOf(JSnapshot(1.0, 8), p);
  Teach(regime, {-0.5, -0.4, -0.1, -0.3}, 1, p, &state);  // best (2, 4)

  // From (1, 8) both knobs move: capacity_factor leads, top_k goes with it.
  auto both = ProposeLearning(JSnapshot(1.0, 8), p, state);
  REQUIRE(both);
  CHECK(both->knob == "capacity_factor");
  CHECK(both->current == 1.0);
  CHECK(both->value == 2.0);
  REQUIRE(both->companions.size() == 1);
  CHECK(both->companions[0].knob == "top_k");
  CHECK(both->companions[0].policy == "learning");
  CHECK(both->companions[0].current == 8);
  CHECK(both->companions[0].value == 4);
  CHECK(both->companions[0].layer == -1);
  CHECK(Contains(both->reason, "exploit capacity_factor 2, top_k 4"));
  CHECK(Contains(both->reason, "over capacity_factor 1, top_k 8 (mean -0.400 over 1)"));

  // From (2, 8) only top_k differs: it is the proposal, alone.
  auto one = ProposeLearning(JSnapshot(2.0, 8), p, state);
  REQUIRE(one);
  CHECK(one->knob == "top_k");
  CHECK(one->current == 8);
  CHECK(one->value == 4);
  CHECK(one->companions.empty());
  CHECK_FALSE(ProposeLearning(JSnapshot(2.0, 4), p, state));  // at the best

  // Exploration walks to the nearest unexplored setting.
  LearningState fresh;
  Learn(regime, {1.0, 4}, -0.5, p, &fresh);
  auto walk = ProposeLearning(JSnapshot(1.0, 4), p, fresh);
  REQUIRE(walk);
  // (1, 8) and (2, 4) are one unit away, (2, 8) two: the higher of the tie.
  CHECK(walk->knob == "capacity_factor");
  CHECK(walk->value == 2.0);
  CHECK(walk->companions.empty());
  CHECK(Contains(walk->reason, "explore capacity_factor 2, top_k 4"));
}

TEST_CASE("Joint settings: ArmsChange follows settings; other knobs reset", "[learning]") {
  LearningPolicyParams before = Joint();
  LearningState state;
  Learn("r", {2.0, 4}, -0.1, before, &state);
  LearningPolicyParams after = before;
  after.arms = GridOf({{2.0, 3.0}, {4, 8}});
  const std::string line = ArmsChange(before, after, state);
  CHECK(Contains(line,
                 "arms changed from [(1, 4), (1, 8), (2, 4), (2, 8)] to [(2, 4), (2, 8), "
                 "(3, 4), (3, 8)]"));
  CHECK(Contains(line, "(2, 4): 1 samples, (2, 8): new"));
  CHECK(Contains(line, "no longer arms: (1, 4) (0 samples, kept)"));
  LearningPolicyParams other = before;
  other.knobs = {"capacity_factor", "noise_std"};
  other.arms = {{1, 0}, {2, 0.05}};
  CHECK(Contains(ArmsChange(before, other, state),
                 "knobs changed from capacity_factor,top_k to capacity_factor,noise_std"));
}

}  // namespace
}  // namespace moe::policies
