// The routing pipeline of one layer as one pure function: from router scores
// and knobs to a plan that says, for every token-slot, which expert and which
// physical slot serves it (or that it was dropped), with its gate weight.
//
// Steps (DESIGN.md, "Routing pipeline"), per token in token order:
//   1. selection = scores + expert_bias + noise (noise_std, seeded, a pure
//      function of (seed, token, expert) shared with the CUDA kernels); bias and
//      noise choose experts but never change gate weights;
//   2. group-limited routing (num_groups > 1): keep the topk_groups groups with
//      the best group score (sum of the group's two best selection scores);
//   3. candidates ranked by selection; with a shortlist M > 0 only the first M,
//      re-ranked by (1 - alpha) * affinity + alpha * availability, where
//      affinity is the selection score min-max scaled over the shortlist and
//      availability the expert's remaining capacity fraction;
//   4. K = top_k, or with top_p > 0 the shortest prefix whose normalised score
//      mass reaches top_p, clamped to [k_min, top_k];
//   5. gate weight = score (normalised over the chosen K when normalize_gates)
//      * routed_scaling;
//   6. capacity: C = ceil(cf * T * top_k / E) (cf = 0: unlimited); with
//      capacity_scope "expert" C is the expert's, split over its replicas (the
//      first `C % r` replicas get one more); with "slot" every replica has C
//      (ReplicaCapacity());
//      slots claim capacity in token order, then in rank order within a token;
//      the replica is chosen round-robin, so an expert's tokens are split evenly
//      over its replicas (counts differ by at most one); a slot whose replica
//      is full overflows and follows the overflow policy; every token-slot
//      ends in exactly one outcome.
//   7. overflow policies: drop (backup path); reroute (the next candidate
//      expert in rank order with room, never one the token already uses);
//      replica: the primary replica is the one on the token's own device
//      (token t lives on device t % D; saves all-to-all traffic) when the
//      expert has one there, and a full primary spills to the sibling replica
//      with the most room.
//
// Replay: with a forced ExpertSelection (a recorded routing trace), steps 1-4
// take the token's recorded experts instead: the first min(top_k, recorded)
// of them in recorded order (with top_p > 0, the shortest prefix reaching
// top_p, clamped to [k_min, top_k]); bias, noise, groups and the shortlist do
// not change them. Gate weights (5) still come from `scores`, and capacity and
// overflow (6, 7) apply unchanged; reroute falls back to the remaining experts
// ranked by selection score (with bias and noise).
//
// Thread safety: pure; safe from any thread.

#ifndef MOE_ENGINE_ROUTER_H_
#define MOE_ENGINE_ROUTER_H_

#include <cstdint>
#include <vector>

#include "moe/engine/options.h"

namespace moe::engine {

enum class SlotOutcome : uint8_t {
  kUnused,    // dynamic K chose fewer than top_k experts for this token
  kRouted,    // served by its chosen expert
  kRerouted,  // overflowed; served by another expert (reroute) or replica (replica)
  kDropped,   // overflowed; backup path (shared experts only)
};

struct RoutingPlan {
  int num_tokens = 0;
  int max_k = 0;  // slots per token in the arrays below (= knobs.top_k)
  // [num_tokens * max_k], slot j of token t at t * max_k + j, in rank order.
  std::vector<int32_t> expert;  // logical expert serving the slot (-1: unused/dropped)
  std::vector<int32_t> chosen;  // expert first chosen for the slot (-1: unused)
  std::vector<int32_t> slot;    // physical slot serving it (-1: unused/dropped)
  std::vector<float> weight;    // gate weight (0 when unused or dropped)
  std::vector<SlotOutcome> outcome;

  uint32_t capacity = 0;         // per-expert capacity (0 = unlimited)
  uint64_t num_token_slots = 0;  // requested slots (sum of K per token)
  uint32_t overflowed = 0;
  uint32_t rerouted = 0;
  uint32_t dropped = 0;
  std::vector<uint32_t> expert_tokens;  // [E] served slots per logical expert
  std::vector<uint32_t> expert_demand;  // [E] slots that chose the expert first
  std::vector<uint32_t> slot_tokens;    // [replicas] served slots per physical slot
  std::vector<uint32_t> k_histogram;    // [top_k + 1]
  double router_entropy = 0;            // mean over tokens, nats
  double gate_mass = 0;                 // mean over tokens
};

// Which experts each token chose, in rank order: a routing decision before
// capacity (what a routing trace records). Token t's experts are
// experts[offsets[t] .. offsets[t + 1]).
struct ExpertSelection {
  std::vector<int32_t> experts;   // logical expert ids, each < E, distinct within a token
  std::vector<uint32_t> offsets;  // [num_tokens + 1], offsets[0] = 0, non-decreasing

