#include <cub/device/device_radix_sort.cuh>

#include <climits>
#include <cmath>

#include "../counter_rng.h"
#include "common.cuh"
#include "moe/engine/router.h"
#include "routing.cuh"
#include "warp_rank.cuh"

namespace moe::engine::cuda {
namespace {

constexpr int kSelectThreads = 128;
constexpr int kSelectWarps = kSelectThreads / kWarpSize;
constexpr size_t kMaxSelectSmem = 48 * 1024;
constexpr int kCountThreads = 1024;
constexpr int kThreads = 256;

// Sum over the warp, the same in every lane: each butterfly step adds the
// same two values in both lanes of a pair, and addition commutes.
__device__ __forceinline__ double WarpSum(double v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2)
    v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Floats of shared memory one warp of the select kernel uses.
__host__ __device__ size_t SelectWarpFloats(int num_experts, int num_groups) {
  return static_cast<size_t>(num_experts) + 2 * static_cast<size_t>(num_groups);
}

__global__ void __launch_bounds__(kSelectThreads) RouteSelectKernel(RouteSelectArgs args) {
  extern __shared__ float smem[];
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int token = blockIdx.x * kSelectWarps + warp;
  if (token >= args.num_tokens) return;
  const int num_experts = args.num_experts;
  const int num_groups = args.num_groups;
  float* sel = smem + warp * SelectWarpFloats(num_experts, num_groups);
  float* group_score = sel + num_experts;
  float* group_allowed = group_score + num_groups;
  const float* s = args.scores + static_cast<size_t>(token) * num_experts;

  // 1. Selection scores, in the CPU's float/double arithmetic.
  for (int e = lane; e < num_experts; e += kWarpSize) {
    float v = s[e];
    if (args.expert_bias != nullptr) v += args.expert_bias[e];
    if (args.noise_std > 0) {
      v +=
          static_cast<float>(args.noise_std * CounterNormal(args.seed, static_cast<uint64_t>(token),
                                                            static_cast<uint64_t>(e)));
    }
    sel[e] = v;
  }
  __syncwarp();

  // 2. Group-limited routing: group score = sum of its two best selections;
  // the topk_groups best groups (ties to the lower group id) stay allowed.
  const bool grouped = num_groups > 1;
  const int group_size = grouped ? num_experts / num_groups : num_experts;
  if (grouped) {
    for (int g = lane; g < num_groups; g += kWarpSize) {
      float best = -INFINITY;
      float second = -INFINITY;
      for (int e = g * group_size; e < (g + 1) * group_size; ++e) {
        if (sel[e] > best) {
          second = best;
          best = sel[e];
        } else if (sel[e] > second) {
          second = sel[e];
        }
      }
      group_score[g] = group_size >= 2 ? best + second : best;
    }
    __syncwarp();
    for (int g = lane; g < num_groups; g += kWarpSize) {
      int rank = 0;
      for (int h = 0; h < num_groups; ++h)
        rank += RanksBefore(group_score[h], h, group_score[g], g) ? 1 : 0;
      group_allowed[g] = rank < args.topk_groups ? 1.0f : 0.0f;
    }
    __syncwarp();
  }

  // 3. Top-K over allowed experts: round r picks the best element ranking
  // after round r-1's pick, so no per-token state is needed.
  int32_t* chosen = args.chosen + static_cast<size_t>(token) * args.top_k;
  float* weight = args.weight + static_cast<size_t>(token) * args.top_k;
  float prev_v = INFINITY;
  int prev_e = -1;
  for (int r = 0; r < args.top_k; ++r) {
    float best_v = -INFINITY;
    int best_e = INT_MAX;
    for (int e = lane; e < num_experts; e += kWarpSize) {
      if (grouped && (e / group_size >= num_groups || group_allowed[e / group_size] == 0.0f)) {
        continue;
      }
      const float v = sel[e];
      if (RanksBefore(prev_v, prev_e, v, e) && RanksBefore(v, e, best_v, best_e)) {
        best_v = v;
        best_e = e;
      }
    }
    WarpBest(&best_v, &best_e);
    if (lane == 0) chosen[r] = best_e == INT_MAX ? -1 : best_e;
    prev_v = best_v;
    prev_e = best_e;
  }

  // Router entropy of p = s / sum(s) (sum 1 when not positive), as Route().
  const bool stats = args.token_entropy != nullptr && args.token_gate_mass != nullptr;
  double total = 1;
  if (stats) {
    double part = 0;
    for (int e = lane; e < num_experts; e += kWarpSize)
      part += s[e];
    total = WarpSum(part);
    if (!(total > 0)) total = 1;
    double entropy = 0;
    for (int e = lane; e < num_experts; e += kWarpSize) {
      const double p = s[e] / total;
      if (p > 0) entropy -= p * log(p);
    }
    entropy = WarpSum(entropy);
    if (lane == 0) args.token_entropy[token] = entropy;
  }

  // Gate mass (the chosen experts' share of the scores) and 5. gate weights
  // from the plain scores, both summed in rank order in double.
  if (lane != 0) return;
  if (stats) {
    double mass = 0;
    for (int j = 0; j < args.top_k && chosen[j] >= 0; ++j)
      mass += s[chosen[j]] / total;
    args.token_gate_mass[token] = mass;
  }
  double denom = 1.0;
  if (args.normalize_gates) {
    denom = 0;
    for (int j = 0; j < args.top_k && chosen[j] >= 0; ++j)
      denom += s[chosen[j]];
    if (!(denom > 0)) denom = 1.0;
  }
  const double scale = args.routed_scaling / denom;
  for (int j = 0; j < args.top_k; ++j)
    weight[j] = chosen[j] >= 0 ? static_cast<float>(s[chosen[j]] * scale) : 0.0f;
}

// Scratch pieces of LaunchCapacityAndPermute, carved in this order.
struct Scratch {
  double* token_entropy;    // [num_tokens] from RouteSelectKernel
  double* token_gate_mass;  // [num_tokens]
  int32_t* keys_in;
  int32_t* keys_out;
  int32_t* idx_in;
  int32_t* idx_out;
  int32_t* expert_start;  // [E] first sorted position of the expert's run
  int32_t* expert_end;    // [E] one past its last
  int32_t* kept;          // [E] served slots
  int32_t* rep_count;     // [E] replicas of the expert
  int32_t* rep_offsets;   // [E] first entry of its replicas in log2phy
  int32_t* log2phy;       // [num_slots] replicas grouped by expert, slot order
  int32_t* slot_offsets;  // [num_slots + 1] first compact row of each slot
  int32_t* room_offsets;  // [num_slots + 1] first capacity-layout row of each slot
  void* sort_temp;
  size_t sort_temp_bytes;
};

size_t IntBytes(size_t n) {
  return AlignUp(n * sizeof(int32_t));
}

size_t DoubleBytes(size_t n) {
  return AlignUp(n * sizeof(double));
}

int KeyBits(int num_experts) {
  int bits = 1;
  while ((1 << bits) <= num_experts)
    ++bits;
  return bits;
}

Result<size_t> SortTempBytes(int num_items, int num_experts) {
  size_t bytes = 0;
  MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, bytes, static_cast<int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<int32_t*>(nullptr), static_cast<int32_t*>(nullptr), num_items, 0,
      KeyBits(num_experts)));
  return bytes;
}

