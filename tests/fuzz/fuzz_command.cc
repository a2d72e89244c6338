// Fuzz target: the engine's command path, from the bytes a controller (or
// anyone who reached the command socket) sends to the engine applying them:
// telemetry::Decode, ToKnobUpdate (apps/moe-engine/telemetry_glue.h) and
// Engine::Submit.
//
// Properties checked on every input:
//   - nothing crashes;
//   - the engine is statically stable (DESIGN.md): whatever it accepted, the
//     next step runs and its outputs are finite; whatever it refused, it keeps
//     the knobs and epoch it had.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>
#include <variant>
#include <vector>

#include "fuzz_util.h"
#include "moe/engine/engine.h"
#include "moe/engine/model.h"
#include "moe/telemetry/codec.h"
#include "telemetry_glue.h"

namespace {

// Two layers, 8 experts, 10 slots on 2 devices: enough for per-layer
// overrides and placements to mean something, small enough for a fresh engine
// per input (inputs replay independently of each other).
moe::engine::Options FuzzOptions() {
  moe::engine::Options o;
  o.model.num_layers = 2;
  o.model.hidden = 16;
  o.model.num_experts = 8;
  o.model.expert_ffn = 8;
  o.model.num_shared_experts = 1;
  o.model.shared_ffn = 8;
  o.parallel.num_devices = 2;
  o.parallel.num_replicas = 10;
  o.knobs.top_k = 2;
  o.knobs.capacity_factor = 1.0;
  o.quality_probe_tokens = 2;
  o.quality_probe_every = 1;
  return o;
}

std::unique_ptr<moe::engine::Engine> MakeEngine() {
  auto backend = moe::engine::CreateBackend("cpu");
  MOE_FUZZ_CHECK(backend.ok(), backend.status().ToString());
  auto engine = moe::engine::Engine::Create(FuzzOptions(), std::move(backend).value());
  MOE_FUZZ_CHECK(engine.ok(), engine.status().ToString());
  return std::move(engine).value();
}

void StepAndCheck(moe::engine::Engine* engine) {
  const int num_tokens = 6;
  const uint32_t hidden = engine->options().model.hidden;
  std::vector<float> x(static_cast<size_t>(num_tokens) * hidden);
  for (size_t i = 0; i < x.size(); ++i)
    x[i] = static_cast<float>(std::sin(0.37 * static_cast<double>(i)));
  std::vector<float> y;
  auto stats = engine->Step({x.data(), num_tokens, {}}, &y);
  MOE_FUZZ_CHECK(stats.ok(), "a step after the command failed: " + stats.status().ToString());
  for (float v : y)
    MOE_FUZZ_CHECK(std::isfinite(v), "a step after the command produced a non-finite output");
}

std::vector<moe::telemetry::KnobSet> KnobsInForce(const moe::engine::Engine& engine) {
  std::vector<moe::telemetry::KnobSet> knobs;
  for (uint32_t l = 0; l < engine.options().model.num_layers; ++l)
    knobs.push_back(moe::engine_app::ToKnobSet(engine.knobs(l)));
  return knobs;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto message =
      moe::telemetry::Decode(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!message.ok()) return 0;
  const auto* command = std::get_if<moe::telemetry::Command>(&*message);
  if (command == nullptr) return 0;
  auto engine = MakeEngine();
  const uint64_t epoch_before = engine->epoch();
  const auto knobs_before = KnobsInForce(*engine);
  auto at = engine->Submit(moe::engine_app::ToKnobUpdate(*command));
  StepAndCheck(engine.get());
  if (!at.ok()) {
    MOE_FUZZ_CHECK(engine->epoch() == epoch_before, "a refused command changed the epoch");
    MOE_FUZZ_CHECK(KnobsInForce(*engine) == knobs_before, "a refused command changed the knobs");
  }
  return 0;
}
