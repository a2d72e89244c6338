#include "moe/engine/model.h"

#include <cmath>

namespace moe::engine {

uint64_t NormalStream::NextBits() {
  // splitmix64: tiny, fast, and identical on every platform.
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double NormalStream::Uniform() {
  return static_cast<double>(NextBits() >> 11) * 0x1.0p-53;
}

double NormalStream::Next() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  double u1 = Uniform();
  double u2 = Uniform();
  if (u1 < 1e-300) u1 = 1e-300;
  const double radius = std::sqrt(-2.0 * std::log(u1));
  const double angle = 2.0 * M_PI * u2;
  spare_ = radius * std::sin(angle);
  has_spare_ = true;
  return radius * std::cos(angle);
}

uint64_t MixSeed(uint64_t a, uint64_t b, uint64_t c) {
  NormalStream s(a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull) ^ (c << 17));
  s.Uniform();
  return static_cast<uint64_t>(s.Uniform() * 0x1.0p53) ^ (b * 31 + c);
}

namespace {

void FillNormal(NormalStream* rng, double std_dev, size_t n, std::vector<float>* out) {
  out->resize(n);
  for (size_t i = 0; i < n; ++i)
    (*out)[i] = static_cast<float>(rng->Next() * std_dev);
}

}  // namespace

HostLayerWeights GenerateLayerWeights(const ModelOptions& m, uint32_t layer) {
  HostLayerWeights w;
  const size_t hidden = m.hidden;
  const size_t ffn = m.expert_ffn;
  NormalStream rng(MixSeed(m.seed, layer, 1));
  w.norm.resize(hidden);
  for (size_t h = 0; h < hidden; ++h)
    w.norm[h] = static_cast<float>(1.0 + 0.1 * rng.Next());
  FillNormal(&rng, m.router_init_scale / std::sqrt(static_cast<double>(hidden)),
             hidden * m.num_experts, &w.gate);
  w.gate_up.resize(m.num_experts);
  w.down.resize(m.num_experts);
  for (uint32_t e = 0; e < m.num_experts; ++e) {
    NormalStream expert_rng(MixSeed(m.seed, layer, 100 + e));
    FillNormal(&expert_rng, 1.0 / std::sqrt(static_cast<double>(hidden)), hidden * 2 * ffn,
               &w.gate_up[e]);
    FillNormal(&expert_rng, 1.0 / std::sqrt(static_cast<double>(ffn)), ffn * hidden, &w.down[e]);
  }
  const size_t shared = static_cast<size_t>(m.num_shared_experts) * m.shared_ffn;
  if (shared > 0) {
    NormalStream shared_rng(MixSeed(m.seed, layer, 2));
    FillNormal(&shared_rng, 1.0 / std::sqrt(static_cast<double>(hidden)), hidden * 2 * shared,
               &w.shared_gate_up);
    FillNormal(&shared_rng, 1.0 / std::sqrt(static_cast<double>(m.shared_ffn)), shared * hidden,
               &w.shared_down);
  }
  return w;
}

}  // namespace moe::engine
