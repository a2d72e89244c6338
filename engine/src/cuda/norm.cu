#include "common.cuh"
#include "norm.cuh"

namespace moe::engine::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    RmsNormKernel(const float* x, const float* weight, int hidden, float eps, float* out) {
  __shared__ double warp_sums[kThreads / kWarpSize];
  __shared__ float inv_shared;
  const size_t base = static_cast<size_t>(blockIdx.x) * hidden;
  const float* row = x + base;
  double sum = 0;
  for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
    const double v = row[h];
    sum += v * v;
  }
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    sum += __shfl_down_sync(0xffffffffu, sum, offset);
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (lane == 0) warp_sums[warp] = sum;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0;
    for (int w = 0; w < static_cast<int>(blockDim.x / kWarpSize); ++w)
      total += warp_sums[w];
    inv_shared = static_cast<float>(1.0 / sqrt(total / hidden + eps));
  }
  __syncthreads();
  const float inv = inv_shared;
  float* dst = out + base;
  for (int h = threadIdx.x; h < hidden; h += blockDim.x)
    dst[h] = __fmul_rn(__fmul_rn(row[h], inv), weight[h]);
}

}  // namespace

Status LaunchRmsNorm(const float* x, const float* weight, int num_tokens, int hidden, float eps,
                     float* out, cudaStream_t stream) {
  if (num_tokens <= 0 || hidden <= 0) return Status::Ok();
  RmsNormKernel<<<num_tokens, kThreads, 0, stream>>>(x, weight, hidden, eps, out);
  MOE_CUDA_CHECK_LAUNCH();
  return Status::Ok();
}

}  // namespace moe::engine::cuda
