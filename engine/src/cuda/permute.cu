#include <cub/device/device_radix_sort.cuh>

#include <string>

#include "common.cuh"
#include "permute.cuh"

namespace moe::engine::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    GatherKernel(const T* x, const int32_t* rows, int num_rows, int row_items, T* out) {
  const size_t n = static_cast<size_t>(num_rows) * row_items;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t r = i / row_items;
    const size_t c = i - r * row_items;
    const int32_t row = rows[r];
    out[i] = row < 0 ? T{} : x[static_cast<size_t>(row) * row_items + c];
  }
}

__global__ void __launch_bounds__(kThreads) IotaKernel(int n, int32_t* values) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
    values[i] = i;
}

// Block p handles sorted position p when it starts a run of equal rows;
// padding rows (-1, sorted first) are skipped.
__global__ void __launch_bounds__(kThreads)
    OwnerAddKernel(const float* y, const float* weights, const int32_t* sorted_rows,
                   const int32_t* sorted_idx, int num_rows, int hidden, float* out) {
  const int p = blockIdx.x;
  const int32_t row = sorted_rows[p];
  if (row < 0 || (p > 0 && sorted_rows[p - 1] == row)) return;
  int end = p + 1;
  while (end < num_rows && sorted_rows[end] == row)
    ++end;
  float* dst = out + static_cast<size_t>(row) * hidden;
  for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
    float acc = dst[h];
    for (int q = p; q < end; ++q) {
      const int32_t i = sorted_idx[q];
      acc = __fadd_rn(acc, __fmul_rn(weights[i], y[static_cast<size_t>(i) * hidden + h]));
    }
    dst[h] = acc;
  }
}

}  // namespace

Status LaunchGather(const float* x, const int32_t* rows, int num_rows, int hidden, float* out,
                    cudaStream_t stream) {
  if (num_rows <= 0 || hidden <= 0) return Status::Ok();
  const bool vec4 = hidden % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(out) % 16 == 0;
  if (vec4) {
    const int row_items = hidden / 4;
    const size_t n = static_cast<size_t>(num_rows) * row_items;
    GatherKernel<<<NumBlocks(n, kThreads), kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(x), rows, num_rows, row_items,
        reinterpret_cast<float4*>(out));
  } else {
    const size_t n = static_cast<size_t>(num_rows) * hidden;
    GatherKernel<<<NumBlocks(n, kThreads), kThreads, 0, stream>>>(x, rows, num_rows, hidden, out);
  }
  MOE_CUDA_CHECK_LAUNCH();
  return Status::Ok();
}

Result<size_t> ScatterScratchBytes(int num_rows) {
  if (num_rows <= 0) return size_t{0};
  size_t sort_bytes = 0;
  MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, sort_bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), num_rows));
  return 3 * AlignUp(sizeof(int32_t) * static_cast<size_t>(num_rows)) + AlignUp(sort_bytes);
}

Status LaunchScatterAddWeighted(const float* y, const int32_t* rows, const float* weights,
                                int num_rows, int hidden, float* out, void* scratch,
                                size_t scratch_bytes, cudaStream_t stream) {
  if (num_rows <= 0 || hidden <= 0) return Status::Ok();
  MOE_ASSIGN_OR_RETURN(const size_t needed, ScatterScratchBytes(num_rows));
  if (scratch_bytes < needed) {
    return Status::Internal("ScatterAddWeighted: scratch of " + std::to_string(scratch_bytes) +
                            " bytes, need " + std::to_string(needed));
  }
  const size_t idx_bytes = AlignUp(sizeof(int32_t) * static_cast<size_t>(num_rows));
  char* base = static_cast<char*>(scratch);
  int32_t* sorted_rows = reinterpret_cast<int32_t*>(base);
  int32_t* idx_in = reinterpret_cast<int32_t*>(base + idx_bytes);
  int32_t* sorted_idx = reinterpret_cast<int32_t*>(base + 2 * idx_bytes);
  void* sort_temp = base + 3 * idx_bytes;
  size_t sort_bytes = scratch_bytes - 3 * idx_bytes;

  IotaKernel<<<NumBlocks(num_rows, kThreads), kThreads, 0, stream>>>(num_rows, idx_in);
  MOE_CUDA_CHECK_LAUNCH();
  // CUB orders signed keys by value (padding rows of -1 first); LSD radix sort
  // is stable, keeping equal rows in increasing i.
  MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(sort_temp, sort_bytes, rows, sorted_rows, idx_in,
                                                 sorted_idx, num_rows, 0, 32, stream));
  const int threads = hidden >= kThreads ? kThreads : ((hidden + 31) / 32) * 32;
  OwnerAddKernel<<<num_rows, threads, 0, stream>>>(y, weights, sorted_rows, sorted_idx, num_rows,
                                                   hidden, out);
  MOE_CUDA_CHECK_LAUNCH();
  return Status::Ok();
}

}  // namespace moe::engine::cuda
