// Helpers of the GPU tests: a CPU/CUDA backend pair, host<->backend copies,
// seeded inputs and error measures.

#ifndef MOE_TESTS_GPU_GPU_TEST_UTIL_H_
#define MOE_TESTS_GPU_GPU_TEST_UTIL_H_

#include <catch2/catch.hpp>

#include <cstdint>
#include <memory>
#include <vector>

#include "moe/engine/backend.h"

namespace moe::engine::gpu_testing {

// The CPU reference and the CUDA backend under test.
struct BackendPair {
  std::unique_ptr<Backend> cpu;
  std::unique_ptr<Backend> gpu;
};

// REQUIREs both backends; `options` applies to the CUDA one.
BackendPair MakePair(const BackendOptions& options = {});

std::unique_ptr<Backend> MakeBackend(const char* name, const BackendOptions& options = {});

// A backend buffer holding `host`.
template <typename T>
std::unique_ptr<BackendBuffer> ToBackend(Backend& backend, const std::vector<T>& host) {
  auto buffer = backend.Allocate(host.size() * sizeof(T));
  REQUIRE(buffer.ok());
  REQUIRE(backend.Upload(host.data(), host.size() * sizeof(T), (*buffer)->data()).ok());
  return std::move(buffer).value();
}

// The first `n` elements of a backend buffer (waits for enqueued work).
template <typename T>
std::vector<T> ToHost(Backend& backend, BackendBuffer& buffer, size_t n) {
  std::vector<T> host(n);
  REQUIRE(backend.Download(buffer.data(), n * sizeof(T), host.data()).ok());
  return host;
}

// Seeded N(0, scale^2) floats (portable: NormalStream).
std::vector<float> RandomFloats(size_t n, uint64_t seed, double scale = 1.0);

// Seeded integers in [0, bound).
std::vector<int32_t> RandomInts(size_t n, int32_t bound, uint64_t seed);

// max |got - ref| / max |ref| (0 when both are all zero): the error relative to
// the output's scale, which stays meaningful where sums cancel.
double ScaledMaxError(const std::vector<float>& got, const std::vector<float>& ref);

// CHECKs ScaledMaxError(got, ref) <= tol and that no value is NaN/inf.
void CheckClose(const std::vector<float>& got, const std::vector<float>& ref, double tol);

}  // namespace moe::engine::gpu_testing

#endif  // MOE_TESTS_GPU_GPU_TEST_UTIL_H_
