// Shared helpers of the CUDA backend. Private: nothing here reaches a public
// header.

#ifndef MOE_ENGINE_SRC_CUDA_COMMON_CUH_
#define MOE_ENGINE_SRC_CUDA_COMMON_CUH_

#include <cuda_runtime.h>

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

#endif  // MOE_ENGINE_SRC_CUDA_COMMON_CUH_
