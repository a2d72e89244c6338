// Allocator settings for the control loop's process (moectld, and benchmarks
// that run the controller in-process).
//
// The controller builds and frees a snapshot of every engine on each cycle
// (per-expert vectors of every layer: ~0.5 MB at 61 layers x 256 experts),
// and its planner and store threads churn buffers of the same size. With
// glibc's defaults, each free of such a block at the top of a heap hands the
// pages back to the kernel (madvise or brk), and the next cycle faults them
// in again: on a 2-core machine that was ~10,000 madvise calls a minute and
// the tail of a placement cycle (bench/controller_bench: the cycles that send
// a command). KeepFreedMemory raises the trim threshold, so freed memory up
// to that size stays with the process for the next cycle, and fixes the mmap
// threshold, so blocks below it never go through mmap and munmap.
//
// The cost is memory: each malloc arena (one per thread that allocates, at
// most a few here) may keep up to `trim_threshold_bytes` it has freed.
//
// Thread safety: call once at start-up, before other threads allocate.

#ifndef MOE_COMMON_ALLOCATOR_H_
#define MOE_COMMON_ALLOCATOR_H_

#include <cstddef>

#include "moe/common/status.h"

namespace moe {

struct AllocatorSettings {
  size_t trim_threshold_bytes = size_t{32} << 20;
  size_t mmap_threshold_bytes = size_t{16} << 20;
};

// Applies `settings` (glibc's mallopt) and returns true. Returns false and
// changes nothing when the environment sets GLIBC_TUNABLES for malloc: an
// operator's tunables win. An error when glibc refuses a value.
Result<bool> KeepFreedMemory(const AllocatorSettings& settings = {});

}  // namespace moe

#endif  // MOE_COMMON_ALLOCATOR_H_
