// Row-major fp32 GEMMs on cuBLAS (column-major underneath).

#ifndef MOE_ENGINE_SRC_CUDA_GEMM_CUH_
#define MOE_ENGINE_SRC_CUDA_GEMM_CUH_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <vector>

#include "moe/common/status.h"

namespace moe::engine::cuda {

// c[m, n] = a[m, k] b[k, n] + beta * c[m, n], all row-major fp32 with row
// strides lda, ldb, ldc. A row-major matrix is the column-major transpose, so
// this runs the column-major c^T = b^T a^T: the operands are swapped, nothing
// is transposed. `compute` picks exact fp32 or tensor-core math.
Status RowMajorGemm(cublasHandle_t handle, cublasComputeType_t compute, const float* a, int lda,
                    const float* b, int ldb, float* c, int ldc, int m, int n, int k, float beta);

// One row-major problem of a grouped GEMM: c = a b (beta 0).
struct GemmProblem {
  const float* a;
  const float* b;
  float* c;
  int m, n, k;
  int lda, ldb, ldc;
};

// Runs every problem with one cublasGemmGroupedBatchedEx call (each problem is
// its own cuBLAS group of size one). `pinned_ptrs` is pinned host memory with
// room for 3 pointers per problem: the A, B and C arrays are written there and
// copied asynchronously to `device_ptrs` (room for as many), so the caller
// must not reuse `pinned_ptrs` before the stream has run the copy. Returns
// kUnsupported "cuBLAS refused the grouped GEMM: <cuBLAS's status>" when
// cuBLAS answers NOT_SUPPORTED or INVALID_VALUE (no GEMM was enqueued then),
// kInternal for any other failure.
Status RowMajorGroupedGemm(cublasHandle_t handle, cudaStream_t stream, cublasComputeType_t compute,
                           const std::vector<GemmProblem>& problems, void** device_ptrs,
                           const void** pinned_ptrs);

// The message prefix of RowMajorGroupedGemm's kUnsupported.
inline constexpr const char* kGroupedGemmRefused = "cuBLAS refused the grouped GEMM";

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_GEMM_CUH_
