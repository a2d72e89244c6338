// Helpers shared by the engine tests: small options and a naive reference.

#ifndef MOE_TESTS_ENGINE_TEST_UTIL_H_
#define MOE_TESTS_ENGINE_TEST_UTIL_H_

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "moe/engine/engine.h"
#include "moe/engine/model.h"
#include "moe/engine/options.h"

namespace moe::engine::testing {

// A one-layer model small enough for fp64 reference loops.
inline Options SmallOptions() {
  Options o;
  o.model.num_layers = 1;
  o.model.hidden = 32;
  o.model.num_experts = 8;
  o.model.expert_ffn = 16;
  o.model.num_shared_experts = 1;
  o.model.shared_ffn = 24;
  o.model.seed = 42;
  o.knobs.top_k = 2;
  o.knobs.capacity_factor = 0;
  o.quality_probe_tokens = 0;
  return o;
}

inline std::vector<float> RandomTokens(int num_tokens, int hidden, uint64_t seed) {
  NormalStream rng(seed);
  std::vector<float> x(static_cast<size_t>(num_tokens) * hidden);
  for (float& v : x)
    v = static_cast<float>(rng.Next());
  return x;
}

// Checks that `got` matches `want` element by element within what fp32
// rounding allows. Two GEMMs of different shapes (padding rows, another
// OpenBLAS kernel: OPENBLAS_CORETYPE) may sum in another order, so equal bits
// are never promised. Each output element here is a few chained fp32 dot
// products of length <= 64 with O(1) terms; the sum-order error of each is
// bounded by n * eps * sum|a_i b_i| ~ 64 * 6e-8 * O(1), so 1e-5 relative to
// the output's scale leaves an order of magnitude of headroom while a wrong
// row (an error of O(1)) still fails.
inline void CheckClose(const std::vector<float>& got, const std::vector<float>& want,
                       double rel_tol = 1e-5) {
  REQUIRE(got.size() == want.size());
  double scale = 1.0;
  for (float v : want)
    scale = std::max(scale, static_cast<double>(std::abs(v)));
  double worst = 0;
  size_t worst_at = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = std::abs(static_cast<double>(got[i]) - want[i]);
    if (!(d <= worst)) {  // also catches NaN
      worst = std::isnan(d) ? INFINITY : d;
      worst_at = i;
    }
  }
  INFO("largest difference " << worst << " at element " << worst_at << " (scale " << scale << ")");
  CHECK(worst <= rel_tol * scale);
}

inline std::unique_ptr<Engine> MakeEngine(const Options& options) {
  auto backend = CreateBackend("cpu");
  INFO(backend.status().ToString());
  REQUIRE(backend.ok());
  auto engine = Engine::Create(options, std::move(backend).value());
  INFO(engine.status().ToString());
  REQUIRE(engine.ok());
  return std::move(engine).value();
}

}  // namespace moe::engine::testing

#endif  // MOE_TESTS_ENGINE_TEST_UTIL_H_
