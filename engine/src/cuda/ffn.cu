#include <cstdint>

#include "common.cuh"
#include "ffn.cuh"
#include "gemm.cuh"

namespace moe::engine::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) SwiGluKernel(float* act, int rows, int ffn) {
  const size_t n = static_cast<size_t>(rows) * ffn;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = i / ffn;
    const size_t j = i - r * ffn;
    float* row = act + r * 2 * ffn;
    const float g = row[j];
    // Separate roundings, in the CPU reference's order: g / (1 + e^-g) * u.
    row[j] = __fmul_rn(__fdiv_rn(g, 1.0f + expf(-g)), row[ffn + j]);
  }
}

size_t ActSliceFloats(const FfnGroup& g) {
  return (static_cast<size_t>(g.rows) * 2 * g.ffn + 3) / 4 * 4;
}

bool Aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

}  // namespace

Status LaunchSwiGlu(float* act, int rows, int ffn, cudaStream_t stream) {
  if (rows <= 0 || ffn <= 0) return Status::Ok();
  const size_t n = static_cast<size_t>(rows) * ffn;
  SwiGluKernel<<<NumBlocks(n, kThreads), kThreads, 0, stream>>>(act, rows, ffn);
  MOE_CUDA_CHECK_LAUNCH();
  return Status::Ok();
}

Status RunExpertFfnLoop(cublasHandle_t handle, cudaStream_t stream, cublasComputeType_t compute,
                        const std::vector<FfnGroup>& groups, int hidden, float* act) {
  for (const FfnGroup& g : groups) {
    const int two_f = 2 * g.ffn;
    MOE_RETURN_IF_ERROR(RowMajorGemm(handle, compute, g.x, hidden, g.gate_up, two_f, act, two_f,
                                     g.rows, two_f, hidden, 0.0f));
    MOE_RETURN_IF_ERROR(LaunchSwiGlu(act, g.rows, g.ffn, stream));
    // act[:, :F] (row stride 2F) times W_down [F, H].
    MOE_RETURN_IF_ERROR(RowMajorGemm(handle, compute, act, two_f, g.down, hidden, g.y, hidden,
                                     g.rows, hidden, g.ffn, 0.0f));
  }
  return Status::Ok();
}

size_t GroupedActFloats(const std::vector<FfnGroup>& groups) {
  size_t total = 0;
  for (const FfnGroup& g : groups)
    total += ActSliceFloats(g);
  return total;
}

bool GroupedFfnAligned(const std::vector<FfnGroup>& groups, int hidden) {
  if (hidden % 4 != 0) return false;
  for (const FfnGroup& g : groups) {
    if (g.ffn % 2 != 0 || !Aligned16(g.x) || !Aligned16(g.gate_up) || !Aligned16(g.down) ||
        !Aligned16(g.y)) {
      return false;
    }
  }
  return true;
}

Status RunExpertFfnGrouped(cublasHandle_t handle, cudaStream_t stream, cublasComputeType_t compute,
                           const std::vector<FfnGroup>& groups, int hidden, float* act,
                           void** device_ptrs, const void** pinned_ptrs) {
  const size_t num_groups = groups.size();
  std::vector<GemmProblem> up(num_groups), down(num_groups);
  std::vector<float*> acts(num_groups);
  bool same_ffn = true;
  float* cursor = act;
  for (size_t i = 0; i < num_groups; ++i) {
    const FfnGroup& g = groups[i];
    const int two_f = 2 * g.ffn;
    acts[i] = cursor;
    cursor += ActSliceFloats(g);
    up[i] = {g.x, g.gate_up, acts[i], g.rows, two_f, hidden, hidden, two_f, two_f};
    down[i] = {acts[i], g.down, g.y, g.rows, hidden, g.ffn, two_f, hidden, hidden};
    // One SwiGLU launch needs the slices back to back (no rounding gaps).
    same_ffn = same_ffn && g.ffn == groups[0].ffn &&
               ActSliceFloats(g) == static_cast<size_t>(g.rows) * two_f;
  }
  MOE_RETURN_IF_ERROR(RowMajorGroupedGemm(handle, stream, compute, up, device_ptrs, pinned_ptrs));
  if (same_ffn) {
    int total_rows = 0;
    for (const FfnGroup& g : groups)
      total_rows += g.rows;
    MOE_RETURN_IF_ERROR(LaunchSwiGlu(act, total_rows, groups[0].ffn, stream));
  } else {
    for (size_t i = 0; i < num_groups; ++i)
      MOE_RETURN_IF_ERROR(LaunchSwiGlu(acts[i], groups[i].rows, groups[i].ffn, stream));
  }
  // Separate pointer slices: the first copy may not have run yet.
  return RowMajorGroupedGemm(handle, stream, compute, down, device_ptrs + 3 * num_groups,
                             pinned_ptrs + 3 * num_groups);
}

}  // namespace moe::engine::cuda
