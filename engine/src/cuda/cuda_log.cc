#include "cuda_log.h"

#include <spdlog/spdlog.h>

namespace moe::engine::cuda {

void LogGroupedGemmFallback(std::string_view what) {
  spdlog::warn(
      "cuda backend: {}; grouped_gemm_fallback is on, so every expert FFN call of this "
      "backend now runs one GEMM per expert (slower; counted as grouped_fallbacks)",
      what);
}

}  // namespace moe::engine::cuda
