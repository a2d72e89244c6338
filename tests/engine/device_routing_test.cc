// Device routing on the CPU backend: the device contract of router.h
// (RouteIntoDeviceLayout, the reference the CUDA kernels are tested against)
// and the engine's device step path, which must compute exactly what host
// routing computes while waiting for the backend only where it says so.

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include "moe/engine/engine.h"
#include "moe/engine/model.h"
#include "moe/engine/router.h"
#include "test_util.h"

namespace moe::engine {
namespace {

std::vector<float> SoftmaxScores(int num_tokens, int num_experts, uint64_t seed) {
  NormalStream rng(seed);
  std::vector<float> scores(static_cast<size_t>(num_tokens) * num_experts);
  for (int t = 0; t < num_tokens; ++t) {
    float* row = scores.data() + static_cast<size_t>(t) * num_experts;
    double sum = 0;
    for (int e = 0; e < num_experts; ++e) {
      // Expert 0 is hot, so capacity drops slots.
      row[e] = static_cast<float>(std::exp(1.5 * rng.Next() + (e == 0 ? 2.0 : 0.0)));
      sum += row[e];
    }
    for (int e = 0; e < num_experts; ++e)
      row[e] = static_cast<float>(row[e] / sum);
  }
  return scores;
}

Options ContractOptions() {
  Options o = testing::SmallOptions();
  o.model.num_experts = 8;
  o.parallel.num_devices = 4;
  o.parallel.num_replicas = 12;
  o.knobs.top_k = 3;
  o.knobs.capacity_factor = 1.0;
  o.knobs.noise_std = 0.05;
  o.knobs.expert_bias = {0.1f, 0, 0, -0.05f, 0, 0, 0.02f, 0};
  // Experts 0 and 3 have three and two replicas; the others one.
  o.knobs.phy2log = {0, 1, 2, 0, 3, 4, 5, 3, 0, 6, 7, 7};
  return o;
}

// Runs RouteIntoDeviceLayout on host vectors.
struct DeviceResult {
  std::vector<int32_t> chosen, slot, rows;
  std::vector<float> weight, row_weights;
  std::vector<uint32_t> counters;
  DeviceRoutingCounterLayout layout;
};

DeviceResult RunContract(const Options& o, const std::vector<float>& scores, int num_tokens,
                         bool capacity_layout, uint64_t seed) {
  const Knobs& k = o.knobs;
  const uint32_t num_slots = NumReplicas(o);
  DeviceResult r;
  const size_t pairs = static_cast<size_t>(num_tokens) * k.top_k;
  r.chosen.assign(pairs, 7);
  r.slot.assign(pairs, 7);
  r.weight.assign(pairs, 7);
  const size_t max_rows = std::max<size_t>(pairs, o.model.num_experts * num_tokens);
  r.rows.assign(max_rows, 77);
  r.row_weights.assign(max_rows, 77);
  r.layout = DeviceRoutingCounters(o.model.num_experts, num_slots, o.parallel.num_devices, k.top_k);
  r.counters.assign(r.layout.total, 99);
  std::vector<int32_t> phy2log(k.phy2log.begin(), k.phy2log.end());
  DeviceRoutingArgs args;
  args.options = &o;
  args.knobs = &k;
  args.seed = seed;
  args.num_tokens = num_tokens;
  args.scores = scores.data();
  args.expert_bias = k.expert_bias.empty() ? nullptr : k.expert_bias.data();
  args.phy2log = phy2log.data();
  args.chosen = r.chosen.data();
  args.slot = r.slot.data();
  args.weight = r.weight.data();
  args.capacity_layout = capacity_layout;
  args.rows = r.rows.data();
  args.row_weights = r.row_weights.data();
  args.counters = r.counters.data();
  const Status st = RouteIntoDeviceLayout(args);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return r;
}

TEST_CASE("Device contract: both layouts hold every served token-slot once, by slot",
          "[router][device]") {
  const Options o = ContractOptions();
  const int num_tokens = 40;
  const uint32_t num_slots = NumReplicas(o);
  const std::vector<float> scores = SoftmaxScores(num_tokens, o.model.num_experts, 5);
  const RoutingPlan plan = Route(scores.data(), num_tokens, o, o.knobs, 17);
  REQUIRE(plan.dropped > 0);  // capacity binds

  for (const bool capacity_layout : {false, true}) {
    INFO("capacity_layout " << capacity_layout);
    const DeviceResult r = RunContract(o, scores, num_tokens, capacity_layout, 17);
    using L = DeviceRoutingCounterLayout;
    CHECK(r.chosen == plan.chosen);
    CHECK(r.slot == plan.slot);
    CHECK(r.weight == plan.weight);
    CHECK(r.counters[L::kDropped] == plan.dropped);
    CHECK(r.counters[L::kOverflowed] == plan.overflowed);
    CHECK(r.counters[L::kCapacity] == plan.capacity);
    uint32_t served = 0;
    for (int32_t s : plan.slot)
      served += s >= 0;
    CHECK(r.counters[L::kNumRows] == served);
    RoutingPlan back;
    back.num_tokens = num_tokens;
    ApplyDeviceRoutingCounters(r.counters.data(), r.layout, &back);
    CHECK(back.slot_tokens == plan.slot_tokens);
    CHECK(back.expert_tokens == plan.expert_tokens);
    CHECK(back.expert_demand == plan.expert_demand);
    CHECK(back.k_histogram == plan.k_histogram);
    CHECK(back.router_entropy == Approx(plan.router_entropy).epsilon(1e-6));
    CHECK(back.gate_mass == Approx(plan.gate_mass).epsilon(1e-6));

    // Row offsets of each slot, then: slot s's rows are its served pairs in
    // token-slot order, followed (capacity layout) by padding.
    std::vector<int> offsets(num_slots + 1, 0);
    if (capacity_layout) {
      offsets =
          CapacityLayoutOffsets(o.knobs.phy2log, o.model.num_experts, plan.capacity, num_tokens);
    } else {
      for (uint32_t s = 0; s < num_slots; ++s)
        offsets[s + 1] = offsets[s] + static_cast<int>(plan.slot_tokens[s]);
    }
    for (uint32_t s = 0; s < num_slots; ++s) {
      std::vector<size_t> pairs;
      for (size_t i = 0; i < plan.slot.size(); ++i) {
        if (plan.slot[i] == static_cast<int32_t>(s)) pairs.push_back(i);
      }
      REQUIRE(offsets[s] + static_cast<int>(pairs.size()) <= offsets[s + 1]);
      for (size_t j = 0; j < pairs.size(); ++j) {
        CHECK(r.rows[offsets[s] + j] == static_cast<int32_t>(pairs[j] / o.knobs.top_k));
        CHECK(r.row_weights[offsets[s] + j] == plan.weight[pairs[j]]);
      }
      for (int row = offsets[s] + static_cast<int>(pairs.size()); row < offsets[s + 1]; ++row) {
        CHECK(r.rows[row] == -1);
        CHECK(r.row_weights[row] == 0.0f);
      }
    }
    // Nothing past the layout is written.
    CHECK(r.rows[offsets[num_slots]] == 77);
  }
}

TEST_CASE("Capacity layout: room per replica from the capacity, known before routing",
          "[router][device]") {
  // Expert 0 on slots 0, 2, 3; expert 1 on slot 1.
  const std::vector<uint32_t> phy2log = {0, 1, 0, 0};
  // Capacity 7 < tokens: expert 0's 7 rows split 3, 2, 2 over its replicas.
  CHECK(CapacityLayoutOffsets(phy2log, 2, 7, 100) == std::vector<int>{0, 3, 10, 12, 14});
  // Capacity above the tokens: an expert serves a token at most once.
  CHECK(CapacityLayoutOffsets(phy2log, 2, 50, 4) == std::vector<int>{0, 2, 6, 7, 8});
}

TEST_CASE("Transfer rows: a token counts once per remote device, local slots never",
          "[router][device]") {
  RoutingPlan plan;
  plan.num_tokens = 3;
  plan.max_k = 3;
  // 2 devices, 4 slots: slots 0-1 on device 0, slots 2-3 on device 1.
  plan.slot = {
      2, 3,  0,   // token 0 (device 0): two slots on device 1 -> one row 0 -> 1
      2, -1, -1,  // token 1 (device 1): local
      1, 3,  -1,  // token 2 (device 0): one row 0 -> 1
  };
  CHECK(TransferRows(plan, 4, 2) == std::vector<uint32_t>{0, 2, 0, 0});

  // Two devices on one node at 100 GB/s, 1000 bytes a row: device 0 sends
  // 2000 bytes, device 1 receives them: 2000 / (100 * 1e3) us.
  ParallelOptions p;
  p.num_devices = 2;
  p.devices_per_node = 2;
  p.intra_node_gbps = 100;
  p.inter_node_gbps = 10;
  CHECK(ModelAllToAllUs(TransferRows(plan, 4, 2), 1000, p) == Approx(0.02));
  p.devices_per_node = 1;  // now over the inter-node link
  CHECK(ModelAllToAllUs(TransferRows(plan, 4, 2), 1000, p) == Approx(0.2));
}

TEST_CASE("Device contract refuses what it does not cover", "[router][device]") {
  Options o = ContractOptions();
  const std::vector<float> scores = SoftmaxScores(4, o.model.num_experts, 1);
  std::vector<int32_t> phy2log(o.knobs.phy2log.begin(), o.knobs.phy2log.end());
  DeviceRoutingArgs args;
  args.options = &o;
  args.num_tokens = 4;
  args.scores = scores.data();
  args.phy2log = phy2log.data();
  CHECK(RouteIntoDeviceLayout(args).code() == StatusCode::kInvalidArgument);  // no knobs
  Knobs k = o.knobs;
  args.knobs = &k;
  k.overflow_policy = OverflowPolicy::kReroute;
  Status st = RouteIntoDeviceLayout(args);
  CHECK(st.code() == StatusCode::kUnsupported);
  CHECK(st.message() == "device routing: overflow policy reroute");
  k.overflow_policy = OverflowPolicy::kDrop;
  k.top_p = 0.9;
  CHECK(RouteIntoDeviceLayout(args).code() == StatusCode::kUnsupported);
  k.top_p = 0;
  k.capacity_factor = 0;
  args.capacity_layout = true;  // needs a capacity
  CHECK(RouteIntoDeviceLayout(args).code() == StatusCode::kInvalidArgument);
}

Options EngineOptions(RoutingMode mode) {
  Options o = testing::SmallOptions();
  o.model.num_layers = 2;
  o.model.num_groups = 2;
  o.model.topk_groups = 1;
  o.parallel.num_devices = 2;
  o.parallel.num_replicas = 10;
  o.knobs.phy2log = {0, 1, 2, 3, 0, 4, 5, 6, 7, 4};
  o.knobs.top_k = 2;
  o.knobs.capacity_factor = 1.0;
  o.knobs.noise_std = 0.02;
  o.quality_probe_tokens = 3;
  o.quality_probe_every = 3;
  o.routing = mode;
  return o;
}

// The layer stats device routing must reproduce, as comparable tuples.
void CheckSameLayer(const LayerStats& got, const LayerStats& want) {
  CHECK(got.num_token_slots == want.num_token_slots);
  CHECK(got.capacity == want.capacity);
  CHECK(got.overflowed == want.overflowed);
  CHECK(got.rerouted == want.rerouted);
  CHECK(got.dropped == want.dropped);
  CHECK(got.expert_tokens == want.expert_tokens);
  CHECK(got.expert_demand == want.expert_demand);
  CHECK(got.slot_tokens == want.slot_tokens);
  CHECK(got.device_tokens == want.device_tokens);
  CHECK(got.k_histogram == want.k_histogram);
  CHECK(got.router_entropy == Approx(want.router_entropy).epsilon(1e-6));
  CHECK(got.gate_mass == Approx(want.gate_mass).epsilon(1e-6));
  CHECK(got.all_to_all_us == Approx(want.all_to_all_us).epsilon(1e-9));
  CHECK(got.quality_error.has_value() == want.quality_error.has_value());
  if (got.quality_error && want.quality_error) {
    CHECK(*got.quality_error == Approx(*want.quality_error).margin(1e-6));
  }
}

TEST_CASE("Engine: device routing computes what host routing computes", "[engine][device]") {
  auto host = testing::MakeEngine(EngineOptions(RoutingMode::kHost));
  auto device = testing::MakeEngine(EngineOptions(RoutingMode::kDevice));
  auto automatic = testing::MakeEngine(EngineOptions(RoutingMode::kAuto));
  const int num_tokens = 40;
  const uint32_t hidden = host->options().model.hidden;
  // Step 1: capacity 1.0 (capacity layout, no wait); step 2: unlimited
  // capacity (compact layout, one wait for the counts); step 3: capacity 1.5
  // with a bias and a new placement; steps 0 and 3 run the probe.
  for (int step = 0; step < 4; ++step) {
    INFO("step " << step);
    if (step > 0) {
      KnobUpdate u;
      u.epoch = static_cast<uint64_t>(step);
      u.all_layers.capacity_factor = step == 2 ? 0.0 : 1.0 + 0.25 * (step - 1);
      if (step == 3) {
        u.all_layers.expert_bias = std::vector<float>{0, 0.3f, 0, 0, 0, 0, -0.2f, 0};
        u.all_layers.phy2log = std::vector<uint32_t>{4, 1, 2, 3, 0, 4, 5, 6, 7, 0};
      }
      for (Engine* e : {host.get(), device.get(), automatic.get()})
        REQUIRE(e->Submit(u).ok());
    }
    const std::vector<float> x = testing::RandomTokens(num_tokens, static_cast<int>(hidden),
                                                       100 + static_cast<uint64_t>(step));
    std::vector<float> y_host, y_device, y_auto;
    auto s_host = host->Step({x.data(), num_tokens, {}}, &y_host);
    auto s_device = device->Step({x.data(), num_tokens, {}}, &y_device);
    auto s_auto = automatic->Step({x.data(), num_tokens, {}}, &y_auto);
    REQUIRE(s_host.ok());
    INFO(s_device.status().ToString());
    REQUIRE(s_device.ok());
    REQUIRE(s_auto.ok());
    // Padding rows add nothing, but they change the GEMM shapes, and with them
    // OpenBLAS's order of sums.
    testing::CheckClose(y_device, y_host);
    CHECK(y_auto == y_host);  // same shapes, same kernel
    for (size_t l = 0; l < s_host->layers.size(); ++l) {
      const LayerStats& h = s_host->layers[l];
      const LayerStats& d = s_device->layers[l];
      CheckSameLayer(d, h);
      CHECK_FALSE(h.routed_on_device);
      CHECK(d.routed_on_device);
      CHECK_FALSE(s_auto->layers[l].routed_on_device);  // the CPU's memory is host memory
      const bool probe = step % 3 == 0;
      if (step == 2) {
        CHECK(d.expert_rows == h.expert_rows);  // compact: served rows only
        CHECK(d.host_waits == 1 + (probe ? 1 : 0));
      } else {
        CHECK(d.expert_rows >= h.expert_rows);  // capacity layout: padding included
        CHECK(d.expert_rows <= (1 + 0.5) * num_tokens * 2);
        CHECK(d.host_waits == (probe ? 1u : 0u));
      }
      CHECK(h.host_waits == 1);
    }
  }
}

TEST_CASE("Engine: padding over max_capacity_padding falls back to the compact layout",
          "[engine][device]") {
  Options o = EngineOptions(RoutingMode::kDevice);
  o.quality_probe_tokens = 0;
  o.knobs.capacity_factor = 3.0;  // room for 3x the token-slots
  o.max_capacity_padding = 0.5;
  auto engine = testing::MakeEngine(o);
  const int num_tokens = 40;
  const std::vector<float> x = testing::RandomTokens(num_tokens, o.model.hidden, 3);
  auto s = engine->Step({x.data(), num_tokens, {}});
  REQUIRE(s.ok());
  for (const LayerStats& l : s->layers) {
    CHECK(l.host_waits == 1);
    CHECK(l.expert_rows == l.num_token_slots - l.dropped);
  }
  o.max_capacity_padding = 4.0;
  auto padded = testing::MakeEngine(o);
  auto p = padded->Step({x.data(), num_tokens, {}});
  REQUIRE(p.ok());
  for (const LayerStats& l : p->layers) {
    CHECK(l.host_waits == 0);
    CHECK(l.expert_rows > l.num_token_slots);
  }
}

TEST_CASE("Engine: routing = device refuses knobs and replays it does not cover",
          "[engine][device]") {
  Options o = EngineOptions(RoutingMode::kDevice);
  o.knobs.overflow_policy = OverflowPolicy::kReroute;
  auto backend = CreateBackend("cpu");
  REQUIRE(backend.ok());
  auto refused = Engine::Create(o, std::move(backend).value());
  CHECK(refused.status().code() == StatusCode::kUnsupported);
  CHECK(refused.status().message().find("overflow policy reroute") != std::string::npos);

  auto engine = testing::MakeEngine(EngineOptions(RoutingMode::kDevice));
  KnobUpdate u;
  u.epoch = 1;
  u.all_layers.shortlist = 4;
  const auto submitted = engine->Submit(u);
  CHECK(submitted.status().code() == StatusCode::kUnsupported);
  CHECK(submitted.status().message().find("shortlist") != std::string::npos);

  const int num_tokens = 4;
  const std::vector<float> x = testing::RandomTokens(num_tokens, 32, 1);
  ExpertSelection recorded;
  recorded.offsets = {0, 1, 2, 3, 4};
  recorded.experts = {0, 1, 2, 3};
  StepInput input{x.data(), num_tokens, {}};
  input.routing = {&recorded};
  const auto replay = engine->Step(input);
  CHECK(replay.status().code() == StatusCode::kUnsupported);
  CHECK(replay.status().message().find("routing = host or auto") != std::string::npos);
  // The engine still runs afterwards.
  CHECK(engine->Step({x.data(), num_tokens, {}}).ok());
}

TEST_CASE("Engine: recording a trace under device routing reads the device's choices",
          "[engine][device]") {
  auto host = testing::MakeEngine(EngineOptions(RoutingMode::kHost));
  auto device = testing::MakeEngine(EngineOptions(RoutingMode::kDevice));
  const int num_tokens = 16;
  const std::vector<float> x = testing::RandomTokens(num_tokens, 32, 9);
  StepInput input{x.data(), num_tokens, {}};
  input.record_selection = true;
  auto h = host->Step(input);
  auto d = device->Step(input);
  REQUIRE(h.ok());
  REQUIRE(d.ok());
  for (size_t l = 0; l < h->layers.size(); ++l) {
    CHECK(d->layers[l].selection.experts == h->layers[l].selection.experts);
    CHECK(d->layers[l].selection.offsets == h->layers[l].selection.offsets);
  }
}

}  // namespace
}  // namespace moe::engine
