#include <climits>
#include <cmath>

#include "common.cuh"
#include "scoring.cuh"
#include "warp_rank.cuh"

namespace moe::engine::cuda {
namespace {

constexpr int kThreads = 128;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;
constexpr int kSigmoidThreads = 256;

__global__ void __launch_bounds__(kThreads)
    SoftmaxKernel(const float* logits, int num_tokens, int num_experts, float* scores) {
  const int token = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (token >= num_tokens) return;
  const float* row = logits + static_cast<size_t>(token) * num_experts;
  float* dst = scores + static_cast<size_t>(token) * num_experts;
  float max_logit = -INFINITY;
  for (int e = lane; e < num_experts; e += kWarpSize)
    max_logit = fmaxf(max_logit, row[e]);
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    max_logit = fmaxf(max_logit, __shfl_xor_sync(kFullMask, max_logit, offset));
  float sum = 0;
  for (int e = lane; e < num_experts; e += kWarpSize) {
    const float v = expf(row[e] - max_logit);
    dst[e] = v;
    sum += v;
  }
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    sum += __shfl_xor_sync(kFullMask, sum, offset);
  for (int e = lane; e < num_experts; e += kWarpSize)
    dst[e] = dst[e] / sum;
}

__global__ void __launch_bounds__(kSigmoidThreads)
    SigmoidKernel(const float* logits, size_t n, float* scores) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    scores[i] = 1.0f / (1.0f + expf(-logits[i]));
  }
}

__global__ void __launch_bounds__(kThreads)
    TopKKernel(const float* selection, int num_tokens, int num_experts, int k, int32_t* indices) {
  const int token = blockIdx.x * kWarpsPerBlock + threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  if (token >= num_tokens) return;
  const float* row = selection + static_cast<size_t>(token) * num_experts;
  int32_t* out = indices + static_cast<size_t>(token) * k;
  float prev_v = INFINITY;
  int prev_e = -1;  // (+inf, -1) ranks before every element
  for (int r = 0; r < k; ++r) {
    float best_v = -INFINITY;
    int best_e = INT_MAX;  // "none": every real element ranks before it
    for (int e = lane; e < num_experts; e += kWarpSize) {
      const float v = row[e];
      if (RanksBefore(prev_v, prev_e, v, e) && RanksBefore(v, e, best_v, best_e)) {
        best_v = v;
        best_e = e;
      }
    }
    WarpBest(&best_v, &best_e);
    if (lane == 0) out[r] = best_e == INT_MAX ? -1 : best_e;
    prev_v = best_v;
    prev_e = best_e;
  }
}

unsigned int TokenBlocks(int num_tokens) {
  return static_cast<unsigned int>((num_tokens + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

}  // namespace

Status LaunchSoftmax(const float* logits, int num_tokens, int num_experts, float* scores,
                     cudaStream_t stream) {
  if (num_tokens <= 0 || num_experts <= 0) return Status::Ok();
  SoftmaxKernel<<<TokenBlocks(num_tokens), kThreads, 0, stream>>>(logits, num_tokens, num_experts,
                                                                  scores);
  MOE_CUDA_CHECK_LAUNCH();
  return Status::Ok();
}

Status LaunchSigmoid(const float* logits, int num_tokens, int num_experts, float* scores,
                     cudaStream_t stream) {
  if (num_tokens <= 0 || num_experts <= 0) return Status::Ok();
  const size_t n = static_cast<size_t>(num_tokens) * num_experts;
  SigmoidKernel<<<NumBlocks(n, kSigmoidThreads), kSigmoidThreads, 0, stream>>>(logits, n, scores);
  MOE_CUDA_CHECK_LAUNCH();
  return Status::Ok();
}

Status LaunchTopK(const float* selection, int num_tokens, int num_experts, int k, int32_t* indices,
                  cudaStream_t stream) {
  if (num_tokens <= 0 || k <= 0) return Status::Ok();
  TopKKernel<<<TokenBlocks(num_tokens), kThreads, 0, stream>>>(selection, num_tokens, num_experts,
                                                               k, indices);
  MOE_CUDA_CHECK_LAUNCH();
  return Status::Ok();
}

}  // namespace moe::engine::cuda
