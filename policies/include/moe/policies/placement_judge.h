// Placement judge: what a placement does to one step's demand, the figures a
// replication plan is judged on (bench/replication_bench.cc).
//
// A step's demand is the token-slots that chose each logical expert, before
// capacity. Under a placement (phy2log: the logical expert of every physical
// slot; slot s on device s / (num_replicas / num_devices)) an expert's
// token-slots are spread evenly over its replicas, so a device carries the
// sum over its slots of demand[e] / replicas[e].
//
// Capacity, in token-slots, in one of two scopes:
//   - kExpert: each logical expert holds `capacity` (the engine's
//     ExpertCapacity, ceil(cf * tokens * top_k / num_experts)), split over its
//     replicas; an expert drops max(0, demand - capacity) whatever its
//     replica count (a replica adds no room).
//   - kSlot: each physical slot holds `capacity`, so an expert with r
//     replicas takes up to r * capacity and drops max(0, demand - r *
//     capacity) (a replica adds room).
// With whole token-slots spread over replicas by at most one apart, these are
// exact, not only in the mean. `capacity` 0 means unlimited (no drop).
//
// Pure functions; thread-safe on distinct arguments.

#ifndef MOE_POLICIES_PLACEMENT_JUDGE_H_
#define MOE_POLICIES_PLACEMENT_JUDGE_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "moe/common/status.h"
#include "moe/telemetry/types.h"

namespace moe::policies {

// kExpert: capacity per logical expert, split over its replicas; kSlot:
// capacity per physical slot, so a replica adds room (the engine's knob).
using telemetry::CapacityScope;

// "expert", "slot".
std::string_view CapacityScopeName(CapacityScope scope);

// ceil(capacity_factor * tokens * top_k / divisor), at least 1; 0 (unlimited)
// when capacity_factor <= 0 or divisor == 0. With divisor = num_experts this
// is the engine's ExpertCapacity (engine/src/router.cc).
double CapacityOf(double capacity_factor, double tokens, uint32_t top_k, uint32_t divisor);

// Replicas per logical expert of `phy2log` ([num_experts]); InvalidArgument
// when a slot names an expert >= num_experts or an expert has no replica.
Result<std::vector<uint32_t>> ValidatedReplicaCounts(const std::vector<uint32_t>& phy2log,
                                                     uint32_t num_experts);

// Largest device load over the mean device load of `demand` ([num_experts])
// under `phy2log`; 1.0 when the demand is all zero. InvalidArgument when
// num_devices is 0 or does not divide the slots, or as ValidatedReplicaCounts.
Result<double> DeviceMaxOverMean(const std::vector<double>& demand,
                                 const std::vector<uint32_t>& phy2log, uint32_t num_devices);

// Token-slots over capacity of `demand` ([num_experts]) with `replicas`
// ([num_experts], each >= 1, e.g. from ValidatedReplicaCounts) in `scope`; capacity 0
// = unlimited. Precondition: the sizes match (asserted).
double DroppedTokenSlots(const std::vector<double>& demand, const std::vector<uint32_t>& replicas,
                         CapacityScope scope, double capacity);

}  // namespace moe::policies

#endif  // MOE_POLICIES_PLACEMENT_JUDGE_H_
