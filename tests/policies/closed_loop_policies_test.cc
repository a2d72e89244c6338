// The cost model, the serving reward, the counterfactual capacity policy and
// the single-mechanism baselines of the closed-loop benchmark.

#include <catch2/catch.hpp>

#include <cmath>

#include "moe/policies/baseline_policies.h"
#include "moe/policies/bias_policy.h"
#include "moe/policies/cost_model.h"
#include "moe/policies/counterfactual_policy.h"
#include "moe/policies/reward.h"
#include "policy_test_util.h"

namespace moe::policies {
namespace {

using testing::Contains;
using testing::ValidateMessage;

CostModel Model(double fixed, double per_row, double overhead = 0) {
  CostModel m;
  m.device = {fixed, per_row};
  m.overhead = {overhead, 0};
  m.calibrated = true;
  return m;
}

// One engine of 4 experts on 2 devices (slots 0,1 on device 0; 2,3 on 1),
// top-2, whose recent steps all had `demand` per expert for `tokens` tokens.
EngineSnapshot Skewed(std::vector<double> demand, double tokens, int num_steps, double cf) {
  EngineSnapshot s;
  s.engine_id.assign(1, 'e');
  s.num_experts = 4;
  s.num_replicas = 4;
  s.num_devices = 2;
  s.reference_top_k = 2;
  s.knobs.top_k = 2;
  s.knobs.capacity_factor = cf;
  s.cost_model = Model(10, 1);
  for (int i = 0; i < num_steps; ++i) {
    StepDemand d;
    d.step = static_cast<uint64_t>(i);
    d.tokens = tokens;
    d.layers = {demand};
    d.all_to_all_us = {0};
    s.recent.push_back(d);
  }
  s.steps_in_epoch = static_cast<uint64_t>(num_steps);
  return s;
}

TEST_CASE("AffineFitter recovers an affine cost and refuses what it cannot fit", "[cost_model]") {
  AffineFitter fit;
  for (int x = 1; x <= 20; ++x)
    fit.Add(x, 5.0 + 0.25 * x);
  Result<AffineCost> c = fit.Fit(8);
  REQUIRE(c.ok());
  CHECK(c->fixed_us == Approx(5.0));
  CHECK(c->per_row_us == Approx(0.25));
  CHECK(c->At(0) == 0);  // a device with no rows costs nothing
  CHECK(c->At(4) == Approx(6.0));

  AffineFitter few;
  few.Add(1, 1);
  few.Add(2, 2);
  CHECK(few.Fit(8).status().code() == StatusCode::kFailedPrecondition);

  AffineFitter flat;
  for (int i = 0; i < 10; ++i)
    flat.Add(7, 3.0 + i);
  CHECK(Contains(flat.Fit(4).status().message(), "do not vary"));
  CHECK(flat.Flat().fixed_us == Approx(7.5));  // the median of 3..12

  // Outliers (a descheduled process) do not move the fit.
  AffineFitter noisy;
  for (int x = 1; x <= 200; ++x)
    noisy.Add(x, 5.0 + 0.25 * x + (x % 17 == 0 ? 5000.0 : 0.0));
  Result<AffineCost> robust = noisy.Fit(8);
  REQUIRE(robust.ok());
  CHECK(robust->per_row_us == Approx(0.25).epsilon(0.05));
  CHECK(robust->fixed_us == Approx(5.0).margin(1.0));

  // Only the newest max_points pairs count.
  AffineFitter ring(50);
  for (int x = 1; x <= 100; ++x)
    ring.Add(x, 1000.0);
  for (int x = 1; x <= 50; ++x)
    ring.Add(x, 2.0 * x);
  CHECK(ring.count() == 50);
  Result<AffineCost> recent = ring.Fit(8);
  REQUIRE(recent.ok());
  CHECK(recent->per_row_us == Approx(2.0));

  // More rows never cost less: a falling fit is flattened.
  AffineFitter falling;
  for (int x = 1; x <= 10; ++x)
    falling.Add(x, 20.0 - x);
  Result<AffineCost> f = falling.Fit(4);
  REQUIRE(f.ok());
  CHECK(f->per_row_us == 0);
  CHECK(f->fixed_us == Approx(14.5).margin(0.6));
}

TEST_CASE("DeviceRows splits an expert's rows over its replicas and their devices",
          "[cost_model]") {
  // Default placement, 4 experts, 4 slots, 2 devices.
  std::vector<double> rows = DeviceRows({40, 10, 10, 20}, {}, 4, 2);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0] == Approx(50));
  CHECK(rows[1] == Approx(30));
  // 6 slots: expert 0 on slots 0 and 3 (one per device), so its 40 rows split.
  rows = DeviceRows({40, 10, 10, 20}, {0, 1, 2, 0, 3, 2}, 6, 2);
  CHECK(rows[0] == Approx(20 + 10 + 5));
  CHECK(rows[1] == Approx(20 + 20 + 5));
}

