#include <algorithm>
#include <string>

#include "common.cuh"
#include "memory.cuh"

namespace moe::engine::cuda {

DevicePool::~DevicePool() {
  static_cast<void>(FreeCached());  // nothing to report to at destruction
}

Status DevicePool::FreeCached() {
  cudaError_t first = cudaSuccess;
  for (const auto& [bytes, block] : free_) {
    const cudaError_t err = cudaFree(block);
    ++counters_.device_frees;
    if (first == cudaSuccess) first = err;
  }
  free_.clear();
  MOE_CUDA_CHECK(first);  // the first failure, after freeing what could be freed
  return Status::Ok();
}

Result<void*> DevicePool::Acquire(size_t num_bytes, size_t* block_bytes) {
  const size_t want = AlignUp(std::max<size_t>(num_bytes, 1));
  const auto it = free_.lower_bound(want);
  if (it != free_.end() && it->first <= 2 * want) {
    void* block = it->second;
    *block_bytes = it->first;
    free_.erase(it);
    ++counters_.pool_hits;
    return block;
  }
  MOE_CUDA_CHECK(cudaSetDevice(device_));
  void* block = nullptr;
  cudaError_t err = cudaMalloc(&block, want);
  ++counters_.device_mallocs;
  if (err == cudaErrorMemoryAllocation && !free_.empty()) {
    cudaGetLastError();  // not sticky, but keep the next check clean
    MOE_RETURN_IF_ERROR(FreeCached());
    err = cudaMalloc(&block, want);
    ++counters_.device_mallocs;
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return Status::Unavailable("cuda backend: out of device memory allocating " +
                               std::to_string(num_bytes) + " bytes");
  }
  MOE_CUDA_CHECK(err);
  *block_bytes = want;
  return block;
}

void DevicePool::Release(void* block, size_t block_bytes) {
  if (block != nullptr) free_.emplace(block_bytes, block);
}

DeviceScratch::~DeviceScratch() {
  if (pool_ != nullptr) pool_->Release(data_, size_);
}

Status DeviceScratch::Reserve(size_t num_bytes) {
  if (num_bytes <= size_) return Status::Ok();
  size_t block_bytes = 0;
  MOE_ASSIGN_OR_RETURN(void* block, pool_->Acquire(num_bytes + num_bytes / 2, &block_bytes));
  pool_->Release(data_, size_);
  data_ = block;
  size_ = block_bytes;
  return Status::Ok();
}

PinnedStaging::~PinnedStaging() {
  if (last_copy_ != nullptr) {
    cudaEventSynchronize(last_copy_);
    cudaEventDestroy(last_copy_);
  }
  for (char* block : retired_)
    cudaFreeHost(block);
  cudaFreeHost(data_);
}

Result<void*> PinnedStaging::Take(size_t num_bytes) {
  const size_t piece = (std::max<size_t>(num_bytes, 1) + 15) / 16 * 16;
  if (piece > kMaxBytes) {
    return Status::InvalidArgument("pinned staging: piece of " + std::to_string(num_bytes) +
                                   " bytes, the most is " + std::to_string(kMaxBytes));
  }
  if (used_ + piece > size_) {
    if (size_ < kMaxBytes) {
      // Room for everything staged since the stream last drained, twice over,
      // so the next step's copies fit without growing again.
      const size_t grown = std::min(kMaxBytes, std::max(kInitialBytes, 2 * (used_ + piece)));
      void* block = nullptr;
      const cudaError_t err = cudaMallocHost(&block, grown);
      ++counters_->pinned_mallocs;
      if (err == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return Status::Unavailable("cuda backend: out of pinned host memory staging " +
                                   std::to_string(num_bytes) + " bytes");
      }
      MOE_CUDA_CHECK(err);
      if (data_ != nullptr) retired_.push_back(data_);
      data_ = static_cast<char*>(block);
      size_ = grown;
    } else if (copy_pending_) {
      MOE_CUDA_CHECK(cudaEventSynchronize(last_copy_));
      ++counters_->staging_waits;
    }
    used_ = 0;
  }
  void* out = data_ + used_;
  used_ += piece;
  counters_->staged_bytes += num_bytes;
  return out;
}

Status PinnedStaging::Enqueued(cudaStream_t stream) {
  if (last_copy_ == nullptr) {
    MOE_CUDA_CHECK(cudaEventCreateWithFlags(&last_copy_, cudaEventDisableTiming));
  }
  MOE_CUDA_CHECK(cudaEventRecord(last_copy_, stream));
  copy_pending_ = true;
  return Status::Ok();
}

}  // namespace moe::engine::cuda
