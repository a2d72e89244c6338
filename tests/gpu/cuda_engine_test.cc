// Whole engine steps on the CPU and CUDA backends: same seeded model, same
// tokens, outputs compared token by token. Each backend routes from its own
// scores (on the host, or on the GPU with RoutingMode::kDevice), so a token
// whose k-th and (k+1)-th scores lie within fp32 rounding of each other may
// pick a different expert on each backend; such flips are allowed for a small
// share of tokens, every other token must match.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "gpu_test_util.h"
#include "moe/engine/cuda_backend.h"
#include "moe/engine/engine.h"
#include "moe/engine/model.h"
#include "moe/engine/options.h"
#include "moe/engine/router.h"

namespace moe::engine {
namespace {

using gpu_testing::MakeBackend;
using gpu_testing::RandomFloats;

std::unique_ptr<Engine> MakeEngine(const char* backend, const Options& options) {
  auto engine = Engine::Create(options, MakeBackend(backend));
  INFO(backend << ": " << engine.status().ToString());
  REQUIRE(engine.ok());
  return std::move(engine).value();
}

// One step of both engines: their stats and the tokens whose outputs differ.
struct StepPair {
  StepStats cpu, gpu;
  int flipped = 0;
};

// Steps both engines `num_steps` times on the same tokens; CHECKs that at most
// `max_flipped_share` of the tokens differ beyond `tol` (relative L2).
std::vector<StepPair> StepBoth(Engine& cpu, Engine& gpu, int num_tokens, int num_steps, double tol,
                               double max_flipped_share) {
  const int hidden = static_cast<int>(cpu.options().model.hidden);
  std::vector<StepPair> pairs;
  for (int step = 0; step < num_steps; ++step) {
    const auto x = RandomFloats(static_cast<size_t>(num_tokens) * hidden, 900 + step);
    StepInput input;
    input.hidden = x.data();
    input.num_tokens = num_tokens;
    std::vector<float> ref, got;
    auto cpu_stats = cpu.Step(input, &ref);
    auto gpu_stats = gpu.Step(input, &got);
    INFO("step " << step << ": cpu " << cpu_stats.status().ToString() << ", cuda "
                 << gpu_stats.status().ToString());
    REQUIRE(cpu_stats.ok());
    REQUIRE(gpu_stats.ok());
    REQUIRE(got.size() == ref.size());
    int flipped = 0;
    double worst_kept = 0;
    for (int t = 0; t < num_tokens; ++t) {
      double num = 0, den = 0;
      for (int h = 0; h < hidden; ++h) {
        const double d = static_cast<double>(got[t * hidden + h]) - ref[t * hidden + h];
        num += d * d;
        den += static_cast<double>(ref[t * hidden + h]) * ref[t * hidden + h];
      }
      const double err = std::sqrt(num / std::max(den, 1e-30));
      if (!std::isfinite(err) || err > tol) {
        ++flipped;
      } else {
        worst_kept = std::max(worst_kept, err);
      }
    }
    INFO(flipped << " of " << num_tokens << " tokens differ beyond " << tol
                 << "; worst matching token error " << worst_kept);
    CHECK(flipped <= max_flipped_share * num_tokens);
    REQUIRE(cpu_stats->layers.size() == gpu_stats->layers.size());
    pairs.push_back({std::move(cpu_stats).value(), std::move(gpu_stats).value(), flipped});
  }
  return pairs;
}

// The CUDA engine's expert FFNs ran as grouped GEMMs where they had two or
// more groups: none fell back to one GEMM per expert.
void CheckGroupedPath(const Engine& gpu) {
  const auto counters = GetCudaBackendCounters(gpu.backend());
  REQUIRE(counters.ok());
  INFO(gpu.backend().description());
  CHECK(counters->grouped_fallbacks == 0);
  CHECK(counters->unaligned_ffn_calls == 0);  // fp32: no alignment needed
  CHECK(counters->grouped_ffn_calls > 0);
}

// Sum of |a[i] - b[i]|.
int Moved(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b) {
  REQUIRE(a.size() == b.size());
  int moved = 0;
  for (size_t i = 0; i < a.size(); ++i)
    moved += std::abs(static_cast<int>(a[i]) - static_cast<int>(b[i]));
  return moved;
}

// Steps a CPU and a CUDA engine on the same options and compares.
void CompareEngines(const Options& options, int num_tokens, int num_steps, double tol,
                    double max_flipped_share) {
  auto cpu = MakeEngine("cpu", options);
  auto gpu = MakeEngine("cuda", options);
  for (const StepPair& pair : StepBoth(*cpu, *gpu, num_tokens, num_steps, tol, max_flipped_share)) {
    const int flipped = pair.flipped;
    // Routed token-slots per expert agree except where a routing flip moved one.
    const auto& cpu_layers = pair.cpu.layers;
    const auto& gpu_layers = pair.gpu.layers;
    for (size_t l = 0; l < cpu_layers.size(); ++l) {
      CHECK(cpu_layers[l].num_token_slots == gpu_layers[l].num_token_slots);
      const int moved = Moved(cpu_layers[l].expert_tokens, gpu_layers[l].expert_tokens);
      CHECK(moved <= 2 * flipped + 2 * max_flipped_share * num_tokens);
    }
  }
  CheckGroupedPath(*gpu);
}

// The same steps with routing on the GPU (RoutingMode::kDevice) and on the
// host of the CPU engine (kHost): outputs and every per-layer counter agree.
// Counters are compared exactly when no token flipped (then both backends
// routed alike); otherwise within what the flips can move.
void CompareRoutingModes(const Options& options, int num_tokens, int num_steps, double tol,
                         double max_flipped_share) {
  Options cpu_options = options;
  cpu_options.routing = RoutingMode::kHost;
  Options gpu_options = options;
  gpu_options.routing = RoutingMode::kDevice;
  auto cpu = MakeEngine("cpu", cpu_options);
  auto gpu = MakeEngine("cuda", gpu_options);
  int step = 0;
  for (const StepPair& pair : StepBoth(*cpu, *gpu, num_tokens, num_steps, tol, max_flipped_share)) {
    const int flipped = pair.flipped;
    for (size_t l = 0; l < pair.cpu.layers.size(); ++l) {
      const LayerStats& c = pair.cpu.layers[l];
      const LayerStats& g = pair.gpu.layers[l];
      INFO("step " << step << " layer " << l << ": " << flipped << " tokens flipped");
      CHECK_FALSE(c.routed_on_device);
      CHECK(g.routed_on_device);
      CHECK(g.layer == c.layer);
      CHECK(g.num_tokens == c.num_tokens);
      CHECK(g.capacity == c.capacity);
      CHECK(g.num_token_slots == c.num_token_slots);
      CHECK(g.k_histogram == c.k_histogram);  // fixed K
      CHECK(g.rerouted == 0);                 // drop policy
      CHECK(g.overflowed == g.dropped);
      if (flipped == 0) {
        CHECK(g.expert_tokens == c.expert_tokens);
        CHECK(g.expert_demand == c.expert_demand);
        CHECK(g.slot_tokens == c.slot_tokens);
        CHECK(g.device_tokens == c.device_tokens);
        CHECK(g.overflowed == c.overflowed);
        CHECK(g.dropped == c.dropped);
      } else {
        const int bound = 2 * flipped + static_cast<int>(2 * max_flipped_share * num_tokens);
        CHECK(Moved(g.expert_tokens, c.expert_tokens) <= bound);
        CHECK(Moved(g.slot_tokens, c.slot_tokens) <= bound);
        CHECK(std::abs(static_cast<int>(g.dropped) - static_cast<int>(c.dropped)) <= bound);
      }
      // Entropy and gate mass: sums stored as float on the device, scores
      // from GEMMs that round differently.
      CHECK(std::fabs(g.router_entropy - c.router_entropy) <=
            1e-4 * std::max(1.0, std::fabs(c.router_entropy)));
      CHECK(std::fabs(g.gate_mass - c.gate_mass) <= 1e-4 * std::max(1.0, c.gate_mass));
      // Expert rows: the served rows on the host path (one wait, for the
      // scores); on the device the capacity layout while its padding is
      // within max_capacity_padding (no wait), else the served rows (one
      // wait, for the counters). The probe is off.
      uint32_t served = 0;
      for (uint32_t v : c.slot_tokens)
        served += v;
      CHECK(c.expert_rows == served);
      CHECK(c.host_waits == 1);
      const uint32_t num_pairs = static_cast<uint32_t>(num_tokens) * options.knobs.top_k;
      int layout_rows = 0;
      if (g.capacity > 0) {
        layout_rows =
            CapacityLayoutOffsets(
                options.knobs.phy2log.empty() ? DefaultPlacement(options) : options.knobs.phy2log,
                options.model.num_experts, g.capacity, num_tokens)
                .back();
      }
      uint32_t gpu_served = 0;
      for (uint32_t v : g.slot_tokens)
        gpu_served += v;
      if (layout_rows > 0 && layout_rows <= (1.0 + options.max_capacity_padding) * num_pairs) {
        CHECK(g.expert_rows == static_cast<uint32_t>(layout_rows));
        CHECK(g.host_waits == 0);
      } else {
        CHECK(g.expert_rows == gpu_served);
        CHECK(g.host_waits == 1);
      }
    }
    ++step;
  }
  CheckGroupedPath(*gpu);
}

// Two layers of 16 softmax experts, top-2, one shared expert.
Options SmallSoftmax() {
  Options o;
  o.model.num_layers = 2;
  o.model.hidden = 64;
  o.model.num_experts = 16;
  o.model.expert_ffn = 32;
  o.model.num_shared_experts = 1;
  o.model.shared_ffn = 48;
  o.model.seed = 42;
  o.knobs.top_k = 2;
  return o;
}

// One layer of 32 sigmoid experts in 4 groups (top-2 groups), normalised and
// scaled gates, top-4, 40 slots over 4 devices.
Options SigmoidGrouped() {
  Options o;
  o.model.num_layers = 1;
  o.model.hidden = 128;
  o.model.num_experts = 32;
  o.model.expert_ffn = 64;
  o.model.num_shared_experts = 1;
  o.model.shared_ffn = 64;
  o.model.score_function = ScoreFunction::kSigmoid;
  o.model.normalize_gates = true;
  o.model.routed_scaling = 2.5;
  o.model.num_groups = 4;
  o.model.topk_groups = 2;
  o.parallel.num_devices = 4;
  o.parallel.num_replicas = 40;
  o.knobs.top_k = 4;
  return o;
}

TEST_CASE("Engine steps agree on CPU and CUDA: small model, softmax", "[cuda][engine]") {
  Options o = SmallSoftmax();
  o.knobs.capacity_factor = 0;  // unlimited: tokens do not interact
  CompareEngines(o, 37, 2, 1e-4, 0.05);
}

TEST_CASE("Engine steps agree on CPU and CUDA: sigmoid, grouped routing, replicas",
          "[cuda][engine]") {
  Options o = SigmoidGrouped();
  o.knobs.capacity_factor = 0;
  CompareEngines(o, 64, 1, 1e-4, 0.05);
}

TEST_CASE("Engine steps agree on CPU and CUDA: hidden 1024, 64 experts ffn 512, 2 shared, K 6",
          "[cuda][engine][large]") {
  Options o;
  o.model.num_layers = 1;
  o.model.hidden = 1024;
  o.model.num_experts = 64;
  o.model.expert_ffn = 512;
  o.model.num_shared_experts = 2;
  o.model.shared_ffn = 512;
  o.knobs.top_k = 6;
  o.knobs.capacity_factor = 0;
  CompareEngines(o, 512, 1, 2e-4, 0.02);
}

TEST_CASE("Engine steps agree with device routing on CUDA and host routing on the CPU",
          "[cuda][engine][routing]") {
  // The knobs device routing covers: drop policy, no shortlist, no top_p.
  Options o = SmallSoftmax();
  o.parallel.num_devices = 2;
  o.knobs.overflow_policy = OverflowPolicy::kDrop;
  o.quality_probe_tokens = 0;
  // 0: unlimited (one wait for the counters); 1.0, 1.25: the capacity layout;
  // 3.0: padding beyond max_capacity_padding (the counters are awaited).
  for (double cf : {0.0, 1.0, 1.25, 3.0}) {
    INFO("softmax, capacity_factor=" << cf);
    o.knobs.capacity_factor = cf;
    CompareRoutingModes(o, 64, 2, 1e-4, 0.05);
  }

  Options g = SigmoidGrouped();
  g.model.seed = 7;
  g.knobs.noise_std = 0.01;
  g.knobs.expert_bias = RandomFloats(32, 8, 0.02);
  g.knobs.phy2log.resize(40);
  for (uint32_t s = 0; s < 40; ++s)
    g.knobs.phy2log[s] = s < 32 ? (s * 5 + 3) % 32 : s - 32;
  g.quality_probe_tokens = 0;
  for (double cf : {0.0, 1.0, 1.4}) {
    INFO("sigmoid, groups, bias, noise, replicas, capacity_factor=" << cf);
    g.knobs.capacity_factor = cf;
    CompareRoutingModes(g, 96, 2, 1e-4, 0.05);
  }
}

TEST_CASE("Engine refuses device routing for knobs it does not cover", "[cuda][engine][routing]") {
  Options o;
  o.model.num_layers = 1;
  o.model.hidden = 64;
  o.model.num_experts = 16;
  o.model.expert_ffn = 32;
  o.knobs.top_k = 2;
  o.knobs.top_p = 0.5;  // dynamic K: host only
  o.routing = RoutingMode::kDevice;
  o.quality_probe_tokens = 0;
  auto engine = Engine::Create(o, MakeBackend("cuda"));
  if (!engine.ok()) {  // refused at creation
    CHECK(engine.status().code() == StatusCode::kUnsupported);
    return;
  }
  const auto x = RandomFloats(static_cast<size_t>(8) * 64, 5);
  StepInput input;
  input.hidden = x.data();
  input.num_tokens = 8;
  auto stats = (*engine)->Step(input);
  CHECK(stats.status().code() == StatusCode::kUnsupported);  // or refused at the step
}

}  // namespace
}  // namespace moe::engine
