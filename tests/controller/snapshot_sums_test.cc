// The state estimate's running sums (EngineState, EpochSums): after many
// steps entering and leaving the window, across epochs, restarts and layers
// or demand that come and go, a snapshot equals one summed from scratch over
// the window; snapshots share the steps' demand instead of copying it.

#include <catch2/catch.hpp>

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include "engine_state.h"

namespace moe::controller {
namespace {

constexpr uint32_t kLayers = 5;
constexpr uint32_t kExperts = 12;

telemetry::Hello HelloAt(uint64_t epoch) {
  telemetry::Hello h;
  h.engine_id = "e";
  h.num_layers = kLayers;
  h.num_experts = kExperts;
  h.num_devices = 3;
  h.epoch = epoch;
  h.knobs.top_k = 2;
  return h;
}

// A step with random loads; now and then a layer is left out, or reports no
// demand, or no quality probe.
telemetry::StepRecord RandomStep(std::mt19937_64& rng, uint64_t step, uint64_t epoch) {
  std::uniform_int_distribution<uint32_t> tokens(0, 5000);
  std::uniform_int_distribution<int> dice(0, 9);
  telemetry::StepRecord r;
  r.engine_id = "e";
  r.step = step;
  r.epoch = epoch;
  r.step_us = 100 + dice(rng);
  for (uint32_t l = 0; l < kLayers; ++l) {
    if (dice(rng) == 0) continue;
    telemetry::LayerRecord layer;
    layer.layer = l;
    layer.num_tokens = 256;
    for (uint32_t e = 0; e < kExperts; ++e)
      layer.expert_tokens.push_back(tokens(rng));
    if (dice(rng) != 0) {
      for (uint32_t e = 0; e < kExperts; ++e)
        layer.expert_demand.push_back(tokens(rng) + 7);
    }
    layer.num_token_slots = 4000;
    layer.overflowed = static_cast<uint32_t>(dice(rng) * 10);
    layer.dropped = layer.overflowed / 2;
    layer.device_tokens = {tokens(rng), tokens(rng), tokens(rng)};
    layer.timing.total_us = 10.0 + dice(rng);
    if (dice(rng) < 3) layer.quality_error = 0.001 * dice(rng);
    r.layers.push_back(layer);
  }
  return r;
}

struct Expected {
  std::vector<uint64_t> steps;                  // per layer
  std::vector<std::vector<double>> load_sum;    // per layer
  std::vector<std::vector<double>> demand_sum;  // per layer; empty: no demand
  size_t num_layers = 0;                        // highest layer id + 1
};

// The per-expert means of `epoch` summed from scratch over `window`.
Expected FromScratch(const std::deque<telemetry::StepRecord>& window, uint64_t epoch) {
  Expected x;
  x.steps.assign(kLayers, 0);
  x.load_sum.assign(kLayers, {});
  x.demand_sum.assign(kLayers, {});
  for (const telemetry::StepRecord& r : window) {
    if (r.epoch != epoch) continue;
    for (const telemetry::LayerRecord& layer : r.layers) {
      x.num_layers = std::max<size_t>(x.num_layers, layer.layer + 1);
      ++x.steps[layer.layer];
      std::vector<double>& load = x.load_sum[layer.layer];
      load.resize(kExperts);
      for (uint32_t e = 0; e < kExperts; ++e)
        load[e] += layer.expert_tokens[e];
      if (!layer.expert_demand.empty()) {
        std::vector<double>& demand = x.demand_sum[layer.layer];
        demand.resize(kExperts);
        for (uint32_t e = 0; e < kExperts; ++e)
          demand[e] += layer.expert_demand[e];
      }
    }
  }
  return x;
}

void CheckEquals(const policies::EngineSnapshot& s, const Expected& x,
                 const std::deque<telemetry::StepRecord>& window) {
  REQUIRE(s.layers.size() == x.num_layers);
  for (size_t l = 0; l < x.num_layers; ++l) {
    INFO("layer " << l);
    const policies::LayerEstimate& est = s.layers[l];
    if (x.steps[l] == 0) {
      CHECK(est.expert_load.empty());
      CHECK(est.expert_demand.empty());
      continue;
    }
    CHECK(est.layer == l);
    const double n = static_cast<double>(x.steps[l]);
    REQUIRE(est.expert_load.size() == kExperts);
    REQUIRE(est.expert_demand.size() == x.demand_sum[l].size());
    for (uint32_t e = 0; e < kExperts; ++e) {
      // Token counts: exact in a double whatever the order of the sums.
      CHECK(est.expert_load[e] == x.load_sum[l][e] / n);
      if (!x.demand_sum[l].empty()) CHECK(est.expert_demand[e] == x.demand_sum[l][e] / n);
    }
  }
  // The demand of every step in the window, oldest first, any epoch.
  REQUIRE(s.recent.size() == window.size());
  size_t i = 0;
  for (const policies::StepDemand& d : s.recent) {
    const telemetry::StepRecord& r = window[i++];
    CHECK(d.step == r.step);
    CHECK(d.epoch == r.epoch);
    for (const telemetry::LayerRecord& layer : r.layers) {
      REQUIRE(layer.layer < d.layers.size());
      CHECK(d.layers[layer.layer] ==
            std::vector<double>(layer.expert_demand.begin(), layer.expert_demand.end()));
    }
  }
}

TEST_CASE("Running sums equal sums from scratch after many ingests and evictions",
          "[controller][snapshot]") {
  constexpr size_t kWindow = 23;
  EngineState state("e", kWindow);
  std::deque<telemetry::StepRecord> window;  // what the state's window must hold
  std::mt19937_64 rng(42);
  uint64_t epoch = 0;
  state.OnHello(HelloAt(0), 0);
  int64_t now = 0;
  for (uint64_t step = 1; step <= 3000; ++step) {
    now += 1000;
    if (step % 37 == 0) ++epoch;  // a new epoch begins with a step
    if (step % 401 == 0) {
      // A Hello naming a later epoch: the epoch in force moves without a step.
      ++epoch;
      state.OnHello(HelloAt(epoch), now);
    }
    if (step % 977 == 0) {
      // The engine restarted: its epochs count afresh, the window is cleared.
      epoch = 0;
      state.OnHello(HelloAt(0), now);
      window.clear();
    }
    // Now and then a straggler of the epoch before.
    const uint64_t step_epoch = (step % 53 == 0 && epoch > 0) ? epoch - 1 : epoch;
    telemetry::StepRecord record = RandomStep(rng, step, step_epoch);
    state.OnStep(record, now);
    window.push_back(record);
    while (window.size() > kWindow)
      window.pop_front();
    REQUIRE(state.window_size() == window.size());
    if (step % 7 != 0 && step < 2900) continue;
    INFO("step " << step << ", epoch in force " << state.epoch());
    CheckEquals(state.Snapshot(now), FromScratch(window, state.epoch()), window);
    // Another epoch still in the window: summed from scratch by the state.
    if (state.epoch() > 0) {
      CheckEquals(state.SnapshotOf(state.epoch() - 1, now), FromScratch(window, state.epoch() - 1),
                  window);
    }
  }
}

TEST_CASE("Snapshots share each step's demand; writing to one copies it first",
          "[controller][snapshot]") {
  EngineState state("e", 8);
  state.OnHello(HelloAt(0), 0);
  std::mt19937_64 rng(7);
  for (uint64_t step = 1; step <= 12; ++step)
    state.OnStep(RandomStep(rng, step, 0), static_cast<int64_t>(step));
  policies::EngineSnapshot a = state.Snapshot(100);
  const policies::EngineSnapshot b = state.Snapshot(100);
  REQUIRE(a.recent.size() == 8);
  const policies::EngineSnapshot& ca = a;
  CHECK(&ca.recent[3] == &b.recent[3]);  // the same step, not a copy
  const std::vector<std::vector<double>> before = b.recent[3].layers;
  a.recent[3].layers.clear();  // the mutable access copies the step first
  CHECK(a.recent[3].layers.empty());
  CHECK(b.recent[3].layers == before);
  CHECK(&ca.recent[3] != &b.recent[3]);
  // Reverse iteration sees the newest step first.
  CHECK(b.recent.rbegin()->step == 12);
  CHECK(b.recent.front().step == 5);
}

}  // namespace
}  // namespace moe::controller