  int num_tokens() const { return offsets.empty() ? 0 : static_cast<int>(offsets.size()) - 1; }
};

// kInvalidArgument unless `selection` has `num_tokens` tokens, each with at
// least one expert, ids in [0, num_experts) and distinct within a token.
Status ValidateSelection(const ExpertSelection& selection, int num_tokens, uint32_t num_experts);

// The selection a plan made (its `chosen` column without unused slots).
ExpertSelection SelectionOf(const RoutingPlan& plan);

// `scores` is [num_tokens, E] after the score function. `knobs` must have
// passed ValidateKnobs(); an empty phy2log means DefaultPlacement(). `seed`
// seeds the selection noise (the engine mixes step and layer into it).
// `forced`, when non-null, replays a recorded selection (see "Replay" above)
// and must have passed ValidateSelection() for `num_tokens` tokens.
RoutingPlan Route(const float* scores, int num_tokens, const Options& options, const Knobs& knobs,
                  uint64_t seed, const ExpertSelection* forced = nullptr);

// The capacity C for `num_tokens` tokens (0 = unlimited): an expert's under
// CapacityScope::kExpert, each slot's under kSlot.
uint32_t ExpertCapacity(double capacity_factor, int num_tokens, uint32_t top_k,
                        uint32_t num_experts);

// Room of replica `i` (0-based, in slot order) of an expert with `r` >= 1
// replicas under capacity `capacity` (> 0) and `scope`: capacity / r + (i <
// capacity % r) for kExpert, capacity for kSlot.
inline uint32_t ReplicaCapacity(uint32_t capacity, CapacityScope scope, uint32_t r, uint32_t i) {
  if (scope == CapacityScope::kSlot) return capacity;
  return capacity / r + (i < capacity % r ? 1 : 0);
}

// ---------------------------------------------------------------------------
// Device routing (Backend::RouteOnDevice, Feature::kDeviceRouting).
//
// The same pipeline as Route() for the features it covers: steps 1, 2, 3
// without a shortlist, 4 with a fixed K, 5 and 6, with the drop policy; replay
// (`forced`), two-stage routing (shortlist, availability), dynamic K (top_p)
// and the reroute / replica policies are not covered (kUnsupported). Parity:
// on the same scores, knobs and seed, `chosen`, `slot` and the counters equal
// Route()'s `chosen`, `slot` and counters, and `weight` its `weight` (computed
// in the same double arithmetic), except where two selection scores tie to
// within the last bit of the noise (its log/cos may round differently on the
// device); the entropy and gate-mass sums equal Route()'s to float rounding.
//
// Everything the host needs after a step (to fill LayerStats and to model the
// all-to-all) sits in one small uint32 array in backend memory, laid out by
// DeviceRoutingCounters(), so one copy per step brings it back.
struct DeviceRoutingCounterLayout {
  // Scalars at fixed offsets.
  static constexpr size_t kNumTokenSlots = 0;  // sum of K over tokens
  static constexpr size_t kOverflowed = 1;
  static constexpr size_t kRerouted = 2;  // always 0 (drop policy)
  static constexpr size_t kDropped = 3;
  static constexpr size_t kCapacity = 4;     // per-expert capacity, 0 = unlimited
  static constexpr size_t kNumRows = 5;      // served token-slots
  static constexpr size_t kEntropySum = 6;   // float bits: sum over tokens of the entropy
  static constexpr size_t kGateMassSum = 7;  // float bits: sum over tokens of the gate mass
  static constexpr size_t kHeader = 8;
  // Offsets of the arrays, each right after the one before.
  size_t expert_tokens = 0;  // [E] served slots per logical expert
  size_t expert_demand = 0;  // [E] slots that chose the expert
  size_t slot_tokens = 0;    // [num_slots] served slots per physical slot
  size_t device_tokens = 0;  // [num_devices] served slots per device
  size_t k_histogram = 0;    // [top_k + 1]
  // [num_devices * num_devices] at src * D + dst: the (token, device) pairs of
  // served slots with the token on device src = t % D and the slot on device
  // dst != src, a token counted once per device however many of its slots
  // are there (the rows the dispatch all-to-all sends); the diagonal is 0.
  size_t transfer_rows = 0;
  size_t total = 0;  // entries in all
};

DeviceRoutingCounterLayout DeviceRoutingCounters(uint32_t num_experts, uint32_t num_slots,
                                                 uint32_t num_devices, uint32_t top_k);

// Writes the counters of a host copy of a device counter array into `plan`
// (capacity, num_token_slots, overflowed, rerouted, dropped, expert_tokens,
// expert_demand, slot_tokens, k_histogram, and router_entropy and gate_mass as
// means over plan->num_tokens).
void ApplyDeviceRoutingCounters(const uint32_t* counters, const DeviceRoutingCounterLayout& layout,
                                RoutingPlan* plan);

// The transfer-row matrix of DeviceRoutingCounterLayout::transfer_rows for a
// host plan: [D * D], token t on device t % D, slot s on device
// s / (num_slots / D), each (token, destination device) pair counted once.
std::vector<uint32_t> TransferRows(const RoutingPlan& plan, uint32_t num_slots,
                                   uint32_t num_devices);

// The modelled all-to-all of one direction (dispatch; the combine sends the
// same rows back): the largest over devices of its intra-node bytes (the
// larger of sent and received) over the intra-node bandwidth plus its
// inter-node bytes over the inter-node bandwidth, in microseconds, from a
// transfer-row matrix [D * D] and `row_bytes` per row.
double ModelAllToAllUs(const std::vector<uint32_t>& transfer_rows, double row_bytes,
                       const ParallelOptions& parallel);

// kUnsupported naming the first knob device routing does not cover (shortlist,
// top_p, an overflow policy other than drop); OK otherwise.
Status CheckDeviceRoutingCovered(const Knobs& knobs);

// The capacity layout of the permutation: with a capacity C > 0, slot s of an
// expert with r replicas, the i-th of them in slot order, gets room for
// ReplicaCapacity(c, scope, r, i) rows, c = min(C, num_tokens) (no expert
// serves a token twice); the room is known before routing, so expert work can
// be sized on the host without waiting for the routing counters. Returns
// [num_slots + 1] row offsets: slot s owns rows [offsets[s], offsets[s + 1]).
std::vector<int> CapacityLayoutOffsets(const std::vector<uint32_t>& phy2log, uint32_t num_experts,
                                       uint32_t capacity, int num_tokens,
                                       CapacityScope scope = CapacityScope::kExpert);

// Arguments of Backend::RouteOnDevice(). Pointers are backend memory of the
// backend that runs it, except `options` and `knobs` (host). Outputs are
// written in full (unused and dropped slots get -1 and 0) and are valid once
// the backend's enqueued work has finished.
struct DeviceRoutingArgs {
  const Options* options = nullptr;  // must have passed ValidateOptions()
  const Knobs* knobs = nullptr;      // must have passed ValidateKnobs()
  uint64_t seed = 0;                 // as Route()'s `seed`
  int num_tokens = 0;
  const float* scores = nullptr;       // [num_tokens, E] after Score()
  const float* expert_bias = nullptr;  // [E] copy of knobs->expert_bias; null when it is empty
  const int32_t* phy2log = nullptr;    // [num_slots] the placement in force (never empty)
  // Per token-slot, [num_tokens * top_k], slot j of token t at t * top_k + j:
  int32_t* chosen = nullptr;  // Route()'s `chosen`
  int32_t* slot = nullptr;    // Route()'s `slot`
  float* weight = nullptr;    // Route()'s `weight`
  // The permutation: served token-slots grouped by physical slot and, within
  // a slot, by token-slot index (the order of the engine's host counting
  // sort). Two layouts:
  //   compact (capacity_layout false): slot s owns rows [sum of
  //     slot_tokens[< s], + slot_tokens[s]); the first counters[kNumRows] of
  //     [num_tokens * top_k] entries are written;
  //   capacity (capacity_layout true, needs a capacity > 0): slot s owns rows
  //     [o[s], o[s + 1]) of o = CapacityLayoutOffsets(), its served rows first
  //     and then padding (token -1, weight 0); all o[num_slots] entries are
  //     written.
  bool capacity_layout = false;
  int32_t* rows = nullptr;       // token of each row
  float* row_weights = nullptr;  // its gate weight
  uint32_t* counters = nullptr;  // [DeviceRoutingCounters(...).total]
};

// RouteOnDevice() on host memory: Route() with the results written in the
// device contract above (the CPU backend's RouteOnDevice; the reference the
// CUDA kernels are tested against). Same refusals as the device.
Status RouteIntoDeviceLayout(const DeviceRoutingArgs& args);

}  // namespace moe::engine

#endif  // MOE_ENGINE_ROUTER_H_