TEST_CASE("Reward: imbalance, drops, quality and migration always cost", "[reward]") {
  RewardParams r;
  const CostModel m = Model(10, 1, 5);
  OutcomeFigures balanced;
  balanced.steps = 1;
  balanced.model_latency_us = LayerPathUs(m, 40, {40, 40}, 2);
  balanced.balanced_latency_us = BalancedLayerPathUs(m, 40, 80, 2, 2);
  CHECK(balanced.model_latency_us == Approx(5 + 50 + 2));
  CHECK(Reward(balanced, r) == Approx(0).margin(1e-12));

  OutcomeFigures skewed = balanced;
  skewed.model_latency_us = LayerPathUs(m, 40, {60, 20}, 2);
  CHECK(Reward(skewed, r) == Approx(-(77.0 / 57.0 - 1)));

  OutcomeFigures dropping = balanced;
  dropping.drop_rate = 0.05;
  dropping.quality_error = 0.02;
  CHECK(Reward(dropping, r) == Approx(-10 * 0.05 - 5 * 0.02));

  OutcomeFigures moving = balanced;
  moving.migration_us = 57;  // one balanced step of move time
  CHECK(Reward(moving, r) == Approx(-r.migration_weight));

  const RewardTerms t = Terms(skewed, r);
  CHECK(t.latency + t.slo + t.drops + t.quality + t.migration + t.capacity ==
        Approx(Reward(skewed, r)));

  // Without a cost model only the absolute SLO speaks.
  OutcomeFigures unmodelled;
  unmodelled.critical_path_us = 2 * r.slo_us;
  CHECK(Reward(unmodelled, r) == Approx(-1.0));

  RewardParams bad;
  bad.migration_weight = -1;
  CHECK(Contains(ValidateMessage(bad), "migration_weight"));
}

TEST_CASE("PredictStep replays a capacity factor on the step's own demand", "[counterfactual]") {
  // 35 tokens, K 2, 4 experts: capacity = ceil(cf * 17.5).
  EngineSnapshot s = Skewed({40, 10, 10, 10}, 35, 1, 1.0);
  CounterfactualParams p;
  RewardParams r;
  StepPrediction one = PredictStep(s, s.recent[0], 1.0, p, r);
  CHECK(one.drop_rate == Approx(22.0 / 70.0));  // expert 0 keeps 18 of 40
  CHECK(one.latency_us == Approx(10 + 28));     // device 0: 18 + 10 rows
  CHECK(one.balanced_us == Approx(10 + 35));    // 70 rows over 2 devices
  StepPrediction unlimited = PredictStep(s, s.recent[0], 0.0, p, r);
  CHECK(unlimited.drop_rate == 0);
  CHECK(unlimited.latency_us == Approx(10 + 50));
  StepPrediction three = PredictStep(s, s.recent[0], 3.0, p, r);
  CHECK(three.drop_rate == 0);  // capacity 53 >= 40
}

TEST_CASE("PredictStep: under the slot scope a replica adds its expert room", "[counterfactual]") {
  // 35 tokens, K 2, 4 experts, capacity 18 at cf 1; expert 0 (demand 40) has
  // slots 0 and 3 of 6 (one on each device).
  EngineSnapshot s = Skewed({40, 10, 10, 10}, 35, 1, 1.0);
  s.num_replicas = 6;
  s.knobs.phy2log = {{0, 1, 2, 0, 3, 2}};
  CounterfactualParams p;
  RewardParams r;
  const StepPrediction expert = PredictStep(s, s.recent[0], 1.0, p, r);
  CHECK(expert.drop_rate == Approx(22.0 / 70.0));  // 18 of 40 kept, split 9 + 9
  CHECK(expert.latency_us == Approx(10 + 9 + 10 + 5));
  s.knobs.capacity_scope = telemetry::CapacityScope::kSlot;
  const StepPrediction slot = PredictStep(s, s.recent[0], 1.0, p, r);
  CHECK(slot.drop_rate == Approx(4.0 / 70.0));  // 36 of 40 kept, 18 per replica
  CHECK(slot.latency_us == Approx(10 + 18 + 10 + 5));
  CHECK(slot.reward > expert.reward);
  CHECK(ReplicaCounts({0, 1, 2, 0, 3, 2}, 6, 4) == std::vector<uint32_t>{2, 1, 2, 1});
  CHECK(ReplicaCounts({}, 6, 4) == std::vector<uint32_t>{2, 2, 1, 1});
}

