// Device routing on the CUDA backend: the parts of Route() (router.cc) that
// run without a host round trip. Two launchers, enqueued back to back:
//
//   LaunchRouteSelect: per token, selection = scores + bias + counter-based
//     noise, group-limited routing, top-K by selection (ties to the lower id),
//     gate weights from the unbiased, noise-free scores, and the token's
//     router entropy and gate mass;
//   LaunchCapacityAndPermute: per-expert capacity with the drop policy, the
//     even split over replicas, the counting sort of served token-slots by
//     physical slot (compact or capacity layout, router.h), and the step's
//     counters in one small array.
//
// Not covered (kUnsupported when asked): two-stage shortlist / availability
// mixing, dynamic K (top_p), the reroute and replica overflow policies.

#ifndef MOE_ENGINE_SRC_CUDA_ROUTING_CUH_
#define MOE_ENGINE_SRC_CUDA_ROUTING_CUH_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "moe/common/status.h"

namespace moe::engine::cuda {

struct RouteSelectArgs {
  const float* scores = nullptr;       // [num_tokens, num_experts] after scoring
  const float* expert_bias = nullptr;  // [num_experts], or null for none
  int num_tokens = 0;
  int num_experts = 0;
  int top_k = 0;         // slots per token, <= num_experts
  int num_groups = 1;    // group-limited routing when > 1 (divides num_experts)
  int topk_groups = 1;   // groups a token may use, <= num_groups
  double noise_std = 0;  // Gaussian selection noise; 0 = off
  uint64_t seed = 0;     // CounterNormal(seed, token, expert)
  bool normalize_gates = false;
  double routed_scaling = 1.0;
  int shortlist = 0;          // not covered: must be 0
  double top_p = 0;           // not covered: must be 0
  int32_t* chosen = nullptr;  // [num_tokens, top_k] expert ids in rank order, -1 unused
  float* weight = nullptr;    // [num_tokens, top_k] gate weights, 0 unused
  // [num_tokens] per token, as Route() defines them: the entropy (nats) of
  // scores / their sum, and the chosen experts' share of that sum. Both null:
  // not computed. LaunchCapacityAndPermute sums the ones TokenStatsOf() names.
  double* token_entropy = nullptr;
  double* token_gate_mass = nullptr;
};

// One warp per token; the token's selection scores live in shared memory.
// kInvalidArgument when a row does not fit in shared memory (E > ~2800).
Status LaunchRouteSelect(const RouteSelectArgs& args, cudaStream_t stream);

struct CapacityPermuteArgs {
  const int32_t* chosen = nullptr;   // [num_tokens, top_k] from LaunchRouteSelect
  float* weight = nullptr;           // [num_tokens, top_k] in/out: dropped slots get 0
  const int32_t* phy2log = nullptr;  // [num_slots] logical expert of each physical slot
  int num_tokens = 0;
  int num_experts = 0;
  int num_slots = 0;  // physical slots (replicas), a multiple of num_devices
  int num_devices = 1;
  int top_k = 0;
  uint32_t capacity = 0;       // per logical expert (or per slot), 0 = unlimited
  bool slot_capacity = false;  // capacity is each slot's (CapacityScope::kSlot)
  bool overflow_drop = true;   // false (reroute / replica) is not covered
  // false: compact rows (the first kNumRows written); true: the capacity
  // layout of CapacityLayoutOffsets() (router.h), padding rows get -1 and 0;
  // needs capacity > 0.
  bool capacity_layout = false;
  int32_t* slot = nullptr;       // [num_tokens, top_k] physical slot, -1 unused/dropped
  int32_t* rows = nullptr;       // token of each permutation row (see capacity_layout)
  float* row_weights = nullptr;  // gate weight of each row
  uint32_t* counters = nullptr;  // DeviceRoutingCounters() layout (router.h)
};

// Bytes of device scratch LaunchCapacityAndPermute needs.
Result<size_t> RoutingScratchBytes(int num_tokens, int top_k, int num_experts, int num_slots);

// The per-token entropy and gate-mass arrays ([num_tokens] doubles each) at
// the head of a routing scratch block: LaunchRouteSelect writes them and
// LaunchCapacityAndPermute, given the same block, sums them into the counters.
struct RoutingTokenStats {
  double* entropy = nullptr;
  double* gate_mass = nullptr;
};
RoutingTokenStats TokenStatsOf(void* scratch, int num_tokens);

// Capacity, replica split and permutation, deterministic: a stable radix sort
// of token-slots by expert gives each slot its arrival rank m at its expert
// (token order, then rank order, as the CPU claims capacity); m < capacity is
// kept and served by replica m % r at row m / r of that replica, which is
// exactly the CPU's round-robin claim sequence. The entropy and gate-mass sums
// are reduced in a fixed order; the only atomics are integer increments of
// the transfer-row matrix, whose totals do not depend on their order.
Status LaunchCapacityAndPermute(const CapacityPermuteArgs& args, void* scratch,
                                size_t scratch_bytes, cudaStream_t stream);

}  // namespace moe::engine::cuda

#endif  // MOE_ENGINE_SRC_CUDA_ROUTING_CUH_
