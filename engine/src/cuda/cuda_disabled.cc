// Stands in for the CUDA backend when the build has no CUDA (MOE_WITH_CUDA=OFF
// or no nvcc found), so callers get a clean kUnsupported instead of a link error.

#include "../backend_factories.h"
#include "moe/engine/cuda_backend.h"

namespace moe::engine {

Result<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options) {
  return Status::Unsupported(
      "built without CUDA (reconfigure with the CUDA toolkit and -DMOE_WITH_CUDA=ON)");
}

Result<CudaBackendCounters> GetCudaBackendCounters(const Backend& backend) {
  return Status::Unsupported("built without CUDA: no CUDA backend counters");
}

}  // namespace moe::engine
