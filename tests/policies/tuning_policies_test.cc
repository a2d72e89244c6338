#include <catch2/catch.hpp>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "moe/policies/adaptive_k_policy.h"
#include "moe/policies/bias_policy.h"
#include "moe/policies/noise_policy.h"
#include "policy_test_util.h"

namespace moe::policies {
namespace {

using testing::BaseSnapshot;
using testing::Contains;
using testing::ValidateMessage;

// ---- Adaptive K -------------------------------------------------------------

EngineSnapshot KSnapshot(uint32_t k, double step_us, std::optional<double> quality) {
  EngineSnapshot s = BaseSnapshot();
  s.knobs.top_k = k;
  s.step_us = step_us;
  s.quality_error = quality;
  return s;
}

TEST_CASE("Adaptive K lowers K on latency over budget while quality is fine", "[adaptive_k]") {
  AdaptiveKParams p;  // slo 50 ms, quality budget 0.05, headroom 0.7
  REQUIRE(Validate(p).ok());
  auto down = ProposeAdaptiveK(KSnapshot(4, 60'000, 0.01), p);
  REQUIRE(down);
  CHECK(down->policy == "adaptive_k");
  CHECK(down->knob == "top_k");
  CHECK(down->layer == -1);
  CHECK(down->current == 4);
  CHECK(down->value == 3);
  CHECK(Contains(down->reason, "latency over budget"));
  CHECK(Contains(down->reason, "60000"));

  auto unmeasured = ProposeAdaptiveK(KSnapshot(4, 60'000, std::nullopt), p);
  REQUIRE(unmeasured);  // no quality figure does not block lowering
  CHECK(unmeasured->value == 3);
}

TEST_CASE("Adaptive K raises K on quality over budget only with latency headroom", "[adaptive_k]") {
  AdaptiveKParams p;
  auto up = ProposeAdaptiveK(KSnapshot(2, 20'000, 0.08), p);
  REQUIRE(up);
  CHECK(up->current == 2);
  CHECK(up->value == 3);
  CHECK(Contains(up->reason, "quality over budget"));
  CHECK(Contains(up->reason, "0.08"));

  // 40 ms: under the SLO but above headroom * slo = 35 ms.
  CHECK_FALSE(ProposeAdaptiveK(KSnapshot(2, 40'000, 0.08), p));
  // Quality over budget is never inferred from a missing figure.
  CHECK_FALSE(ProposeAdaptiveK(KSnapshot(2, 20'000, std::nullopt), p));
}

TEST_CASE("Adaptive K proposes nothing on conflict, few steps, in budget or at bounds",
          "[adaptive_k]") {
  AdaptiveKParams p;
  p.min_k = 2;
  p.max_k = 4;
  // Latency and quality both over budget: a conflict.
  CHECK_FALSE(ProposeAdaptiveK(KSnapshot(3, 60'000, 0.08), p));
  // Both within budget.
  CHECK_FALSE(ProposeAdaptiveK(KSnapshot(3, 40'000, 0.01), p));
  // Too few steps to trust.
  EngineSnapshot young = KSnapshot(3, 60'000, 0.01);
  young.steps_in_epoch = 7;
  CHECK_FALSE(ProposeAdaptiveK(young, p));
  young.steps_in_epoch = 8;
  CHECK(ProposeAdaptiveK(young, p));
  // At the bounds.
  CHECK_FALSE(ProposeAdaptiveK(KSnapshot(2, 60'000, 0.01), p));  // min_k
  CHECK_FALSE(ProposeAdaptiveK(KSnapshot(4, 20'000, 0.08), p));  // max_k
  auto from_above = ProposeAdaptiveK(KSnapshot(3, 20'000, 0.08), p);
  REQUIRE(from_above);
  CHECK(from_above->value == 4);
}

TEST_CASE("Adaptive K parameters are validated", "[adaptive_k]") {
  AdaptiveKParams p;
  p.slo_us = 0;
  CHECK(Contains(ValidateMessage(p), "slo_us"));
  p = {};
  p.quality_budget = -1;
  CHECK(Contains(ValidateMessage(p), "quality_budget"));
  p = {};
  p.headroom = 1.5;
  CHECK(Contains(ValidateMessage(p), "headroom"));
  p = {};
  p.headroom = 0;
  CHECK(Contains(ValidateMessage(p), "headroom"));
  p = {};
  p.min_k = 0;
  CHECK(Contains(ValidateMessage(p), "min_k"));
  p = {};
  p.min_k = 5;
  p.max_k = 3;
  CHECK(Contains(ValidateMessage(p), "max_k"));
}

// ---- Noise ------------------------------------------------------------------

EngineSnapshot NoiseSnapshot(double noise, double max_over_mean, std::optional<double> quality) {
  EngineSnapshot s = BaseSnapshot();
  s.knobs.noise_std = noise;
  s.max_over_mean = max_over_mean;
  s.quality_error = quality;
  return s;
}

TEST_CASE("Noise rises under imbalance with quality in budget, up to max_noise", "[noise]") {
  NoisePolicyParams p;  // high 1.5, low 1.15, step 0.01, max 0.1
  REQUIRE(Validate(p).ok());
  auto up = ProposeNoise(NoiseSnapshot(0.0, 2.0, 0.01), p);
  REQUIRE(up);
  CHECK(up->policy == "noise");
  CHECK(up->knob == "noise_std");
  CHECK(up->layer == -1);
  CHECK(up->current == 0.0);
  CHECK(up->value == Approx(0.01));
  CHECK(Contains(up->reason, "2.000"));

  auto unmeasured = ProposeNoise(NoiseSnapshot(0.03, 2.0, std::nullopt), p);
  REQUIRE(unmeasured);
  CHECK(unmeasured->value == Approx(0.04));

  auto capped = ProposeNoise(NoiseSnapshot(0.095, 2.0, 0.01), p);
  REQUIRE(capped);
  CHECK(capped->value == Approx(0.1));
  CHECK_FALSE(ProposeNoise(NoiseSnapshot(0.1, 2.0, 0.01), p));  // at the cap
}

TEST_CASE("Noise falls when quality is over budget, even under imbalance", "[noise]") {
  NoisePolicyParams p;
  auto down = ProposeNoise(NoiseSnapshot(0.05, 2.0, 0.08), p);
  REQUIRE(down);
  CHECK(down->current == Approx(0.05));
  CHECK(down->value == Approx(0.04));
  CHECK(Contains(down->reason, "quality over budget"));
  CHECK(Contains(down->reason, "0.08"));

  auto floor = ProposeNoise(NoiseSnapshot(0.004, 2.0, 0.08), p);
  REQUIRE(floor);
  CHECK(floor->value == 0.0);
}

TEST_CASE("Noise falls when the load is balanced without it", "[noise]") {
  NoisePolicyParams p;
  auto down = ProposeNoise(NoiseSnapshot(0.05, 1.05, 0.01), p);
  REQUIRE(down);
  CHECK(down->value == Approx(0.04));
  CHECK(Contains(down->reason, "balanced without it"));
  // Values are rounded to 1e-4.
  auto rounded = ProposeNoise(NoiseSnapshot(0.03337, 1.05, std::nullopt), p);
  REQUIRE(rounded);
  CHECK(rounded->value == Approx(0.0234).margin(1e-12));
}

TEST_CASE("Noise proposes nothing at 0, between thresholds, or with few steps", "[noise]") {
  NoisePolicyParams p;
  CHECK_FALSE(ProposeNoise(NoiseSnapshot(0.0, 2.0, 0.08), p));   // quality over, noise off
  CHECK_FALSE(ProposeNoise(NoiseSnapshot(0.0, 1.05, 0.01), p));  // balanced, noise off
  CHECK_FALSE(ProposeNoise(NoiseSnapshot(0.05, 1.3, 0.01), p));  // between low and high
  EngineSnapshot young = NoiseSnapshot(0.0, 2.0, 0.01);
  young.steps_in_epoch = 3;
  CHECK_FALSE(ProposeNoise(young, p));
}

TEST_CASE("Noise parameters are validated", "[noise]") {
  NoisePolicyParams p;
  p.imbalance_low = 1.6;
  CHECK(Contains(ValidateMessage(p), "imbalance_low"));
  p = {};
  p.imbalance_low = 0;
  CHECK(Contains(ValidateMessage(p), "imbalance_low"));
  p = {};
  p.quality_budget = 0;
  CHECK(Contains(ValidateMessage(p), "quality_budget"));
  p = {};
  p.step = 0;
  CHECK(Contains(ValidateMessage(p), "step"));
  p = {};
  p.max_noise = -0.1;
  CHECK(Contains(ValidateMessage(p), "max_noise"));
}

// ---- Expert bias ------------------------------------------------------------

// Eight experts, mean 10: relative errors +2.0, 0, 0, +0.05, -0.05, -0.5, -0.5, -1.
const std::vector<double> kSkewedLoad = {30, 10, 10, 10.5, 9.5, 5, 5, 0};

LayerEstimate Layer(uint32_t id, std::vector<double> load, double max_over_mean) {
  LayerEstimate l;
  l.layer = id;
  l.max_over_mean = max_over_mean;
  l.expert_load = std::move(load);
  return l;
}

EngineSnapshot BiasSnapshot(std::vector<LayerEstimate> layers) {
  EngineSnapshot s = BaseSnapshot();
  s.layers = std::move(layers);
  return s;
}

TEST_CASE("Bias lowers a hot expert, raises cold ones, leaves the deadband alone", "[bias]") {
  BiasPolicyParams p;  // rate 0.002, max_step 0.005, deadband 0.1
  REQUIRE(Validate(p).ok());
  auto prop = ProposeBias(BiasSnapshot({Layer(0, kSkewedLoad, 3.0)}), p);
  REQUIRE(prop);
  CHECK(prop->policy == "bias");
  CHECK(prop->knob == "expert_bias");
  CHECK(prop->layer == -1);
  REQUIRE(prop->current_vectors.size() == 1);
  REQUIRE(prop->vectors.size() == 1);
  CHECK(prop->current_vectors[0] == std::vector<float>(8, 0.0f));
  const std::vector<float>& b = prop->vectors[0];
  REQUIRE(b.size() == 8);
  CHECK(b[0] == Approx(-0.004));  // hot: -0.002 * 2.0
  CHECK(b[1] == 0.0f);            // errors 0, +-0.05: inside the deadband
  CHECK(b[2] == 0.0f);
  CHECK(b[3] == 0.0f);
  CHECK(b[4] == 0.0f);
  CHECK(b[5] == Approx(0.001));  // cold: -0.002 * -0.5
  CHECK(b[6] == Approx(0.001));
  CHECK(b[7] == Approx(0.002));
  CHECK(prop->current == 0.0);
  CHECK(prop->value == Approx(0.004));
  CHECK(Contains(prop->reason, "layer 0"));
  CHECK(Contains(prop->reason, "3.000"));
  CHECK(Contains(prop->reason, "hottest expert 0"));
  CHECK(Contains(prop->reason, "coldest expert 7"));
}

TEST_CASE("Bias changes stay within max_step and max_bias", "[bias]") {
  BiasPolicyParams p;
  p.update_rate = 0.01;  // would move the hot expert by 0.02 and the coldest by 0.01
  EngineSnapshot s = BiasSnapshot({Layer(0, kSkewedLoad, 3.0)});
  s.knobs.expert_bias = {{0.0f, 0, 0, 0, 0, 0.02f, 0.098f, 0.0f}};
  auto prop = ProposeBias(s, p);
  REQUIRE(prop);
  const std::vector<float>& before = prop->current_vectors[0];
  const std::vector<float>& after = prop->vectors[0];
  for (size_t e = 0; e < after.size(); ++e) {
    CHECK(std::fabs(after[e] - before[e]) <= p.max_step + 1e-6);
    CHECK(std::fabs(after[e]) <= p.max_bias + 1e-6);
  }
  CHECK(after[0] == Approx(-0.005));  // limited by max_step
  CHECK(after[5] == Approx(0.025));
  CHECK(after[6] == Approx(0.1));  // limited by max_bias
  CHECK(after[7] == Approx(0.005));
  CHECK(prop->value == Approx(0.1));

  // A bias already at the bound in the pushed direction stays there.
  EngineSnapshot pinned = BiasSnapshot({Layer(0, kSkewedLoad, 3.0)});
  pinned.knobs.expert_bias = {{-0.1f, 0, 0, 0, 0, 0.1f, 0.1f, 0.0f}};
  auto pinned_prop = ProposeBias(pinned, p);
  REQUIRE(pinned_prop);
  CHECK(pinned_prop->vectors[0][0] == -0.1f);
  CHECK(pinned_prop->vectors[0][5] == 0.1f);
  CHECK(pinned_prop->vectors[0][7] == Approx(0.005));
}

TEST_CASE("Bias never proposes a no-op", "[bias]") {
  BiasPolicyParams p;
  // Every pushed element already at its bound.
  EngineSnapshot pinned = BiasSnapshot({Layer(0, kSkewedLoad, 3.0)});
  pinned.knobs.expert_bias = {{-0.1f, 0.03f, 0, 0, 0, 0.1f, 0.1f, 0.1f}};
  CHECK_FALSE(ProposeBias(pinned, p));
  // Reported imbalance, but every expert inside the deadband.
  CHECK_FALSE(
      ProposeBias(BiasSnapshot({Layer(0, {10.8, 9.2, 10.5, 9.5, 10, 10, 10, 10}, 1.3)}), p));
  // Balanced layers, an empty load, a zero load.
  CHECK_FALSE(ProposeBias(BiasSnapshot({Layer(0, kSkewedLoad, 1.1)}), p));
  CHECK_FALSE(ProposeBias(BiasSnapshot({Layer(0, {}, 3.0)}), p));
  CHECK_FALSE(ProposeBias(BiasSnapshot({Layer(0, std::vector<double>(8, 0.0), 3.0)}), p));
  CHECK_FALSE(ProposeBias(BiasSnapshot({}), p));
  // Too few steps.
  EngineSnapshot young = BiasSnapshot({Layer(0, kSkewedLoad, 3.0)});
  young.steps_in_epoch = 7;
  CHECK_FALSE(ProposeBias(young, p));
}

TEST_CASE("Bias acts per layer: signs follow each layer's load, balanced layers untouched",
          "[bias]") {
  BiasPolicyParams p;
  std::vector<double> reversed(kSkewedLoad.rbegin(), kSkewedLoad.rend());  // hot expert 7
  EngineSnapshot s =
      BiasSnapshot({Layer(0, kSkewedLoad, 3.0), Layer(1, kSkewedLoad, 1.1),  // below min_imbalance
                    Layer(2, reversed, 3.0)});
  s.knobs.expert_bias = {{}, {0.01f, 0, 0, 0, 0, 0, 0, -0.01f}};  // layer 2 absent: zeros
  auto prop = ProposeBias(s, p);
  REQUIRE(prop);
  REQUIRE(prop->current_vectors.size() == 3);
  REQUIRE(prop->vectors.size() == 3);
  CHECK(prop->current_vectors[0] == std::vector<float>(8, 0.0f));
  CHECK(prop->current_vectors[2] == std::vector<float>(8, 0.0f));
  CHECK(prop->vectors[1] == prop->current_vectors[1]);  // balanced layer copied
  CHECK(prop->vectors[1][0] == 0.01f);

  CHECK(prop->vectors[0][0] < 0);  // layer 0: expert 0 hot, expert 7 cold
  CHECK(prop->vectors[0][7] > 0);
  CHECK(prop->vectors[2][7] < 0);  // layer 2: the reverse
  CHECK(prop->vectors[2][0] > 0);
  CHECK(prop->current == Approx(0.01));
  CHECK(Contains(prop->reason, "layer 0"));
  CHECK(Contains(prop->reason, "layer 2"));
  CHECK_FALSE(Contains(prop->reason, "layer 1"));
  CHECK(Contains(prop->reason, "hottest expert 7"));
}

TEST_CASE("Bias starts from the bias in force", "[bias]") {
  BiasPolicyParams p;
  EngineSnapshot s = BiasSnapshot({Layer(0, kSkewedLoad, 3.0)});
  std::vector<float> in_force = {0.01f, 0.02f, -0.03f, 0.04f, 0, 0, 0, -0.05f};
  s.knobs.expert_bias = {in_force};
  auto prop = ProposeBias(s, p);
  REQUIRE(prop);
  CHECK(prop->current_vectors[0] == in_force);
  const std::vector<float>& b = prop->vectors[0];
  CHECK(b[0] == Approx(0.006));  // 0.01 - 0.004
  CHECK(b[1] == 0.02f);          // deadband: kept as it was
  CHECK(b[2] == -0.03f);
  CHECK(b[3] == 0.04f);
  CHECK(b[7] == Approx(-0.048));  // -0.05 + 0.002
  CHECK(prop->current == Approx(0.05));
  CHECK(prop->value == Approx(0.048));
}

TEST_CASE("Bias follows the demand before capacity when the engine reports it", "[bias]") {
  BiasPolicyParams p;
  // Capacity caps expert 0: served loads look balanced, demand does not.
  LayerEstimate capped = Layer(0, {100, 100, 100, 100}, 1.0);
  CHECK_FALSE(ProposeBias(BiasSnapshot({capped}), p));  // served only: nothing to do
  capped.expert_demand = {250, 50, 50, 50};
  auto prop = ProposeBias(BiasSnapshot({capped}), p);
  REQUIRE(prop);
  REQUIRE(prop->vectors.size() == 1);
  CHECK(prop->vectors[0][0] < 0.0f);  // the expert the router over-picks
  CHECK(prop->vectors[0][1] > 0.0f);
  CHECK(prop->reason.find("2.500") != std::string::npos);  // demand's max over mean
}

TEST_CASE("Bias parameters are validated", "[bias]") {
  BiasPolicyParams p;
  p.update_rate = 0;
  CHECK(Contains(ValidateMessage(p), "update_rate"));
  p = {};
  p.max_step = 0;
  CHECK(Contains(ValidateMessage(p), "max_step"));
  p = {};
  p.deadband = -0.1;
  CHECK(Contains(ValidateMessage(p), "deadband"));
  p = {};
  p.min_imbalance = 0;
  CHECK(Contains(ValidateMessage(p), "min_imbalance"));
  p = {};
  p.max_bias = 0;
  CHECK(Contains(ValidateMessage(p), "max_bias"));
  p = {};
  p.max_step = 0.2;
  CHECK(Contains(ValidateMessage(p), "max_step"));
  p = {};
  p.deadband = 0;  // allowed: every error counts
  CHECK(Validate(p).ok());
}

}  // namespace
}  // namespace moe::policies
