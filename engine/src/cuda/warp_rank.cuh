// Warp-level ranking shared by the top-K kernels (TopK, route selection): a
// total order on (value, expert id) and a warp-wide arg-max under it.

#ifndef MOE_ENGINE_SRC_CUDA_WARP_RANK_CUH_
#define MOE_ENGINE_SRC_CUDA_WARP_RANK_CUH_

#include "common.cuh"

namespace moe::engine::cuda {

constexpr unsigned int kFullMask = 0xffffffffu;

// True when (v1, e1) ranks before (v2, e2): larger value, ties to the lower id.
__device__ __forceinline__ bool RanksBefore(float v1, int e1, float v2, int e2) {
  return v1 > v2 || (v1 == v2 && e1 < e2);
}

// Leaves in every lane the best (value, id) pair held by any lane of the warp.
__device__ __forceinline__ void WarpBest(float* best_v, int* best_e) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    const float other_v = __shfl_xor_sync(kFullMask, *best_v, offset);
    const int other_e = __shfl_xor_sync(kFullMask, *best_e, offset);
    if (RanksBefore(other_v, other_e, *best_v, *best_e)) {
      *best_v = other_v;
      *best_e = other_e;
    }
  }
}

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_WARP_RANK_CUH_
