// RMSNorm on the CUDA backend.

#ifndef MOE_ENGINE_SRC_CUDA_NORM_CUH_
#define MOE_ENGINE_SRC_CUDA_NORM_CUH_

#include <cuda_runtime.h>

#include "moe/common/status.h"

namespace moe::engine::cuda {

// out[t, :] = x[t, :] * weight[:] / sqrt(mean(x[t, :]^2) + eps), one block per
// token. The sum of squares is accumulated in fp64 like the CPU reference, and
// the scaling is done in the same order, so outputs agree to a rounding or two.
Status LaunchRmsNorm(const float* x, const float* weight, int num_tokens, int hidden, float eps,
                     float* out, cudaStream_t stream);

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_NORM_CUH_
