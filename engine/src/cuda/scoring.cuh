// Router scoring on the CUDA backend: Score (softmax / sigmoid) and TopK.

#ifndef MOE_ENGINE_SRC_CUDA_SCORING_CUH_
#define MOE_ENGINE_SRC_CUDA_SCORING_CUH_

#include <cuda_runtime.h>

#include <cstdint>

#include "moe/common/status.h"

namespace moe::engine::cuda {

// scores[t, :] = softmax(logits[t, :]) (max-subtracted), one warp per token.
Status LaunchSoftmax(const float* logits, int num_tokens, int num_experts, float* scores,
                     cudaStream_t stream);

// scores[i] = 1 / (1 + exp(-logits[i])) for i in [0, num_tokens * num_experts).
Status LaunchSigmoid(const float* logits, int num_tokens, int num_experts, float* scores,
                     cudaStream_t stream);

// indices[t, 0..k) = the k largest selection[t, :] in descending order, ties to
// the lower expert id; one warp per token. Round r picks the best element that
// ranks after round r-1's pick in the total order (value desc, id asc), so no
// per-token state is kept and any num_experts and k <= num_experts work; the
// cost is k passes over the row (k <= 16 and E <= 512 in practice).
// Precondition: 0 <= k <= num_experts (checked by the caller).
Status LaunchTopK(const float* selection, int num_tokens, int num_experts, int k, int32_t* indices,
                  cudaStream_t stream);

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_SCORING_CUH_