TEST_CASE("The counterfactual policy picks the capacity the reward prefers", "[counterfactual]") {
  CounterfactualParams p;
  RewardParams r;
  EngineSnapshot s = Skewed({40, 10, 10, 10}, 35, 16, 1.0);
  std::optional<Proposal> up = ProposeCounterfactualCapacity(s, p, r);
  REQUIRE(up);
  CHECK(up->policy == "counterfactual");
  CHECK(up->knob == "capacity_factor");
  CHECK(up->current == 1.0);
  // Expert 0 needs 40 / 17.5 = 2.29x: the smallest candidate that drops nothing.
  CHECK(up->value == Approx(2.5));
  CHECK(Contains(up->reason, "16 steps"));

  // At that setting nothing better is predicted.
  EngineSnapshot there = s;
  there.knobs.capacity_factor = 2.5;
  CHECK_FALSE(ProposeCounterfactualCapacity(there, p, r));

  // When latency is all that counts, dropping the hot expert's excess wins.
  RewardParams latency_only;
  latency_only.drop_weight = 0;
  latency_only.quality_weight = 0;
  std::optional<Proposal> down = ProposeCounterfactualCapacity(there, p, latency_only);
  REQUIRE(down);
  CHECK(down->value == Approx(1.0));

  // Pessimism: one step in five much hotter is what a low quantile plans for.
  EngineSnapshot mixed = Skewed({20, 20, 15, 15}, 35, 20, 1.0);
  for (size_t i = 0; i < mixed.recent.size(); i += 5)
    mixed.recent[i].layers = {{55, 5, 5, 5}};
  CounterfactualParams median = p;
  median.pessimism = 0.5;
  CounterfactualParams cautious = p;
  cautious.pessimism = 0.1;
  std::optional<Proposal> m = ProposeCounterfactualCapacity(mixed, median, r);
  std::optional<Proposal> c = ProposeCounterfactualCapacity(mixed, cautious, r);
  REQUIRE(m);
  REQUIRE(c);
  CHECK(c->value > m->value);
}

TEST_CASE("The counterfactual policy moves to unlimited capacity unless a finite one does better",
          "[counterfactual][unlimited]") {
  RewardParams r;
  // Expert 0 needs 40 / 17.5 = 2.29x: with candidates up to 2 every finite
  // one drops, and unlimited capacity (0) is the best.
  CounterfactualParams p;
  p.candidates = {1.5, 2.0, 0.0};
  EngineSnapshot s = Skewed({40, 10, 10, 10}, 35, 16, 1.0);
  std::optional<Proposal> up = ProposeCounterfactualCapacity(s, p, r);
  REQUIRE(up);
  CHECK(up->value == 0);
  // A finite candidate that drops nothing serves the same rows: the window
  // cannot tell them apart, and the tie goes to unlimited capacity (the next
  // shift drops nothing); without it, to the smaller finite one.
  p.candidates = {1.5, 2.0, 2.5, 3.0, 0.0};
  up = ProposeCounterfactualCapacity(s, p, r);
  REQUIRE(up);
  CHECK(up->value == 0);
  p.candidates = {1.5, 2.0, 3.0, 2.5};
  up = ProposeCounterfactualCapacity(s, p, r);
  REQUIRE(up);
  CHECK(up->value == Approx(2.5));
  // Where dropping pays (latency alone counts), a finite one beats unlimited.
  RewardParams latency_only;
  latency_only.drop_weight = 0;
  latency_only.quality_weight = 0;
  p.candidates = {1.0, 0.0};
  EngineSnapshot unlimited = s;
  unlimited.knobs.capacity_factor = 0;
  up = ProposeCounterfactualCapacity(unlimited, p, latency_only);
  REQUIRE(up);
  CHECK(up->value == 1.0);
  p.candidates = {1.5, 2.0, 2.5, 0.0};
  // Under unlimited capacity, with nothing to gain from a finite one, it stays.
  EngineSnapshot dropless = s;
  dropless.knobs.capacity_factor = 0;
  CHECK_FALSE(ProposeCounterfactualCapacity(dropless, p, r));
  CHECK(Validate(p).ok());
  p.candidates = {1.5, -1.0};
  CHECK_FALSE(Validate(p).ok());
}

