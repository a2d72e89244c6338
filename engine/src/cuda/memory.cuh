// Memory of the CUDA backend that must not cost a device-wide wait inside a
// step: a caching pool of device blocks (cudaFree synchronizes the whole
// device, so a freed block goes back to the pool, not to the driver) and a
// pinned staging area for host-to-device copies (a copy from pageable memory
// is synchronous and cannot overlap anything).
//
// Both serve one backend, whose work runs on one stream: a block or a piece
// of staging handed out again is only touched by work enqueued after the work
// that used it before, so reuse needs no wait. Not thread-safe (a Backend
// belongs to one thread at a time).

#ifndef MOE_ENGINE_SRC_CUDA_MEMORY_CUH_
#define MOE_ENGINE_SRC_CUDA_MEMORY_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "moe/common/status.h"

namespace moe::engine::cuda {

// Counts of what the pool and the staging area did (see CudaBackendCounters).
struct MemoryCounters {
  uint64_t device_mallocs = 0;  // cudaMalloc calls
  uint64_t device_frees = 0;    // cudaFree calls (only to make room, or at the end)
  uint64_t pool_hits = 0;       // Allocate() served from the pool
  uint64_t pinned_mallocs = 0;  // cudaMallocHost calls of the staging area
  uint64_t staged_bytes = 0;    // bytes copied host-to-device through staging
  uint64_t staging_waits = 0;   // waits for staged copies (the area was full)
};

// Device blocks, grow-only: Release() keeps a block for the next Acquire() of
// a size it fits (at most twice the request, so big blocks are not tied up
// by small requests). cudaFree runs only when cudaMalloc is out of memory
// (then every cached block is freed, which waits for the device, and the
// allocation retried) and when the pool is destroyed.
class DevicePool {
 public:
  explicit DevicePool(int device) : device_(device) {}
  ~DevicePool();
  DevicePool(const DevicePool&) = delete;
  DevicePool& operator=(const DevicePool&) = delete;

  // A block of at least `num_bytes` (>= 1). kUnavailable when the device is
  // out of memory even after the cached blocks were freed.
  Result<void*> Acquire(size_t num_bytes, size_t* block_bytes);
  // Gives back a block from Acquire() of `block_bytes`.
  void Release(void* block, size_t block_bytes);

  const MemoryCounters& counters() const { return counters_; }
  MemoryCounters* mutable_counters() { return &counters_; }

 private:
  Status FreeCached();

  int device_;
  std::multimap<size_t, void*> free_;  // block size -> block
  MemoryCounters counters_;
};

// Grow-only device scratch on the pool, used by one op at a time in stream
// order. Growing releases the old block to the pool: work already enqueued
// may still read it, and it is only reused by work enqueued later.
class DeviceScratch {
 public:
  DeviceScratch() = default;
  ~DeviceScratch();
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  void set_pool(std::shared_ptr<DevicePool> pool) { pool_ = std::move(pool); }
  // Makes room for `num_bytes` (kept, rounded up by half, for later growth).
  Status Reserve(size_t num_bytes);
  void* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  std::shared_ptr<DevicePool> pool_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

// Pinned host memory that host-to-device copies are staged through. Take()
// hands out pieces in order; after the copies reading them are enqueued the
// caller calls Enqueued(stream), and once the stream has drained (the
// backend's Synchronize() and Download()) Drained() makes the whole area free
// again. When a piece does not fit, the area grows (a new, larger pinned
// block; the old one stays alive until destruction, since copies may still
// read it) up to kMaxBytes; past that it waits for the staged copies.
class PinnedStaging {
 public:
  static constexpr size_t kInitialBytes = size_t{1} << 20;
  static constexpr size_t kMaxBytes = size_t{64} << 20;

  explicit PinnedStaging(MemoryCounters* counters) : counters_(counters) {}
  ~PinnedStaging();
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;

  // A piece of `num_bytes` <= kMaxBytes, 16-byte aligned.
  Result<void*> Take(size_t num_bytes);
  // Records that copies reading the pieces taken so far are enqueued on `stream`.
  Status Enqueued(cudaStream_t stream);
  // The stream has run everything enqueued: every piece is free.
  void Drained() { used_ = 0; }

 private:
  MemoryCounters* counters_;
  char* data_ = nullptr;
  size_t size_ = 0;
  size_t used_ = 0;
  cudaEvent_t last_copy_ = nullptr;  // after the last staged copy
  bool copy_pending_ = false;
  std::vector<char*> retired_;  // outgrown blocks, freed at destruction
};

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_MEMORY_CUH_
