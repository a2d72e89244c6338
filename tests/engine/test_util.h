// Helpers shared by the engine tests: small options and a naive reference.

#ifndef MOE_TESTS_ENGINE_TEST_UTIL_H_
#define MOE_TESTS_ENGINE_TEST_UTIL_H_

#include <catch2/catch.hpp>

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
