// Counter-based normal noise shared by the CPU router and the CUDA routing
// kernels: the draw for (seed, token, expert) is a pure function of those three
// numbers, so any thread on any backend computes the same value without a
// sequential stream. Header-only; host and device callable under nvcc.
//
// Bits: splitmix64's finaliser of a per-token key mixed with the expert's two
// counters; normal: Box-Muller (cosine branch) in double. The double
// arithmetic is IEEE on both sides except log/cos, whose last-bit differences
// between libm and CUDA's libdevice almost never survive the cast to float
// that the router applies.

#ifndef MOE_ENGINE_SRC_COUNTER_RNG_H_
#define MOE_ENGINE_SRC_COUNTER_RNG_H_

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MOE_HOST_DEVICE __host__ __device__
#else
#define MOE_HOST_DEVICE
#endif

namespace moe::engine {

MOE_HOST_DEVICE inline uint64_t SplitMix64(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Standard normal draw number `index` of token `token` under `seed`.
MOE_HOST_DEVICE inline double CounterNormal(uint64_t seed, uint64_t token, uint64_t index) {
  const uint64_t key = SplitMix64(seed ^ SplitMix64(token + 0x632BE59BD9B4E019ull));
  const uint64_t b1 = SplitMix64(key ^ (2 * index));
  const uint64_t b2 = SplitMix64(key ^ (2 * index + 1));
  double u1 = static_cast<double>(b1 >> 11) * 0x1.0p-53;
  const double u2 = static_cast<double>(b2 >> 11) * 0x1.0p-53;
  if (u1 < 1e-300) u1 = 1e-300;
  const double two_pi = 6.283185307179586476925286766559;
  return sqrt(-2.0 * log(u1)) * cos(two_pi * u2);
}

}  // namespace moe::engine

#endif  // MOE_ENGINE_SRC_COUNTER_RNG_H_
