// Token permutation on the CUDA backend: Gather (dispatch) and the weighted
// scatter-add (combine).

#ifndef MOE_ENGINE_SRC_CUDA_PERMUTE_CUH_
#define MOE_ENGINE_SRC_CUDA_PERMUTE_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "moe/common/status.h"

namespace moe::engine::cuda {

// out[i, :] = x[rows[i], :] for i in [0, num_rows); rows[i] = -1 (padding of
// the capacity layout) gives zeros.
Status LaunchGather(const float* x, const int32_t* rows, int num_rows, int hidden, float* out,
                    cudaStream_t stream);

// Bytes of device scratch LaunchScatterAddWeighted needs for `num_rows` rows.
Result<size_t> ScatterScratchBytes(int num_rows);

// out[rows[i], :] += weights[i] * y[i, :] for i in [0, num_rows), in order;
// rows[i] = -1 (padding) is skipped.
//
// Deterministic and free of atomics: a stable radix sort of (rows[i], i) puts
// the contributions to each output row next to each other in increasing i; the
// first position of each run then owns that output row and adds the run's
// contributions one by one, multiplying and adding with separate roundings
// like the CPU reference, so the result is bitwise the in-order sum.
// `scratch` holds at least ScatterScratchBytes(num_rows) bytes. Precondition:
// rows[i] is -1 or names a row of `out`.
Status LaunchScatterAddWeighted(const float* y, const int32_t* rows, const float* weights,
                                int num_rows, int hidden, float* out, void* scratch,
                                size_t scratch_bytes, cudaStream_t stream);

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_PERMUTE_CUH_