TEST_CASE("PlacementGain judges a placement on the window's own demand", "[counterfactual]") {
  CounterfactualParams p;
  RewardParams r;
  // Experts 0 and 1 (both hot) share device 0 under the default placement.
  EngineSnapshot s = Skewed({30, 30, 5, 5}, 35, 10, 0.0);
  const std::vector<std::vector<uint32_t>> split = {{0, 2, 1, 3}};
  const double gain = PlacementGain(s, split, p, r);
  // Device rows 60/10 -> 35/35: latency 70 -> 45 against a balanced 45.
  CHECK(gain == Approx(70.0 / 45.0 - 1.0));
  CHECK(PlacementGain(s, {{0, 1, 2, 3}}, p, r) == Approx(0).margin(1e-12));
  CHECK(PlacementGain(s, {{2, 3, 0, 1}}, p, r) == Approx(0).margin(1e-12));  // mirrored
  EngineSnapshot uncalibrated = s;
  uncalibrated.cost_model.calibrated = false;
  CHECK(PlacementGain(uncalibrated, split, p, r) == 0);
}

TEST_CASE("The counterfactual policy waits for demand and a cost model", "[counterfactual]") {
  CounterfactualParams p;
  RewardParams r;
  EngineSnapshot few = Skewed({40, 10, 10, 10}, 35, 3, 1.0);
  CHECK_FALSE(ProposeCounterfactualCapacity(few, p, r));
  EngineSnapshot uncalibrated = Skewed({40, 10, 10, 10}, 35, 16, 1.0);
  uncalibrated.cost_model.calibrated = false;
  CHECK(ScoreCapacity(uncalibrated, p, r).empty());
  EngineSnapshot no_demand = Skewed({}, 35, 16, 1.0);
  CHECK_FALSE(ProposeCounterfactualCapacity(no_demand, p, r));

  CounterfactualParams bad = p;
  bad.pessimism = 0;
  CHECK(Contains(ValidateMessage(bad), "pessimism"));
  bad = p;
  bad.candidates = {1.0, -2.0};
  CHECK(Contains(ValidateMessage(bad), "candidates"));
}

TEST_CASE("Dynamic capacity follows the hottest expert's need", "[baselines]") {
  DynamicCapacityParams p;
  EngineSnapshot s = Skewed({40, 10, 10, 10}, 35, 6, 1.0);
  std::optional<Proposal> prop = ProposeDynamicCapacity(s, p);
  REQUIRE(prop);
  CHECK(prop->policy == "dynamic_capacity");
  CHECK(prop->value == Approx(2.3));  // 40 / 17.5 = 2.286, rounded up to 0.05
  s.knobs.capacity_factor = 2.3;
  CHECK_FALSE(ProposeDynamicCapacity(s, p));
  CHECK_FALSE(ProposeDynamicCapacity(Skewed({}, 35, 6, 1.0), p));
}

TEST_CASE("Periodic EPLB re-plans from the window's mean demand every period", "[baselines]") {
  PeriodicEplbParams p;
  p.period_steps = 10;
  EngineSnapshot s = Skewed({60, 10, 10, 10}, 45, 12, 1.0);
  s.num_replicas = 6;                      // 2 spare slots
  s.knobs.phy2log = {{0, 1, 2, 3, 1, 2}};  // device rows 70 / 20
  std::optional<Proposal> prop = ProposePeriodicEplb(s, p);
  REQUIRE(prop);
  CHECK(prop->policy == "eplb");
  REQUIRE(prop->placements.size() == 1);
  int hot = 0;
  for (uint32_t e : prop->placements[0])
    hot += e == 0 ? 1 : 0;
  CHECK(hot == 3);  // the two spare slots go to the hot expert
  CHECK(prop->value < prop->current);

  EngineSnapshot early = s;
  early.steps_in_epoch = 5;
  CHECK_FALSE(ProposePeriodicEplb(early, p));
  EngineSnapshot one_device = s;
  one_device.num_devices = 1;
  CHECK_FALSE(ProposePeriodicEplb(one_device, p));
}

TEST_CASE("Bias sign update moves every expert by the rate, as DeepSeek-V3 does", "[baselines]") {
  BiasPolicyParams p;
  p.sign_update = true;
  p.update_rate = 0.001;
  p.max_step = 0.01;
  p.deadband = 0;
  p.min_imbalance = 1.0;
  EngineSnapshot s = Skewed({40, 10, 10, 20}, 40, 10, 1.0);
  LayerEstimate layer;
  layer.layer = 0;
  layer.expert_load = {40, 10, 10, 20};
  layer.max_over_mean = 2.0;
  s.layers = {layer};
  std::optional<Proposal> prop = ProposeBias(s, p);
  REQUIRE(prop);
  REQUIRE(prop->vectors.size() == 1);
  CHECK(prop->vectors[0][0] == Approx(-0.001));
  CHECK(prop->vectors[0][1] == Approx(0.001));
  CHECK(prop->vectors[0][3] == 0);  // at the mean: no error, no move
}

}  // namespace
}  // namespace moe::policies
