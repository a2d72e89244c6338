// The state estimate learns a straggler (EngineState with
// policies::DeviceSpeedEstimator): from the engine's per-device expert times,
// a device that runs 3x slower gets a factor of 3 in the snapshot's cost
// model, the fit stays that of the usual device, and the factor goes once
// the device recovers.

#include <catch2/catch.hpp>

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "engine_state.h"

namespace moe::controller {
namespace {

constexpr uint32_t kDevices = 4;

telemetry::StepRecord Step(std::mt19937_64& rng, uint64_t step, double slow_factor) {
  std::uniform_int_distribution<uint32_t> rows(40, 160);
  std::uniform_real_distribution<double> noise(0.95, 1.05);
  telemetry::StepRecord r;
  r.engine_id = "e";
  r.step = step;
  r.epoch = 0;
  r.step_us = 1000;
  for (uint32_t l = 0; l < 4; ++l) {
    telemetry::LayerRecord layer;
    layer.layer = l;
    layer.num_tokens = 256;
    layer.num_token_slots = 512;
    layer.expert_tokens.assign(8, 64);
    for (uint32_t d = 0; d < kDevices; ++d) {
      const uint32_t n = rows(rng);
      layer.device_tokens.push_back(n);
      // 20 us + 0.5 us a row, device 3 slowed down by slow_factor.
      layer.timing.device_expert_us.push_back((20 + 0.5 * n) * noise(rng) *
                                              (d == 3 ? slow_factor : 1.0));
    }
    layer.timing.router_us = 5;
    layer.timing.total_us = 100;
    r.layers.push_back(layer);
  }
  return r;
}

// The Hello of an engine of 4 layers x 8 experts on kDevices devices.
telemetry::Hello FourLayerHello() {
  telemetry::Hello hello;
  hello.engine_id = "e";
  hello.num_layers = 4;
  hello.num_experts = 8;
  hello.num_devices = kDevices;
  hello.knobs.top_k = 2;
  return hello;
}

TEST_CASE("The state estimate learns a slow device and forgets it once it recovers",
          "[controller][straggler]") {
  EngineState state("e", 64);
  state.OnHello(FourLayerHello(), 0);
  std::mt19937_64 rng(5);
  uint64_t step = 0;
  for (; step < 200; ++step)
    state.OnStep(Step(rng, step, 1.0), static_cast<int64_t>(step));
  CHECK(state.Snapshot(1000).cost_model.device_factor.empty());
  for (; step < 400; ++step)
    state.OnStep(Step(rng, step, 3.0), static_cast<int64_t>(step));
  const policies::CostModel slow = state.Snapshot(1000).cost_model;
  REQUIRE(slow.calibrated);
  REQUIRE(slow.device_factor.size() == kDevices);
  CHECK(slow.device_factor[0] == 1.0);
  CHECK(slow.device_factor[3] == Approx(3.0).epsilon(0.1));
  // The fit is the usual device's, not pulled up by the straggler.
  CHECK(slow.device.per_row_us == Approx(0.5).epsilon(0.15));
  CHECK(slow.device.fixed_us == Approx(20).epsilon(0.3));
  // The modelled path prices device 3's rows at 3x: a step with equal rows
  // on every device costs 3 x (20 + 0.5 x 100) on its slowest device.
  const std::vector<double> rows(kDevices, 100);
  CHECK(policies::LayerPathUs(slow, 256, rows, 0) - slow.overhead.At(256) ==
        Approx(3.0 * slow.device.At(100)).epsilon(0.01));
  for (; step < 600; ++step)
    state.OnStep(Step(rng, step, 1.0), static_cast<int64_t>(step));
  CHECK(state.Snapshot(1000).cost_model.device_factor.empty());
}

TEST_CASE("The state estimate sees a slowdown within half its window of steps",
          "[controller][straggler]") {
  EngineState state("e", 64);
  state.OnHello(FourLayerHello(), 0);
  std::mt19937_64 rng(9);
  uint64_t step = 0;
  for (; step < 100; ++step)
    state.OnStep(Step(rng, step, 1.0), static_cast<int64_t>(step));
  REQUIRE(state.Snapshot(1000).cost_model.device_factor.empty());
  REQUIRE(state.TakeCostModelNews());  // the fit itself
  uint64_t seen_after = 0;
  for (uint64_t i = 1; i <= 40 && seen_after == 0; ++i, ++step) {
    state.OnStep(Step(rng, step, 3.0), static_cast<int64_t>(step));
    if (!state.Snapshot(1000).cost_model.device_factor.empty()) seen_after = i;
  }
  // 16 steps of ratios, one a step: the straggler is priced 8 steps in (not
  // a whole window, nor a fixed schedule of updates), and said once.
  CHECK(seen_after == 8);
  std::optional<std::string> news = state.TakeCostModelNews();
  REQUIRE(news);
  CHECK(news->find("device 3 at") != std::string::npos);
  for (int i = 0; i < 20; ++i, ++step)
    state.OnStep(Step(rng, step, 3.0), static_cast<int64_t>(step));
  CHECK_FALSE(state.TakeCostModelNews());  // it drifts within 10%: no news
}

TEST_CASE("A fixed cost model holds whatever the times; stragglers are measured against it or off",
          "[controller][straggler][cost_model]") {
  CostModelOptions fixed;
  fixed.fixed = true;
  fixed.device = {100, 2.0};  // not the 20 us + 0.5 us a row the devices run
  fixed.overhead = {40, 0};
  EngineState state("e", 64);
  state.set_cost_model_options(fixed);
  state.OnHello(FourLayerHello(), 0);
  // In force before any step: nothing waits for a fit.
  policies::CostModel m = state.Snapshot(0).cost_model;
  REQUIRE(m.calibrated);
  CHECK(m.device.per_row_us == 2.0);
  std::optional<std::string> news = state.TakeCostModelNews();
  REQUIRE(news);
  CHECK(news->find("fixed by [cost_model]") != std::string::npos);
  std::mt19937_64 rng(9);
  uint64_t step = 0;
  for (; step < 100; ++step)
    state.OnStep(Step(rng, step, 3.0), static_cast<int64_t>(step));
  m = state.Snapshot(1000).cost_model;
  CHECK(m.device.fixed_us == 100);  // never refitted
  CHECK(m.device.per_row_us == 2.0);
  CHECK(m.overhead.fixed_us == 40);
  // A device 3x slower than its peers is still seen, against the fixed
  // model's prices (the factor is relative to the median device).
  REQUIRE(m.device_factor.size() == kDevices);
  CHECK(m.device_factor[3] == Approx(3.0).epsilon(0.1));

  // Stragglers off: every device at the usual speed, whatever it measures.
  CostModelOptions no_stragglers = fixed;
  no_stragglers.stragglers = false;
  state.set_cost_model_options(no_stragglers);
  CHECK(state.Snapshot(1000).cost_model.device_factor.empty());
  for (; step < 200; ++step)
    state.OnStep(Step(rng, step, 3.0), static_cast<int64_t>(step));
  CHECK(state.Snapshot(1000).cost_model.device_factor.empty());
  news = state.TakeCostModelNews();
  REQUIRE(news);
  CHECK(news->find("stragglers not measured") != std::string::npos);

  // Back to the measured fit (a reload): fitted at the next step from the
  // points gathered all along, the usual device's 0.5 us a row.
  state.set_cost_model_options(CostModelOptions{});
  CHECK_FALSE(state.Snapshot(1000).cost_model.calibrated);
  state.OnStep(Step(rng, step, 3.0), static_cast<int64_t>(step));
  ++step;
  m = state.Snapshot(1000).cost_model;
  REQUIRE(m.calibrated);
  CHECK(m.device.per_row_us == Approx(0.5).epsilon(0.5));
  CHECK(m.device.per_row_us < 1.5);
}

}  // namespace
}  // namespace moe::controller
