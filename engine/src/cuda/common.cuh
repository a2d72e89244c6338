// Shared helpers of the CUDA backend. Private: nothing here reaches a public
// header. Launchers of every op family take raw device pointers, sizes and a
// cudaStream_t, enqueue their work and return a Status built by these macros.

#ifndef MOE_ENGINE_SRC_CUDA_COMMON_CUH_
#define MOE_ENGINE_SRC_CUDA_COMMON_CUH_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstddef>

#include "moe/common/status.h"

// Evaluates a CUDA runtime call; on failure returns a Status recording the
// statement, file, line and CUDA's error string from the enclosing function.
#define MOE_CUDA_CHECK(stmt)                                                                \
  do {                                                                                      \
    cudaError_t moe_cuda_err_ = (stmt);                                                     \
    if (moe_cuda_err_ != cudaSuccess) {                                                     \
      return ::moe::Status::FromCall(::moe::StatusCode::kInternal, "cuda", #stmt, __FILE__, \
                                     __LINE__, cudaGetErrorString(moe_cuda_err_));          \
    }                                                                                       \
  } while (0)

// The same for a cuBLAS call (cuBLAS's status string as the detail).
#define MOE_CUBLAS_CHECK(stmt)                                                                \
  do {                                                                                        \
    cublasStatus_t moe_cublas_st_ = (stmt);                                                   \
    if (moe_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                            \
      return ::moe::Status::FromCall(::moe::StatusCode::kInternal, "cublas", #stmt, __FILE__, \
                                     __LINE__, cublasGetStatusString(moe_cublas_st_));        \
    }                                                                                         \
  } while (0)

// Checks the launch of the kernel just enqueued (bad configuration, no image
// for this device); errors while it runs surface at the next synchronisation.
#define MOE_CUDA_CHECK_LAUNCH() MOE_CUDA_CHECK(cudaGetLastError())

namespace moe::engine::cuda {

constexpr int kWarpSize = 32;

// Blocks of `threads` needed to cover `n` items, capped for grid-stride loops.
inline unsigned int NumBlocks(size_t n, int threads, size_t max_blocks = 65535) {
  size_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  return static_cast<unsigned int>(blocks < max_blocks ? blocks : max_blocks);
}

// Rounds a byte count up to 256 so carved-out scratch pieces stay aligned.
inline size_t AlignUp(size_t num_bytes) {
  return (num_bytes + 255) / 256 * 256;
}

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_COMMON_CUH_
