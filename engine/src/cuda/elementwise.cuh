// Element-wise ops of the CUDA backend: Fill and Add.

#ifndef MOE_ENGINE_SRC_CUDA_ELEMENTWISE_CUH_
#define MOE_ENGINE_SRC_CUDA_ELEMENTWISE_CUH_

#include <cuda_runtime.h>

#include <cstddef>

#include "moe/common/status.h"

namespace moe::engine::cuda {

// dst[i] = value for i in [0, num_floats).
Status LaunchFill(float value, size_t num_floats, float* dst, cudaStream_t stream);

// out[i] = a[i] + b[i] for i in [0, n); `out` may alias `a` or `b`.
Status LaunchAdd(const float* a, const float* b, size_t n, float* out, cudaStream_t stream);

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_ELEMENTWISE_CUH_
