// The state estimate's running sums (EngineState, EpochSums): after many
// steps entering and leaving the window, across epochs, restarts and layers
// or demand that come and go, a snapshot equals one summed from scratch over
// the window; snapshots share the steps' demand instead of copying it.

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <random>
#include <vector>

#include "engine_state.h"
#include "moe/policies/cost_model.h"
#include "moe/policies/counterfactual_policy.h"

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

TEST_CASE("The state keeps capacity replays of the newest steps under the settings in force",
          "[controller][snapshot]") {
  EngineState state("e", 16);
  state.set_capacity_replays({1.0, 2.0, 4.0}, 6);
  telemetry::Hello hello = HelloAt(0);
  hello.knobs.capacity_factor = 1.5;
  state.OnHello(hello, 0);
  std::mt19937_64 rng(21);
  uint64_t step = 0;
  // Per-device times, so that the state fits a cost model (replays are kept
  // only for one).
  auto timed = [&](uint64_t at, uint64_t epoch) {
    telemetry::StepRecord r = RandomStep(rng, at, epoch);
    for (telemetry::LayerRecord& layer : r.layers) {
      for (uint64_t rows : layer.device_tokens)
        layer.timing.device_expert_us.push_back(5.0 + 0.01 * static_cast<double>(rows));
    }
    return r;
  };
  for (; step < 12; ++step)
    state.OnStep(timed(step, 0), static_cast<int64_t>(step));
  REQUIRE(state.cost_model().calibrated);

  policies::CounterfactualParams params;
  params.min_steps = 1;
  params.lookback_steps = 6;
  policies::RewardParams reward;
  // Each of the newest 6 steps with demand holds a replay under the settings
  // in force, with the candidates and the value in force; the policy's
  // scores are those of the demand replayed.
  auto check = [&](const policies::EngineSnapshot& taken) {
    policies::EngineSnapshot s = taken;
    s.cost_model.calibrated = true;
    s.cost_model.device = {20, 0.5};
    s.cost_model.overhead = {10, 0.1};
    REQUIRE(s.capacity_replays.size() == s.recent.size());
    const auto settings = policies::ReplaySettings(s.knobs, s.num_replicas, s.num_devices);
    size_t held = 0;
    const policies::EngineSnapshot& cs = s;  // reads only: no copy of a step
    for (size_t i = cs.recent.size(); i-- > 0 && held < 6;) {
      const bool demand = std::any_of(cs.recent[i].layers.begin(), cs.recent[i].layers.end(),
                                      [](const auto& l) { return !l.empty(); });
      if (!demand) continue;
      INFO("step " << i << " of " << s.recent.size() << " epoch " << s.epoch);
      REQUIRE(s.capacity_replays[i] != nullptr);
      CHECK(s.capacity_replays[i]->settings == settings);
      CHECK(s.capacity_replays[i]->capacity_factors ==
            std::vector<double>{1.0, 2.0, 4.0, s.knobs.capacity_factor});
      ++held;
    }
    CHECK(held == 6);
    policies::EngineSnapshot bare = s;
    bare.capacity_replays.clear();
    const auto with = policies::ScoreCapacity(s, params, reward);
    const auto without = policies::ScoreCapacity(bare, params, reward);
    REQUIRE(with.size() == without.size());
    for (size_t c = 0; c < with.size(); ++c)
      CHECK(with[c].score == without[c].score);
  };
  check(state.Snapshot(100));

  // A new placement in force (the engine's Hello under a new epoch): the next
  // step redoes the newest steps' replays under it.
  telemetry::Hello moved = HelloAt(1);
  moved.knobs.capacity_factor = 1.5;
  std::vector<uint32_t> p(kExperts);
  for (uint32_t slot = 0; slot < p.size(); ++slot)
    p[slot] = slot % kExperts;
  p.back() = 3;
  moved.knobs.phy2log = p;
  state.OnHello(moved, 200);
  state.OnStep(timed(step++, 1), 201);
  const policies::EngineSnapshot after = state.Snapshot(300);
  REQUIRE(after.recent.size() == 13);  // the same window, one step more
  CHECK_FALSE(after.capacity_replays.back()->settings.placement ==
              state.Snapshot(100).capacity_replays.front()->settings.placement);
  check(after);
  // Off: the replays go, and their bytes with them.
  const uint64_t bytes = state.window_bytes();
  state.set_capacity_replays({}, 6);
  CHECK(state.window_bytes() < bytes);
  CHECK(state.Snapshot(400).capacity_replays.empty());
}

TEST_CASE("The modelled path from each layer's busiest device is that over every device",
          "[controller][snapshot]") {
  EngineState state("e", 16);
  state.OnHello(HelloAt(0), 0);
  std::mt19937_64 rng(33);
  std::deque<telemetry::StepRecord> fed;
  for (uint64_t step = 0; step < 20; ++step) {
    telemetry::StepRecord r = RandomStep(rng, step, 0);
    for (telemetry::LayerRecord& layer : r.layers) {
      for (uint64_t rows : layer.device_tokens)
        layer.timing.device_expert_us.push_back(3.0 + 0.02 * static_cast<double>(rows));
      layer.timing.all_to_all_us = 1.5;
    }
    state.OnStep(r, static_cast<int64_t>(step));
    fed.push_back(r);
  }
  REQUIRE(state.cost_model().calibrated);
  // Figures' sum, newest step first, of LayerPathUs over every device.
  auto expected = [&](const policies::CostModel& model, size_t n) {
    double sum = 0;
    size_t steps = 0;
    for (auto it = fed.rbegin(); it != fed.rend() && steps < n; ++it, ++steps) {
      double path = 0;
      for (const telemetry::LayerRecord& layer : it->layers) {
        std::vector<double> rows(layer.device_tokens.begin(), layer.device_tokens.end());
        path += policies::LayerPathUs(model, layer.num_tokens, rows, layer.timing.all_to_all_us);
      }
      sum += path;
    }
    return sum / static_cast<double>(steps);
  };
  const policies::OutcomeFigures f = state.Figures(0, 8);
  // The same sum, regrouped: a relative error of a few ulps per layer.
  CHECK(f.model_latency_us == Approx(expected(state.cost_model(), 8)).epsilon(1e-12));
  CHECK(f.model_latency_us > 0);
}

}  // namespace
}  // namespace moe::controller
