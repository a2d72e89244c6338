// The seeded MoE model weights, on the host. The engine uploads these to its
// backend; tests regenerate them to build a naive reference.

#ifndef MOE_ENGINE_MODEL_H_
#define MOE_ENGINE_MODEL_H_

#include <cstdint>
#include <vector>

#include "moe/engine/options.h"

namespace moe::engine {

// One layer's weights, row-major (layouts as in backend.h's ExpertWeights).
// The shared experts are stored fused as one SwiGLU of intermediate size
// num_shared_experts * shared_ffn: the sum of several SwiGLU FFNs equals one
// SwiGLU over their concatenated intermediate columns.
struct HostLayerWeights {
  std::vector<float> norm;                  // [H] RMSNorm weight
  std::vector<float> gate;                  // [H, E] router
  std::vector<std::vector<float>> gate_up;  // [E][H, 2F]
  std::vector<std::vector<float>> down;     // [E][F, H]
  std::vector<float> shared_gate_up;        // [H, 2 S] with S = shared experts * shared_ffn
  std::vector<float> shared_down;           // [S, H]
};

// Deterministic in (model.seed, layer). Experts use N(0, 1/fan_in) entries;
// the router N(0, (router_init_scale / sqrt(H))^2); the norm weight is ~1.
HostLayerWeights GenerateLayerWeights(const ModelOptions& model, uint32_t layer);

// A seeded stream of standard normal numbers (portable: same values on every
// platform for the same seed).
class NormalStream {
 public:
  explicit NormalStream(uint64_t seed) : state_(seed) {}
  double Next();
  double Uniform();  // in [0, 1)

 private:
  uint64_t NextBits();
  uint64_t state_;
  bool has_spare_ = false;
  double spare_ = 0;
};

// Mixes several integers into one seed.
uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c = 0);

}  // namespace moe::engine

#endif  // MOE_ENGINE_MODEL_H_
