// The learning policy's exploration gate: an unexplored setting is tried
// live only when its pessimistic drop rate on the window's own demand meets
// the limit (learning_policy.h rule 3), and the drop rate it is judged by
// (counterfactual_policy.h PessimisticDropRate).

#include <catch2/catch.hpp>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moe/policies/counterfactual_policy.h"
#include "moe/policies/learning_policy.h"
#include "policy_test_util.h"

namespace moe::policies {
namespace {

using testing::Contains;
using testing::ValidateMessage;

// 4 experts, top-2, 8 tokens a step: token-slots 16, capacity at cf 1 is
// ceil(1 * 8 * 2 / 4) = 4 per expert. Every step's demand is `demand`.
EngineSnapshot Demand(std::vector<double> demand, double cf, int num_steps = 20) {
  EngineSnapshot s = testing::BaseSnapshot(static_cast<uint64_t>(num_steps));
  s.num_experts = 4;
  s.num_replicas = 4;
  s.knobs.top_k = 2;
  s.knobs.capacity_factor = cf;
  for (int i = 0; i < num_steps; ++i) {
    StepDemand d;
    d.step = static_cast<uint64_t>(i);
    d.epoch = s.epoch;
    d.tokens = 8;
    d.layers = {demand};
    s.recent.push_back(d);
  }
  return s;
}

const std::vector<double> kHot = {8, 4, 2, 2};  // expert 0 at 2x the mean

TEST_CASE("PessimisticDropRate at the K in force is each step's exact drop rate", "[learning]") {
  EngineSnapshot s = Demand(kHot, 1.5);
  // cf 1: capacity 4, expert 0 drops 4 of 16 slots.
  CHECK(PessimisticDropRate(s, 1.0, 2, 16, 0.9) == Approx(0.25));
  // cf 1.5: capacity 6, drops 2.
  CHECK(PessimisticDropRate(s, 1.5, 2, 16, 0.9) == Approx(0.125));
  CHECK(PessimisticDropRate(s, 2.0, 2, 16, 0.9) == 0.0);
  CHECK(PessimisticDropRate(s, 0.0, 2, 16, 0.9) == 0.0);  // unlimited
  // The same figure as the counterfactual replay's.
  const StepPrediction p = PredictStep(s, s.recent[0], 1.0, CounterfactualParams{}, RewardParams{});
  CHECK(PessimisticDropRate(s, 1.0, 2, 16, 0.9) == p.drop_rate);
}

TEST_CASE("PessimisticDropRate bounds a smaller K from above and scales a larger one",
          "[learning]") {
  EngineSnapshot s = Demand(kHot, 1.5);
  // K 1, cf 2: capacity ceil(2 * 8 / 4) = 4. A token's first choice is one of
  // its two, so expert 0 has at most 8: at most 4 of the 8 slots drop.
  CHECK(PessimisticDropRate(s, 2.0, 1, 16, 0.9) == Approx(0.5));
  // K 1, cf 1: capacity 2; the bound (6 + 2 of 8) is clipped to every slot.
  CHECK(PessimisticDropRate(s, 1.0, 1, 16, 0.9) == 1.0);
  // K 4, cf 1: capacity 8; demand x2 is {16, 8, 4, 4}, at most 8 tokens each.
  CHECK(PessimisticDropRate(s, 1.0, 4, 16, 0.9) == 0.0);
  // K 3, cf 1: capacity 6; demand x1.5 is {12 -> 8, 6, 3, 3}: 2 of 24 slots.
  CHECK(PessimisticDropRate(s, 1.0, 3, 16, 0.9) == Approx(2.0 / 24));
}

TEST_CASE("PessimisticDropRate takes a quantile over the newest steps with demand", "[learning]") {
  EngineSnapshot s = Demand({4, 4, 4, 4}, 1.0, 10);  // balanced: no drops at cf 1
  s.recent[0].layers = {{16, 0, 0, 0}};              // the oldest step: 12 of 16 drop
  s.recent[9].layers = {{8, 8, 0, 0}};               // the newest: 8 of 16 drop
  s.recent[5].layers = {{}};                         // no demand: not a step of the window
  CHECK(PessimisticDropRate(s, 1.0, 2, 100, 1.0) == Approx(0.75));  // the worst step
  CHECK(PessimisticDropRate(s, 1.0, 2, 100, 0.0) == 0.0);           // the best
  CHECK(PessimisticDropRate(s, 1.0, 2, 3, 1.0) == Approx(0.5));     // the newest 3
  // 9 steps with demand; 0.5 is the median: a balanced step.
  CHECK(PessimisticDropRate(s, 1.0, 2, 100, 0.5) == 0.0);

  for (size_t i = 0; i < s.recent.size(); ++i)
    s.recent[i].layers = {{}};
  CHECK_FALSE(PessimisticDropRate(s, 1.0, 2, 100, 0.9).has_value());
}

TEST_CASE("PessimisticDropRate prices a step from its replay when it holds", "[learning]") {
  EngineSnapshot s = Demand(kHot, 1.5, 4);
  for (const StepDemand& step : s.recent) {
    s.capacity_replays.push_back(
        ReplayCapacities(step, s.knobs, s.num_replicas, s.num_devices, {1.0, 1.5, 2.0}));
  }
  CHECK(PessimisticDropRate(s, 1.0, 2, 16, 1.0) == Approx(0.25));
  // A replay is used as it stands: one made to say otherwise is believed ...
  auto told = std::make_shared<CapacityReplay>(*s.capacity_replays.back());
  told->dropped[0] = 8;  // half of the 16 slots at cf 1
  s.capacity_replays.back() = told;
  CHECK(PessimisticDropRate(s, 1.0, 2, 16, 1.0) == Approx(0.5));
  // ... but not for a factor it did not replay, nor for another K.
  CHECK(PessimisticDropRate(s, 1.25, 2, 16, 1.0) == Approx(3.0 / 16));  // capacity 5
  CHECK(PessimisticDropRate(s, 2.0, 1, 16, 1.0) == Approx(0.5));
  // Nor under other settings: a replay made under K 4 does not hold at K 2.
  KnobValues other = s.knobs;
  other.top_k = 4;
  for (size_t i = 0; i < s.recent.size(); ++i) {
    s.capacity_replays[i] =
        ReplayCapacities(s.recent[i], other, s.num_replicas, s.num_devices, {1.0});
  }
  CHECK(PessimisticDropRate(s, 1.0, 2, 16, 1.0) == Approx(0.25));
}

LearningPolicyParams GateParams(std::vector<Setting> arms) {
  LearningPolicyParams p;
  p.arms = std::move(arms);
  p.min_steps = 4;
  p.imbalance_edges = {};
  return p;
}

TEST_CASE("The learner passes over an unexplored value whose predicted drops exceed the limit",
          "[learning]") {
  LearningPolicyParams p = GateParams({{1.0}, {1.25}, {2.0}, {3.0}});
  LearningState state;
  const EngineSnapshot s = Demand(kHot, 1.25);  // cf 1.25: capacity 5, 3 of 16 drop
  const std::string regime = RegimeOf(s, p);
  Learn(regime, {1.25}, 0.5, p, &state);

  // Without the gate the nearest unexplored value, 1.0, is tried.
  p.explore_max_drop_rate = 1;
  std::optional<Proposal> open = ProposeLearning(s, p, state);
  REQUIRE(open);
  CHECK(open->value == 1.0);
  CHECK_FALSE(Contains(open->reason, "predicted drops"));

  // cf 1 drops 25% on the window: it is passed over for 2.0, which drops none.
  p.explore_max_drop_rate = 0.05;
  std::optional<Proposal> gated = ProposeLearning(s, p, state);
  REQUIRE(gated);
  CHECK(gated->value == 2.0);
  INFO(gated->reason);
  CHECK(Contains(gated->reason, "explore capacity_factor 2"));
  CHECK(Contains(gated->reason, "gated: 1 (drops 25.0%)"));
  CHECK(Contains(gated->reason, "predicted drops 0.0% <= 5.0%"));

  // A limit above cf 1's drops lets it be tried.
  p.explore_max_drop_rate = 0.25;
  std::optional<Proposal> met = ProposeLearning(s, p, state);
  REQUIRE(met);
  CHECK(met->value == 1.0);
}

TEST_CASE("When only gated values are unexplored the learner exploits what it knows",
          "[learning]") {
  LearningPolicyParams p = GateParams({{1.0}, {1.25}, {2.0}});
  LearningState state;
  const EngineSnapshot s = Demand(kHot, 1.25);
  const std::string regime = RegimeOf(s, p);
  Learn(regime, {1.25}, 0.5, p, &state);
  Learn(regime, {2.0}, 0.6, p, &state);
  std::optional<Proposal> prop = ProposeLearning(s, p, state);
  REQUIRE(prop);
  CHECK(prop->value == 2.0);
  INFO(prop->reason);
  CHECK(Contains(prop->reason, "exploit capacity_factor 2"));
  CHECK(Contains(prop->reason, "not explored, predicted drops above 5.0%: 1 (drops 25.0%)"));

  // Nothing known and every unexplored value gated: nothing to do.
  LearningState empty;
  CHECK_FALSE(ProposeLearning(Demand(kHot, 2.0), GateParams({{1.0}, {1.25}}), empty));
}

TEST_CASE("A gated value in force that was never measured is left for a known one", "[learning]") {
  LearningPolicyParams p = GateParams({{1.0}, {2.0}, {3.0}});
  LearningState state;
  const EngineSnapshot s = Demand(kHot, 1.0);  // in force: cf 1, 25% drops, no sample yet
  const std::string regime = RegimeOf(s, p);
  // 2.0 is known, 3.0 is unexplored and safe: exploring it comes first.
  Learn(regime, {2.0}, 0.6, p, &state);
  std::optional<Proposal> explore = ProposeLearning(s, p, state);
  REQUIRE(explore);
  CHECK(explore->value == 3.0);  // 1.0 (in force) is gated, 2.0 known
  // Once 3.0 is known too, the best known one wins, whatever min_gain.
  Learn(regime, {3.0}, 0.4, p, &state);
  p.min_gain = 1e6;
  std::optional<Proposal> exploit = ProposeLearning(s, p, state);
  REQUIRE(exploit);
  CHECK(exploit->value == 2.0);
}

TEST_CASE("Without demand the gate is open and says so", "[learning]") {
  LearningPolicyParams p = GateParams({{1.0}, {1.25}, {2.0}});
  LearningState state;
  EngineSnapshot s = Demand(kHot, 1.25);
  for (size_t i = 0; i < s.recent.size(); ++i)
    s.recent[i].layers = {{}};
  Learn(RegimeOf(s, p), {1.25}, 0.5, p, &state);
  std::optional<Proposal> prop = ProposeLearning(s, p, state);
  REQUIRE(prop);
  CHECK(prop->value == 1.0);
  CHECK(Contains(prop->reason, "no demand to gate on"));
}

TEST_CASE("A joint setting is gated by its own capacity factor and K", "[learning]") {
  LearningPolicyParams p = GateParams(GridOf({{1.0, 2.0}, {1, 2}}));
  p.knobs = {"capacity_factor", "top_k"};
  const EngineSnapshot s = Demand(kHot, 1.5);
  CHECK(ExploreDropRate(s, {2.0, 1}, p) == PessimisticDropRate(s, 2.0, 1, 16, 0.9));
  CHECK(ExploreDropRate(s, {1.0, 2}, p) == Approx(0.25));
  // A knob it does not learn is taken as in force (cf 1.5 here).
  LearningPolicyParams k_only = GateParams({{1}, {2}});
  k_only.knobs = {"top_k"};
  CHECK(ExploreDropRate(s, {2}, k_only) == Approx(0.125));
}

TEST_CASE("The gate's parameters are checked", "[learning]") {
  LearningPolicyParams p;
  p.explore_max_drop_rate = 1.5;
  CHECK(Contains(ValidateMessage(p), "explore_max_drop_rate must be in [0, 1]"));
  p = LearningPolicyParams{};
  p.explore_quantile = -0.1;
  CHECK(Contains(ValidateMessage(p), "explore_quantile must be in [0, 1]"));
  p = LearningPolicyParams{};
  p.explore_lookback_steps = 0;
  CHECK(Contains(ValidateMessage(p), "explore_lookback_steps must be >= 1"));
}

}  // namespace
}  // namespace moe::policies
