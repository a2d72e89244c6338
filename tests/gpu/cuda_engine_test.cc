// Whole engine steps on the CPU and CUDA backends: same seeded model, same
// tokens, outputs compared token by token. Routing runs on the host from each
// backend's scores, so a token whose k-th and (k+1)-th scores lie within fp32
// rounding of each other may pick a different expert on each backend; such
// flips are allowed for a small share of tokens, every other token must match.

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <memory>
#include <vector>

#include "gpu_test_util.h"
#include "moe/engine/engine.h"
#include "moe/engine/model.h"
#include "moe/engine/options.h"

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

// Steps both engines `num_steps` times on the same tokens and compares.
void CompareEngines(const Options& options, int num_tokens, int num_steps, double tol,
                    double max_flipped_share) {
  auto cpu = MakeEngine("cpu", options);
  auto gpu = MakeEngine("cuda", options);
  const int hidden = static_cast<int>(options.model.hidden);
  for (int step = 0; step < num_steps; ++step) {
    const auto x = RandomFloats(static_cast<size_t>(num_tokens) * hidden, 900 + step);
    StepInput input;
    input.hidden = x.data();
    input.num_tokens = num_tokens;
    std::vector<float> ref, got;
    auto cpu_stats = cpu->Step(input, &ref);
    auto gpu_stats = gpu->Step(input, &got);
    INFO("step " << step << ": " << gpu_stats.status().ToString());
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
    // Routed token-slots per expert agree except where a routing flip moved one.
    const auto& cpu_layers = cpu_stats->layers;
    const auto& gpu_layers = gpu_stats->layers;
    REQUIRE(cpu_layers.size() == gpu_layers.size());
    for (size_t l = 0; l < cpu_layers.size(); ++l) {
      CHECK(cpu_layers[l].num_token_slots == gpu_layers[l].num_token_slots);
      int moved = 0;
      for (size_t e = 0; e < cpu_layers[l].expert_tokens.size(); ++e) {
        moved += std::abs(static_cast<int>(cpu_layers[l].expert_tokens[e]) -
                          static_cast<int>(gpu_layers[l].expert_tokens[e]));
      }
      CHECK(moved <= 2 * flipped + 2 * max_flipped_share * num_tokens);
    }
  }
}

TEST_CASE("Engine steps agree on CPU and CUDA: small model, softmax", "[cuda][engine]") {
  Options o;
  o.model.num_layers = 2;
  o.model.hidden = 64;
  o.model.num_experts = 16;
  o.model.expert_ffn = 32;
  o.model.num_shared_experts = 1;
  o.model.shared_ffn = 48;
  o.model.seed = 42;
  o.knobs.top_k = 2;
  o.knobs.capacity_factor = 0;  // unlimited: tokens do not interact
  CompareEngines(o, 37, 2, 1e-4, 0.05);
}

TEST_CASE("Engine steps agree on CPU and CUDA: sigmoid, grouped routing, replicas",
          "[cuda][engine]") {
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

}  // namespace
}  // namespace moe::engine