Scratch Carve(void* base, int num_tokens, int num_items, int num_experts, int num_slots,
              size_t sort_temp_bytes) {
  char* p = static_cast<char*>(base);
  auto take = [&p](size_t n) {
    int32_t* out = reinterpret_cast<int32_t*>(p);
    p += IntBytes(n);
    return out;
  };
  auto take_doubles = [&p](size_t n) {
    double* out = reinterpret_cast<double*>(p);
    p += DoubleBytes(n);
    return out;
  };
  Scratch s;
  s.token_entropy = take_doubles(num_tokens);
  s.token_gate_mass = take_doubles(num_tokens);
  s.keys_in = take(num_items);
  s.keys_out = take(num_items);
  s.idx_in = take(num_items);
  s.idx_out = take(num_items);
  s.expert_start = take(num_experts);
  s.expert_end = take(num_experts);
  s.kept = take(num_experts);
  s.rep_count = take(num_experts);
  s.rep_offsets = take(num_experts);
  s.log2phy = take(num_slots);
  s.slot_offsets = take(num_slots + 1);
  s.room_offsets = take(num_slots + 1);
  s.sort_temp = p;
  s.sort_temp_bytes = sort_temp_bytes;
  return s;
}

size_t FixedScratchBytes(int num_tokens, int num_items, int num_experts, int num_slots) {
  return 2 * DoubleBytes(num_tokens) + 4 * IntBytes(num_items) + 5 * IntBytes(num_experts) +
         IntBytes(num_slots) + 2 * IntBytes(num_slots + 1);
}

__global__ void __launch_bounds__(kThreads)
    KeysKernel(const int32_t* chosen, int n, int num_experts, int32_t* keys, int32_t* idx) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    keys[i] = chosen[i] >= 0 ? chosen[i] : num_experts;  // unused slots sort last
    idx[i] = i;
  }
}

