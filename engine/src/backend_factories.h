// Factories of the individual backends; called only from backend_registry.cc.

#ifndef MOE_ENGINE_SRC_BACKEND_FACTORIES_H_
#define MOE_ENGINE_SRC_BACKEND_FACTORIES_H_

#include <memory>

#include "moe/engine/backend.h"

namespace moe::engine {

Result<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options);

// Defined by cuda/cuda_backend.cu when the CUDA build is on, else by
// cuda/cuda_disabled.cc (which returns kUnsupported "built without CUDA").
Result<std::unique_ptr<Backend>> CreateCudaBackend(const BackendOptions& options);

}  // namespace moe::engine

#endif  // MOE_ENGINE_SRC_BACKEND_FACTORIES_H_
