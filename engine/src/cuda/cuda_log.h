// Logging of the CUDA backend, in a C++ file of its own so that spdlog's
// headers never go through nvcc.

#ifndef MOE_ENGINE_SRC_CUDA_CUDA_LOG_H_
#define MOE_ENGINE_SRC_CUDA_CUDA_LOG_H_

#include <string_view>

namespace moe::engine::cuda {

// Warns (spdlog's default logger) that cuBLAS refused a grouped GEMM and the
// backend runs one GEMM per expert from now on; `what` is cuBLAS's answer.
void LogGroupedGemmFallback(std::string_view what);

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_CUDA_LOG_H_
