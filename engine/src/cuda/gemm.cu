#include <string>

#include "common.cuh"
#include "gemm.cuh"

// CMake checks this at configure time (CMakeLists.txt); this catches a build
// that points at other cuBLAS headers.
#if CUBLAS_VERSION < 120500
#error "cublasGemmGroupedBatchedEx needs cuBLAS 12.5 or newer (CUDA toolkit 12.5+)"
#endif

namespace moe::engine::cuda {

Status RowMajorGemm(cublasHandle_t handle, cublasComputeType_t compute, const float* a, int lda,
                    const float* b, int ldb, float* c, int ldc, int m, int n, int k, float beta) {
  if (m <= 0 || n <= 0) return Status::Ok();
  // With k = 0 cuBLAS only scales c by beta, but a's leading dimension (k) must be >= 1.
  if (k == 0) lda = 1;
  const float alpha = 1.0f;
  MOE_CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &alpha, b, CUDA_R_32F,
                                ldb, a, CUDA_R_32F, lda, &beta, c, CUDA_R_32F, ldc, compute,
                                CUBLAS_GEMM_DEFAULT));
  return Status::Ok();
}

Status RowMajorGroupedGemm(cublasHandle_t handle, cudaStream_t stream, cublasComputeType_t compute,
                           const std::vector<GemmProblem>& problems, void** device_ptrs,
                           const void** pinned_ptrs) {
  const int num_problems = static_cast<int>(problems.size());
  if (num_problems == 0) return Status::Ok();
  // Column-major view: c^T[n, m] = b^T[n, k] a^T[k, m].
  std::vector<cublasOperation_t> ops(num_problems, CUBLAS_OP_N);
  std::vector<int> m(num_problems), n(num_problems), k(num_problems);
  std::vector<int> lda(num_problems), ldb(num_problems), ldc(num_problems);
  std::vector<int> group_size(num_problems, 1);
  std::vector<float> alpha(num_problems, 1.0f), beta(num_problems, 0.0f);
  const void** ptr_a = pinned_ptrs;
  const void** ptr_b = ptr_a + num_problems;
  const void** ptr_c = ptr_b + num_problems;
  for (int i = 0; i < num_problems; ++i) {
    const GemmProblem& p = problems[i];
    m[i] = p.n;
    n[i] = p.m;
    k[i] = p.k;
    ptr_a[i] = p.b;
    lda[i] = p.ldb;
    ptr_b[i] = p.a;
    ldb[i] = p.lda;
    ptr_c[i] = p.c;
    ldc[i] = p.ldc;
  }
  // From pinned memory the copy is asynchronous: it runs in stream order,
  // before the GEMM that reads the device arrays.
  MOE_CUDA_CHECK(cudaMemcpyAsync(device_ptrs, pinned_ptrs, 3 * sizeof(void*) * num_problems,
                                 cudaMemcpyHostToDevice, stream));
  const void* const* dev_a = const_cast<const void* const*>(device_ptrs);
  const void* const* dev_b = dev_a + num_problems;
  void* const* dev_c = device_ptrs + 2 * num_problems;
  const cublasStatus_t st = cublasGemmGroupedBatchedEx(
      handle, ops.data(), ops.data(), m.data(), n.data(), k.data(), alpha.data(), dev_a, CUDA_R_32F,
      lda.data(), dev_b, CUDA_R_32F, ldb.data(), beta.data(), dev_c, CUDA_R_32F, ldc.data(),
      num_problems, group_size.data(), compute);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE) {
    return Status::Unsupported(std::string(kGroupedGemmRefused) +
                               ": cublasGemmGroupedBatchedEx returned " +
                               cublasGetStatusString(st));
  }
  if (st != CUBLAS_STATUS_SUCCESS) {
    return Status::FromCall(StatusCode::kInternal, "cublas", "cublasGemmGroupedBatchedEx(...)",
                            __FILE__, __LINE__, cublasGetStatusString(st));
  }
  return Status::Ok();
}

}  // namespace moe::engine::cuda