__global__ void __launch_bounds__(kThreads)
    RunBoundsKernel(const int32_t* sorted_keys, int n, int num_experts, int32_t* expert_start,
                    int32_t* expert_end) {
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += gridDim.x * blockDim.x) {
    const int32_t k = sorted_keys[p];
    if (k >= num_experts) continue;
    if (p == 0 || sorted_keys[p - 1] != k) expert_start[k] = p;
    if (p == n - 1 || sorted_keys[p + 1] != k) expert_end[k] = p + 1;
  }
}

struct CounterOffsets {
  int expert_tokens, expert_demand, slot_tokens, device_tokens, k_histogram, transfer_rows;
};

// One block of kCountThreads (1024, hence the launch bounds: without them the
// compiler may use more registers than 1024 threads of one block can have, and
// the launch fails): replica tables, kept counts, slot offsets (both
// layouts) and every counter but the transfer rows.
__global__ void __launch_bounds__(kCountThreads)
    CountKernel(CapacityPermuteArgs args, Scratch s, CounterOffsets off) {
  __shared__ double entropy_part[kCountThreads];
  __shared__ double mass_part[kCountThreads];
  const int num_experts = args.num_experts;
  const int num_slots = args.num_slots;
  uint32_t* c = args.counters;
  for (int e = threadIdx.x; e < num_experts; e += blockDim.x) {
    int count = 0;
    int before = 0;
    for (int q = 0; q < num_slots; ++q) {
      count += args.phy2log[q] == e ? 1 : 0;
      before += args.phy2log[q] < e ? 1 : 0;
    }
    const int demand = s.expert_end[e] - s.expert_start[e];
    const int room = static_cast<int>(args.capacity) * (args.slot_capacity ? count : 1);
    int kept = args.capacity == 0 ? demand : min(demand, room);
    if (count == 0) kept = 0;  // no replica: nothing can serve it (ValidateKnobs forbids)
    s.rep_count[e] = count;
    s.rep_offsets[e] = before;
    s.kept[e] = kept;
    c[off.expert_tokens + e] = kept;
    c[off.expert_demand + e] = demand;
  }
  __syncthreads();
  for (int q = threadIdx.x; q < num_slots; q += blockDim.x) {
    const int e = args.phy2log[q];
    int index = 0;  // replica index of slot q among its expert's replicas
    for (int p = 0; p < q; ++p)
      index += args.phy2log[p] == e ? 1 : 0;
    s.log2phy[s.rep_offsets[e] + index] = q;
    const int r = s.rep_count[e];
    const int kept = s.kept[e];
    const int tokens = kept / r + (index < kept % r ? 1 : 0);
    s.slot_offsets[q + 1] = tokens;
    c[off.slot_tokens + q] = tokens;
    if (args.capacity_layout) {  // room of the replica, as CapacityLayoutOffsets()
      const int room = min(static_cast<int>(args.capacity), args.num_tokens);
      s.room_offsets[q + 1] = args.slot_capacity ? room : room / r + (index < room % r ? 1 : 0);
    }
  }
  for (int h = threadIdx.x; h <= args.top_k; h += blockDim.x) {
    uint32_t tokens = 0;
    for (int t = 0; t < args.num_tokens; ++t) {
      int k = 0;
      for (int j = 0; j < args.top_k; ++j)
        k += args.chosen[static_cast<size_t>(t) * args.top_k + j] >= 0 ? 1 : 0;
      tokens += k == h ? 1 : 0;
    }
    c[off.k_histogram + h] = tokens;
  }
  // Entropy and gate-mass sums in a fixed order: strided partial sums per
  // thread, then a tree over the block.
  double entropy = 0;
  double mass = 0;
  for (int t = threadIdx.x; t < args.num_tokens; t += kCountThreads) {
    entropy += s.token_entropy[t];
    mass += s.token_gate_mass[t];
  }
  entropy_part[threadIdx.x] = entropy;
  mass_part[threadIdx.x] = mass;
  __syncthreads();
  for (int stride = kCountThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      entropy_part[threadIdx.x] += entropy_part[threadIdx.x + stride];
      mass_part[threadIdx.x] += mass_part[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  s.slot_offsets[0] = 0;
  for (int q = 0; q < num_slots; ++q)
    s.slot_offsets[q + 1] += s.slot_offsets[q];
  if (args.capacity_layout) {
    s.room_offsets[0] = 0;
    for (int q = 0; q < num_slots; ++q)
      s.room_offsets[q + 1] += s.room_offsets[q];
  }
  const int slots_per_device = num_slots / args.num_devices;
  for (int d = 0; d < args.num_devices; ++d) {
    c[off.device_tokens + d] =
        s.slot_offsets[(d + 1) * slots_per_device] - s.slot_offsets[d * slots_per_device];
  }
  uint32_t token_slots = 0;
  for (int h = 0; h <= args.top_k; ++h)
    token_slots += h * c[off.k_histogram + h];
  uint32_t dropped = 0;
  for (int e = 0; e < num_experts; ++e)
    dropped += static_cast<uint32_t>(s.expert_end[e] - s.expert_start[e] - s.kept[e]);
  using L = DeviceRoutingCounterLayout;
  c[L::kNumTokenSlots] = token_slots;
  c[L::kOverflowed] = dropped;
  c[L::kRerouted] = 0;
  c[L::kDropped] = dropped;
  c[L::kCapacity] = args.capacity;
  c[L::kNumRows] = s.slot_offsets[num_slots];
  c[L::kEntropySum] = __float_as_uint(static_cast<float>(entropy_part[0]));
  c[L::kGateMassSum] = __float_as_uint(static_cast<float>(mass_part[0]));
}

// Capacity layout: rows of slot blockIdx.x past its served ones are padding.
__global__ void __launch_bounds__(kThreads) PadKernel(CapacityPermuteArgs args, Scratch s) {
  const int q = blockIdx.x;
  const int served = s.slot_offsets[q + 1] - s.slot_offsets[q];
  const int end = s.room_offsets[q + 1];
  for (int row = s.room_offsets[q] + served + threadIdx.x; row < end; row += blockDim.x) {
    args.rows[row] = -1;
    args.row_weights[row] = 0.0f;
  }
}

__global__ void __launch_bounds__(kThreads) PlaceKernel(CapacityPermuteArgs args, Scratch s) {
  const int n = args.num_tokens * args.top_k;
  for (int p = blockIdx.x * blockDim.x + threadIdx.x; p < n; p += gridDim.x * blockDim.x) {
    const int32_t e = s.keys_out[p];
    const int32_t i = s.idx_out[p];
    if (e >= args.num_experts) {  // unused slot
      args.slot[i] = -1;
      continue;
    }
    const int m = p - s.expert_start[e];  // arrival rank at expert e
    if (m >= s.kept[e]) {                 // over capacity: dropped
      args.slot[i] = -1;
      args.weight[i] = 0.0f;
      continue;
    }
    const int r = s.rep_count[e];
    const int32_t q = s.log2phy[s.rep_offsets[e] + m % r];
    const int row = (args.capacity_layout ? s.room_offsets[q] : s.slot_offsets[q]) + m / r;
    args.slot[i] = q;
    args.rows[row] = i / args.top_k;
    args.row_weights[row] = args.weight[i];
  }
}

// Per token: each device other than the token's own that serves one of its
// slots receives the token once. Runs after PlaceKernel (reads `slot`).
__global__ void __launch_bounds__(kThreads)
    TransferKernel(CapacityPermuteArgs args, int transfer_rows) {
  const int num_devices = args.num_devices;
  const int slots_per_device = args.num_slots / num_devices;
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < args.num_tokens;
       t += gridDim.x * blockDim.x) {
    const int src = t % num_devices;
    const int32_t* slot = args.slot + static_cast<size_t>(t) * args.top_k;
    for (int j = 0; j < args.top_k; ++j) {
      if (slot[j] < 0) continue;
      const int dst = slot[j] / slots_per_device;
      if (dst == src) continue;
      bool seen = false;
      for (int i = 0; i < j && !seen; ++i)
        seen = slot[i] >= 0 && slot[i] / slots_per_device == dst;
      if (!seen) atomicAdd(args.counters + transfer_rows + src * num_devices + dst, 1u);
    }
  }
}

}  // namespace

