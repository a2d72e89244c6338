// What a CUDA backend (CreateBackend("cuda")) did since it was created: which
// path its expert FFN calls took, its device allocations, staged uploads and
// waits. Tests assert on these (the grouped path must not fall back, a steady
// step allocates nothing and waits once); programs may log them. No CUDA type
// appears here (docs/engine-cuda.md).

#ifndef MOE_ENGINE_CUDA_BACKEND_H_
#define MOE_ENGINE_CUDA_BACKEND_H_

#include <cstdint>

#include "moe/common/status.h"
#include "moe/engine/backend.h"

namespace moe::engine {

struct CudaBackendCounters {
  // ExpertFfn() calls of two or more non-empty groups, by the path they took.
  uint64_t grouped_ffn_calls = 0;    // two grouped GEMMs (cublasGemmGroupedBatchedEx)
  uint64_t unaligned_ffn_calls = 0;  // one GEMM per group: tensor-core grouped GEMMs need
                                     // 16-byte aligned matrices and these were not
  uint64_t grouped_fallbacks = 0;    // one GEMM per group because cuBLAS refused the
                                     // grouped GEMM (only with grouped_gemm_fallback)
  // ExpertFfn() calls of one non-empty group (one GEMM per projection, by design).
  uint64_t single_group_ffn_calls = 0;
  // Device memory: cudaMalloc / cudaFree calls and Allocate() calls served by
  // the backend's pool of freed blocks (freed buffers go back to it).
  uint64_t device_mallocs = 0;
  uint64_t device_frees = 0;
  uint64_t pool_hits = 0;
  // Host-to-device copies go through pinned staging: its cudaMallocHost calls,
  // the bytes staged, and the waits because it was full.
  uint64_t pinned_mallocs = 0;
  uint64_t staged_bytes = 0;
  uint64_t staging_waits = 0;
  // cudaStreamSynchronize calls: Synchronize(), Download() and destruction.
  uint64_t stream_waits = 0;
};

// The counters of `backend`. kInvalidArgument when it is not a CUDA backend;
// kUnsupported in a build without CUDA.
Result<CudaBackendCounters> GetCudaBackendCounters(const Backend& backend);

}  // namespace moe::engine

#endif  // MOE_ENGINE_CUDA_BACKEND_H_
