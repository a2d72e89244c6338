// Capacity replays (counterfactual_policy.h ReplayCapacities): a step worked
// out once under the candidates prices to the same bits as replaying its
// demand, so the counterfactual policy's scores do not change when the
// controller keeps replays; a replay made under other settings, a straggler
// or a candidate it lacks falls back to the replay of the demand.

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "moe/policies/counterfactual_policy.h"
#include "policy_test_util.h"

namespace moe::policies {
namespace {

constexpr uint32_t kLayers = 6;
constexpr uint32_t kExperts = 16;
constexpr uint32_t kReplicas = 20;
constexpr uint32_t kDevices = 4;

// A snapshot of `num_steps` steps of skewed random demand, a placement with
// replicas of the hot experts, and a calibrated cost model.
EngineSnapshot RandomSnapshot(std::mt19937_64& rng, int num_steps, telemetry::CapacityScope scope) {
  EngineSnapshot s = testing::BaseSnapshot();
  s.num_experts = kExperts;
  s.num_replicas = kReplicas;
  s.num_devices = kDevices;
  s.reference_top_k = 2;
  s.knobs.top_k = 2;
  s.knobs.capacity_factor = 1.1;  // not a candidate: scored first, on its own
  s.knobs.capacity_scope = scope;
  std::uniform_int_distribution<uint32_t> expert(0, kExperts - 1);
  for (uint32_t l = 0; l < kLayers; ++l) {
    std::vector<uint32_t> p(kReplicas);
    for (uint32_t slot = 0; slot < kReplicas; ++slot)
      p[slot] = slot < kExperts ? slot : expert(rng) % 4;  // hot experts 0..3 get replicas
    s.knobs.phy2log.push_back(p);
  }
  s.cost_model.calibrated = true;
  s.cost_model.device = {57.5, 0.75};
  s.cost_model.overhead = {33.8, 2.125};
  std::gamma_distribution<double> skew(0.7, 1.0);
  for (int i = 0; i < num_steps; ++i) {
    StepDemand d;
    d.step = static_cast<uint64_t>(i);
    d.epoch = 3;
    d.tokens = 64 + 16 * (i % 7);
    d.layers.resize(kLayers);
    d.all_to_all_us.assign(kLayers, 3.5);
    for (uint32_t l = 0; l < kLayers; ++l) {
      if ((i + l) % 9 == 4) continue;  // a layer that reported no demand
      std::vector<double> w(kExperts);
      double sum = 0;
      for (double& x : w)
        sum += (x = skew(rng));
      d.layers[l].resize(kExperts);
      for (uint32_t e = 0; e < kExperts; ++e)
        d.layers[l][e] = std::floor(w[e] / sum * d.tokens * 2);
    }
    s.recent.push_back(std::move(d));
  }
  return s;
}

void Attach(EngineSnapshot* s, const KnobValues& knobs, const std::vector<double>& factors) {
  s->capacity_replays.clear();
  for (const StepDemand& step : s->recent)
    s->capacity_replays.push_back(
        ReplayCapacities(step, knobs, s->num_replicas, s->num_devices, factors));
}

// Replays that claim twice the rows on each layer's busiest device: a
// result that comes from them moves.
void DoubleBusiestRows(EngineSnapshot* s) {
  for (auto& r : s->capacity_replays) {
    auto copy = std::make_shared<CapacityReplay>(*r);
    for (PathSums& path : copy->paths)
      path.max_rows *= 2;
    r = copy;
  }
}

void RequireSameScores(const std::vector<CandidateScore>& a, const std::vector<CandidateScore>& b) {
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    INFO("candidate " << a[i].capacity_factor);
    CHECK(a[i].capacity_factor == b[i].capacity_factor);
    CHECK(a[i].score == b[i].score);  // to the bit
    CHECK(a[i].mean_reward == b[i].mean_reward);
    CHECK(a[i].drop_rate == b[i].drop_rate);
    CHECK(a[i].steps == b[i].steps);
  }
}

TEST_CASE("A capacity replay prices a step to the same bits as its demand", "[counterfactual]") {
  std::mt19937_64 rng(5);
  CounterfactualParams params;
  params.min_steps = 1;
  params.lookback_steps = 24;
  RewardParams reward;
  for (telemetry::CapacityScope scope :
       {telemetry::CapacityScope::kExpert, telemetry::CapacityScope::kSlot}) {
    EngineSnapshot s = RandomSnapshot(rng, 40, scope);
    const std::vector<CandidateScore> replayed = ScoreCapacity(s, params, reward);
    REQUIRE(replayed.size() == params.candidates.size() + 1);

    std::vector<double> factors = params.candidates;
    factors.push_back(s.knobs.capacity_factor);
    Attach(&s, s.knobs, factors);
    RequireSameScores(ScoreCapacity(s, params, reward), replayed);
    // The scores above came from the replays: doctored ones change them.
    EngineSnapshot doctored = s;
    DoubleBusiestRows(&doctored);
    CHECK(ScoreCapacity(doctored, params, reward)[1].mean_reward < replayed[1].mean_reward);
    // And one step at a time, for every candidate.
    for (size_t i = 0; i < s.recent.size(); ++i) {
      const CapacityReplay& r = *s.capacity_replays[i];
      CHECK(r.settings == ReplaySettings(s.knobs, kReplicas, kDevices));
      for (size_t c = 0; c < r.capacity_factors.size(); ++c) {
        const StepPrediction p = PredictStep(s, s.recent[i], r.capacity_factors[c], params, reward);
        CHECK(r.dropped[c] / r.slots == p.drop_rate);
      }
    }
  }
}

TEST_CASE("A capacity replay that does not hold falls back to the demand", "[counterfactual]") {
  std::mt19937_64 rng(9);
  CounterfactualParams params;
  params.min_steps = 1;
  RewardParams reward;
  EngineSnapshot s = RandomSnapshot(rng, 30, telemetry::CapacityScope::kSlot);

  SECTION("made under another placement") {
    KnobValues before = s.knobs;
    before.phy2log[2][kReplicas - 1] = 9;
    const std::vector<CandidateScore> replayed = ScoreCapacity(s, params, reward);
    Attach(&s, before, params.candidates);
    CHECK_FALSE(s.capacity_replays[0]->settings == ReplaySettings(s.knobs, kReplicas, kDevices));
    RequireSameScores(ScoreCapacity(s, params, reward), replayed);
  }
  SECTION("a straggler: the slowest device is not the one with the most rows") {
    s.cost_model.device_factor = {1.0, 1.0, 3.0, 1.0};
    const std::vector<CandidateScore> replayed = ScoreCapacity(s, params, reward);
    Attach(&s, s.knobs, params.candidates);
    RequireSameScores(ScoreCapacity(s, params, reward), replayed);
  }
  SECTION("candidates it was not made for, and steps without one") {
    const std::vector<CandidateScore> replayed = ScoreCapacity(s, params, reward);
    Attach(&s, s.knobs, {1.0, 2.0});
    s.capacity_replays[3].reset();
    RequireSameScores(ScoreCapacity(s, params, reward), replayed);
  }
  SECTION("another K") {
    KnobValues k1 = s.knobs;
    k1.top_k = 1;
    const std::vector<CandidateScore> replayed = ScoreCapacity(s, params, reward);
    Attach(&s, k1, params.candidates);
    RequireSameScores(ScoreCapacity(s, params, reward), replayed);
  }
}

TEST_CASE("A placement's gain takes the placement in force from the replays", "[counterfactual]") {
  std::mt19937_64 rng(13);
  CounterfactualParams params;
  params.min_steps = 1;
  RewardParams reward;
  EngineSnapshot s = RandomSnapshot(rng, 30, telemetry::CapacityScope::kSlot);
  std::vector<std::vector<uint32_t>> other = s.knobs.phy2log;
  for (auto& layer : other)
    layer.back() = 7;  // one replica moves to a cold expert in every layer
  const double replayed = PlacementGain(s, other, params, reward);
  REQUIRE(replayed != 0);
  std::vector<double> factors = params.candidates;
  factors.push_back(s.knobs.capacity_factor);
  Attach(&s, s.knobs, factors);
  CHECK(PlacementGain(s, other, params, reward) == replayed);  // to the bit
  // Used: a doctored replay of the placement in force moves the gain.
  DoubleBusiestRows(&s);
  CHECK(PlacementGain(s, other, params, reward) > replayed);
}

TEST_CASE("Placement fingerprints tell placements apart", "[counterfactual]") {
  std::vector<std::vector<uint32_t>> a = {{0, 1, 2, 0}, {3, 2, 1, 0}};
  std::vector<std::vector<uint32_t>> b = a;
  CHECK(PlacementFingerprint(a) == PlacementFingerprint(b));
  b[1][3] = 1;
  CHECK(PlacementFingerprint(a) != PlacementFingerprint(b));
  // The same slots split differently over layers are another placement.
  CHECK(PlacementFingerprint({{0, 1}, {2}}) != PlacementFingerprint({{0}, {1, 2}}));
  CHECK(PlacementFingerprint({}) != PlacementFingerprint({{}}));
}

}  // namespace
}  // namespace moe::policies
