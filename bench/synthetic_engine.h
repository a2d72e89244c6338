// SyntheticEngine: an engine played by controller_bench. It produces the
// telemetry of a real MoE model's shape (e.g. 61 layers x 256 experts, top-8,
// 288 slots on 32 devices) without running the model, and applies commands
// the way moe-engine does, so the controller's policies see a load that
// answers their knobs: demand follows a skewed, slowly rotating popularity per
// layer; the selection bias in force shifts demand; capacity (per replica
// slot) caps what is served and the rest is dropped; a placement moves
// replicas. Deterministic for a seed.
//
// Thread safety: one thread per object.

#ifndef MOE_BENCH_SYNTHETIC_ENGINE_H_
#define MOE_BENCH_SYNTHETIC_ENGINE_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "moe/telemetry/types.h"

namespace moe::bench {

struct ModelShape {
  uint32_t num_layers = 61;
  uint32_t num_experts = 256;
  uint32_t num_replicas = 288;
  uint32_t num_devices = 32;
  uint32_t top_k = 8;
  uint32_t num_tokens = 4096;  // tokens per step
};

class SyntheticEngine {
 public:
  SyntheticEngine(std::string engine_id, const ModelShape& shape, uint64_t seed);

  // The Hello a freshly started engine sends (epoch 0, capacity factor 1).
  telemetry::Hello Hello() const;

  // The next step's telemetry, finished at `timestamp_ns`, under the epoch in
  // force.
  telemetry::StepRecord NextStep(int64_t timestamp_ns);

  // Applies `command` (capacity factor, top_k, noise, per-layer bias and
  // placement are taken; the rest is ignored) from the next step on, and
  // returns its ack. A command for an older epoch is refused.
  telemetry::Ack Apply(const telemetry::Command& command, int64_t now_ns);

  // Also report each device's expert time (50 ns per row), as a real engine
  // does: the controller then fits its cost model, and the counterfactual
  // capacity policy runs as it would beside a real engine. Off by default.
  void set_device_times(bool on) { device_times_ = on; }

  uint64_t epoch() const { return epoch_; }
  uint64_t step() const { return step_; }

 private:
  void RefreshWeights(uint32_t layer);

  std::string engine_id_;
  ModelShape shape_;
  std::mt19937_64 rng_;
  uint64_t step_ = 0;
  uint64_t epoch_ = 0;
  bool device_times_ = false;
  double capacity_factor_ = 1.0;
  uint32_t top_k_ = 0;
  // Per layer: each expert's popularity rank (0 = hottest) and the selection
  // weights after the bias in force ([layer][expert]).
  std::vector<std::vector<uint32_t>> rank_;
  std::vector<std::vector<float>> bias_;
  std::vector<std::vector<double>> weight_;
  std::vector<std::vector<uint32_t>> phy2log_;  // [layer][slot]
};

}  // namespace moe::bench

#endif  // MOE_BENCH_SYNTHETIC_ENGINE_H_
