// The grouped SwiGLU expert FFN on the CUDA backend:
//   act = x W_gate_up;  act[:, :F] = silu(act[:, :F]) * act[:, F:];  y = act[:, :F] W_down.

#ifndef MOE_ENGINE_SRC_CUDA_FFN_CUH_
#define MOE_ENGINE_SRC_CUDA_FFN_CUH_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include "moe/common/status.h"

namespace moe::engine::cuda {

// One non-empty expert group, device pointers (layouts as in backend.h).
struct FfnGroup {
  const float* x;        // [rows, hidden]
  const float* gate_up;  // [hidden, 2 ffn]
  const float* down;     // [ffn, hidden]
  float* y;              // [rows, hidden]
  int rows;
  int ffn;
};

// act[r, j] = silu(act[r, j]) * act[r, ffn + j] for r < rows, j < ffn, in
// place; act is [rows, 2 ffn].
Status LaunchSwiGlu(float* act, int rows, int ffn, cudaStream_t stream);

// Group by group: two cublasGemmEx and one SwiGLU launch per group, all in the
// caller's workspace `act` of ExpertWorkspaceFloats(max rows, max ffn, hidden)
// floats (the groups run in stream order, so they can share it).
Status RunExpertFfnLoop(cublasHandle_t handle, cudaStream_t stream, cublasComputeType_t compute,
                        const std::vector<FfnGroup>& groups, int hidden, float* act);

// Floats of activation scratch RunExpertFfnGrouped needs: sum over groups of
// rows * 2 ffn, each slice rounded up to 4 floats (16 bytes).
size_t GroupedActFloats(const std::vector<FfnGroup>& groups);

// True when every matrix of `groups` starts on 16 bytes and every leading
// dimension is a multiple of 4 floats. cuBLAS requires this of grouped GEMMs
// with tensor-core compute types, since it cannot inspect pointers that live
// in device arrays; the caller uses RunExpertFfnLoop otherwise.
bool GroupedFfnAligned(const std::vector<FfnGroup>& groups, int hidden);

// All groups at once: one grouped GEMM for the gate/up projections, SwiGLU
// (one launch when every group has the same ffn), one grouped GEMM for the
// down projections. `act` holds GroupedActFloats(groups) floats, each group its
// own slice; `device_ptrs` (device) and `pinned_ptrs` (pinned host, not to be
// reused before the stream ran this call's copies) have room for 6 pointers
// per group. When cuBLAS refuses either grouped GEMM this returns
// RowMajorGroupedGemm's kUnsupported (kGroupedGemmRefused); the outputs are
// then undefined and RunExpertFfnLoop over the same groups computes them.
Status RunExpertFfnGrouped(cublasHandle_t handle, cudaStream_t stream, cublasComputeType_t compute,
                           const std::vector<FfnGroup>& groups, int hidden, float* act,
                           void** device_ptrs, const void** pinned_ptrs);

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_FFN_CUH_