RoutingTokenStats TokenStatsOf(void* scratch, int num_tokens) {
  const Scratch s = Carve(scratch, num_tokens, 0, 0, 0, 0);
  return {s.token_entropy, s.token_gate_mass};
}

Status LaunchRouteSelect(const RouteSelectArgs& args, cudaStream_t stream) {
  if (args.shortlist > 0) return Status::Unsupported("device routing: shortlist (two-stage)");
  if (args.top_p > 0) return Status::Unsupported("device routing: top_p (dynamic K)");
  if (args.num_tokens <= 0 || args.top_k <= 0) return Status::Ok();
  if (args.top_k > args.num_experts || args.num_groups < 1 ||
      (args.num_groups > 1 && (args.num_experts % args.num_groups != 0 || args.topk_groups < 1 ||
                               args.topk_groups > args.num_groups))) {
    return Status::InvalidArgument("device routing: bad top_k or groups");
  }
  const size_t smem =
      sizeof(float) * kSelectWarps * SelectWarpFloats(args.num_experts, args.num_groups);
  if (smem > kMaxSelectSmem) {
    return Status::InvalidArgument("device routing: too many experts for shared memory");
  }
  const unsigned int blocks = (args.num_tokens + kSelectWarps - 1) / kSelectWarps;
  RouteSelectKernel<<<blocks, kSelectThreads, smem, stream>>>(args);
  MOE_CUDA_CHECK_LAUNCH();
  return Status::Ok();
}

