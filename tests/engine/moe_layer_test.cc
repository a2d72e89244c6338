// The MoE layer against a naive dense reference: every selected expert is
// evaluated directly per token in fp64, with capacity applied by simple loops.

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "moe/engine/engine.h"
#include "moe/engine/model.h"
#include "moe/engine/router.h"
#include "test_util.h"

namespace moe::engine {
namespace {

using testing::MakeEngine;
using testing::RandomTokens;
using testing::SmallOptions;

// y = x W for one row; W is [in, out] row-major.
std::vector<double> RowTimes(const std::vector<double>& x, const std::vector<float>& w, int in,
                             int out, int col0 = 0, int ld = -1) {
  if (ld < 0) ld = out;
  std::vector<double> y(out, 0.0);
  for (int i = 0; i < in; ++i) {
    for (int j = 0; j < out; ++j)
      y[j] += x[i] * w[static_cast<size_t>(i) * ld + col0 + j];
  }
  return y;
}

std::vector<double> SwiGlu(const std::vector<double>& x, const std::vector<float>& gate_up,
                           const std::vector<float>& down, int hidden, int ffn) {
  std::vector<double> g = RowTimes(x, gate_up, hidden, ffn, 0, 2 * ffn);
  std::vector<double> u = RowTimes(x, gate_up, hidden, ffn, ffn, 2 * ffn);
  std::vector<double> h(ffn);
  for (int j = 0; j < ffn; ++j)
    h[j] = g[j] / (1.0 + std::exp(-g[j])) * u[j];
  return RowTimes(h, down, ffn, hidden);
}

struct Reference {
  std::vector<double> out;            // [T, H]
  std::vector<uint32_t> expert_load;  // [E]
  uint32_t dropped = 0;
};

// Softmax scoring, top-K, capacity in token order then rank order, drop policy.
Reference NaiveLayer(const Options& o, const std::vector<float>& x, int num_tokens) {
  const int hidden = o.model.hidden;
  const int num_experts = o.model.num_experts;
  const int k = o.knobs.top_k;
  const HostLayerWeights w = GenerateLayerWeights(o.model, 0);
  const uint32_t capacity =
      o.knobs.capacity_factor > 0
          ? static_cast<uint32_t>(std::ceil(o.knobs.capacity_factor * num_tokens * k / num_experts))
          : UINT32_MAX;
  Reference ref;
  ref.out.assign(static_cast<size_t>(num_tokens) * hidden, 0.0);
  ref.expert_load.assign(num_experts, 0);
  for (int t = 0; t < num_tokens; ++t) {
    std::vector<double> xn(hidden);
    double sum_sq = 0;
    for (int h = 0; h < hidden; ++h)
      sum_sq += std::pow(x[t * hidden + h], 2);
    const double inv = 1.0 / std::sqrt(sum_sq / hidden + o.model.rms_eps);
    for (int h = 0; h < hidden; ++h)
      xn[h] = x[t * hidden + h] * inv * w.norm[h];
    std::vector<double> logits = RowTimes(xn, w.gate, hidden, num_experts);
    const double max_logit = *std::max_element(logits.begin(), logits.end());
    double total = 0;
    for (double& l : logits)
      total += (l = std::exp(l - max_logit));
    std::vector<int> order(num_experts);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int a, int b) { return logits[a] > logits[b]; });
    std::vector<double> y(hidden, 0.0);
    if (o.model.num_shared_experts > 0) {
      y = SwiGlu(xn, w.shared_gate_up, w.shared_down, hidden,
                 o.model.num_shared_experts * o.model.shared_ffn);
    }
    for (int j = 0; j < k; ++j) {
      const int e = order[j];
      if (ref.expert_load[e] >= capacity) {
        ref.dropped++;
        continue;
      }
      ref.expert_load[e]++;
      const double gate = logits[e] / total;
      std::vector<double> ye = SwiGlu(xn, w.gate_up[e], w.down[e], hidden, o.model.expert_ffn);
      for (int h = 0; h < hidden; ++h)
        y[h] += gate * ye[h];
    }
    for (int h = 0; h < hidden; ++h)
      ref.out[t * hidden + h] = x[t * hidden + h] + y[h];
  }
  return ref;
}

void CompareWithReference(const Options& o, int num_tokens, bool expect_drops) {
  auto engine = MakeEngine(o);
  const std::vector<float> x = RandomTokens(num_tokens, o.model.hidden, 9);
  std::vector<float> out;
  auto stats = engine->Step({x.data(), num_tokens, {}}, &out);
  INFO(stats.status().ToString());
  REQUIRE(stats.ok());
  const Reference ref = NaiveLayer(o, x, num_tokens);
  double max_err = 0, max_ref = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    max_err = std::max(max_err, std::abs(out[i] - ref.out[i]));
    max_ref = std::max(max_ref, std::abs(ref.out[i]));
  }
  INFO("max abs error " << max_err << " of max |ref| " << max_ref);
  CHECK(max_err <= 1e-4 * std::max(1.0, max_ref));
  const LayerStats& layer = stats->layers[0];
  CHECK(layer.expert_tokens == ref.expert_load);
  CHECK(layer.dropped == ref.dropped);
  if (expect_drops) {
    CHECK(layer.dropped > 0);
  } else {
    CHECK(layer.dropped == 0);
  }
}

TEST_CASE("MoE layer matches the naive dense reference without capacity", "[layer]") {
  Options o = SmallOptions();
  CompareWithReference(o, 64, false);
  o.knobs.top_k = 3;
  o.model.num_shared_experts = 2;
  CompareWithReference(o, 50, false);
}

TEST_CASE("MoE layer matches the reference with capacity: dropped slots get shared only",
          "[layer]") {
  Options o = SmallOptions();
  o.knobs.capacity_factor = 0.75;
  CompareWithReference(o, 64, true);
  o.model.num_shared_experts = 0;  // a dropped slot then contributes nothing
  CompareWithReference(o, 64, true);
}

TEST_CASE("No expert exceeds capacity and token-slots are conserved", "[layer]") {
  Options o = SmallOptions();
  o.model.num_layers = 3;
  for (double cf : {0.25, 0.5, 1.0, 1.5}) {
    for (uint32_t k : {1u, 2u, 4u}) {
      o.knobs.capacity_factor = cf;
      o.knobs.top_k = k;
      auto engine = MakeEngine(o);
      const int num_tokens = 77;
      const std::vector<float> x = RandomTokens(num_tokens, o.model.hidden, 5 + k);
      auto stats = engine->Step({x.data(), num_tokens, {}});
      REQUIRE(stats.ok());
      const uint32_t capacity = ExpertCapacity(cf, num_tokens, k, o.model.num_experts);
      for (const LayerStats& layer : stats->layers) {
        CHECK(layer.capacity == capacity);
        uint64_t routed = 0;
        for (uint32_t load : layer.expert_tokens) {
          CHECK(load <= capacity);
          routed += load;
        }
        CHECK(layer.num_token_slots == static_cast<uint64_t>(num_tokens) * k);
        CHECK(routed + layer.dropped == layer.num_token_slots);
        CHECK(layer.overflowed == layer.dropped + layer.rerouted);
      }
    }
  }
}

}  // namespace
}  // namespace moe::engine
