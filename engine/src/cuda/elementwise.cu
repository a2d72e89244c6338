#include <cstdint>
#include <cstring>

#include "common.cuh"
#include "elementwise.cuh"

namespace moe::engine::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) FillKernel(float value, size_t n, float* dst) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    dst[i] = value;
  }
}

__global__ void __launch_bounds__(kThreads)
    AddKernel(const float* a, const float* b, size_t n, float* out) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    out[i] = a[i] + b[i];
  }
}

}  // namespace

Status LaunchFill(float value, size_t num_floats, float* dst, cudaStream_t stream) {
  if (num_floats == 0) return Status::Ok();
  uint32_t bits = 0;
  std::memcpy(&bits, &value, sizeof(bits));
  if (bits == 0) {  // +0.0f: all-zero bytes
    MOE_CUDA_CHECK(cudaMemsetAsync(dst, 0, num_floats * sizeof(float), stream));
    return Status::Ok();
  }
  FillKernel<<<NumBlocks(num_floats, kThreads), kThreads, 0, stream>>>(value, num_floats, dst);
  MOE_CUDA_CHECK_LAUNCH();
  return Status::Ok();
}

Status LaunchAdd(const float* a, const float* b, size_t n, float* out, cudaStream_t stream) {
  if (n == 0) return Status::Ok();
  AddKernel<<<NumBlocks(n, kThreads), kThreads, 0, stream>>>(a, b, n, out);
  MOE_CUDA_CHECK_LAUNCH();
  return Status::Ok();
}

}  // namespace moe::engine::cuda