Result<size_t> RoutingScratchBytes(int num_tokens, int top_k, int num_experts, int num_slots) {
  const int n = num_tokens * top_k;
  MOE_ASSIGN_OR_RETURN(const size_t sort_bytes, SortTempBytes(n, num_experts));
  return FixedScratchBytes(num_tokens, n, num_experts, num_slots) + sort_bytes;
}

Status LaunchCapacityAndPermute(const CapacityPermuteArgs& args, void* scratch,
                                size_t scratch_bytes, cudaStream_t stream) {
  if (!args.overflow_drop) return Status::Unsupported("device routing: overflow policy");
  if (args.num_slots <= 0 || args.num_devices <= 0 || args.num_slots % args.num_devices != 0) {
    return Status::InvalidArgument("device routing: slots must be a multiple of devices");
  }
  if (args.capacity_layout && args.capacity == 0) {
    return Status::InvalidArgument("device routing: the capacity layout needs a capacity > 0");
  }
  const int n = args.num_tokens * args.top_k;
  MOE_ASSIGN_OR_RETURN(const size_t sort_bytes, SortTempBytes(n, args.num_experts));
  if (scratch_bytes <
      FixedScratchBytes(args.num_tokens, n, args.num_experts, args.num_slots) + sort_bytes) {
    return Status::InvalidArgument("device routing: scratch too small");
  }
  const Scratch s =
      Carve(scratch, args.num_tokens, n, args.num_experts, args.num_slots, sort_bytes);
  const DeviceRoutingCounterLayout layout =
      DeviceRoutingCounters(args.num_experts, args.num_slots, args.num_devices, args.top_k);
  const CounterOffsets off{
      static_cast<int>(layout.expert_tokens), static_cast<int>(layout.expert_demand),
      static_cast<int>(layout.slot_tokens),   static_cast<int>(layout.device_tokens),
      static_cast<int>(layout.k_histogram),   static_cast<int>(layout.transfer_rows)};
  MOE_CUDA_CHECK(cudaMemsetAsync(s.expert_start, 0, 2 * IntBytes(args.num_experts), stream));
  const size_t num_transfer = static_cast<size_t>(args.num_devices) * args.num_devices;
  MOE_CUDA_CHECK(cudaMemsetAsync(args.counters + layout.transfer_rows, 0,
                                 num_transfer * sizeof(uint32_t), stream));
  if (n > 0) {
    KeysKernel<<<NumBlocks(n, kThreads), kThreads, 0, stream>>>(args.chosen, n, args.num_experts,
                                                                s.keys_in, s.idx_in);
    MOE_CUDA_CHECK_LAUNCH();
    size_t temp_bytes = s.sort_temp_bytes;
    MOE_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(s.sort_temp, temp_bytes, s.keys_in, s.keys_out,
                                                   s.idx_in, s.idx_out, n, 0,
                                                   KeyBits(args.num_experts), stream));
    RunBoundsKernel<<<NumBlocks(n, kThreads), kThreads, 0, stream>>>(
        s.keys_out, n, args.num_experts, s.expert_start, s.expert_end);
    MOE_CUDA_CHECK_LAUNCH();
  }
  CountKernel<<<1, kCountThreads, 0, stream>>>(args, s, off);
  MOE_CUDA_CHECK_LAUNCH();
  if (args.capacity_layout) {
    PadKernel<<<args.num_slots, kThreads, 0, stream>>>(args, s);
    MOE_CUDA_CHECK_LAUNCH();
  }
  if (n > 0) {
    PlaceKernel<<<NumBlocks(n, kThreads), kThreads, 0, stream>>>(args, s);
    MOE_CUDA_CHECK_LAUNCH();
    TransferKernel<<<NumBlocks(args.num_tokens, kThreads), kThreads, 0, stream>>>(
        args, off.transfer_rows);
    MOE_CUDA_CHECK_LAUNCH();
  }
  return Status::Ok();
}

}  // namespace moe::engine::cuda
