// Replication policy: online expert replication, the slow loop.
//
// For every layer of the snapshot with a measured expert load, the policy
// asks the replication planner (planner.h) for a better placement of the
// layer's num_replicas physical slots over the num_devices devices of the
// expert-parallel group, starting from the placement in force and within a
// migration budget (max_moves replicas per layer, each moved replica also
// costing move_weight / num_replicas in the planner's objective). A layer
// takes the planned placement only when its device max-over-mean load falls
// to at most (1 - min_gain) x the one in force; otherwise it keeps its
// placement. Without a clock (the default) the planner runs to its work
// limits and the result is deterministic; with `clock` it stops each layer's
// search after time_budget_ms (the best plan found by then).
//
// The load planned on is a forecast of the next window (load_forecast.h,
// params.forecast): by default kRecent, from the per-step demand of the
// window's steps (snapshot.recent, the rows of the layer whose size matches
// its estimate), since the placement governs the steps after it, not the
// ones before. With ForecastMethod::kWindowMean, or when snapshot.recent has
// fewer than 2 such steps of a layer, the layer's window mean is planned on
// as before: its expert_demand (the token-slots that chose each expert,
// before capacity, so a hot expert capped at its capacity still shows), or
// the served expert_load for an engine that reports no demand.
//
// The placement in force for layer l is snapshot.knobs.phy2log[l] when present
// and non-empty, else the default: slot s holds expert s % num_experts.
// Plans use PlanMode::kAuto on the shape {num_experts = the layer's
// expert_load size, num_replicas, num_groups, num_nodes, num_gpus =
// num_devices}: hierarchical (every replica on its group's node) when
// num_groups % num_nodes == 0, else global. A placement in force must be valid
// in that mode: with num_nodes > 1 in hierarchical mode, the default placement
// is valid only when it already keeps each group on one node (e.g. num_replicas
// == num_experts with contiguous groups).
//
// Nothing is proposed when the snapshot has one device, no replicas, too few
// steps, no layer with a positive load, or no layer whose placement changes.
// Bad input (an invalid shape, a placement in force that is not valid for the
// shape, loads the planner refuses) skips the policy for that snapshot: the
// result is nullopt, never a crash.

#ifndef MOE_POLICIES_REPLICATION_POLICY_H_
#define MOE_POLICIES_REPLICATION_POLICY_H_

#include <cstdint>
#include <optional>
#include <string_view>

#include "moe/common/clock.h"
#include "moe/common/status.h"
#include "moe/policies/load_forecast.h"
#include "moe/policies/snapshot.h"

namespace moe::policies {

// How many replicas each expert gets.
enum class ReplicaCountRule {
  // kDemand when the snapshot's knobs.capacity_scope is kSlot (a replica adds
  // room), else kBalance (per-expert capacity, or the scope unknown).
  kAuto,
  // The planner chooses counts and packing together for device balance alone
  // (PlanReplication); the old behaviour, and the only rule in hierarchical
  // mode.
  kBalance,
  // Global mode or one node: each slot past the first replica of every expert goes to the
  // expert with the highest planned load per replica (EPLB's rule, which
  // minimises the largest load per replica), and the planner packs those
  // replicas onto devices against the placement in force. With capacity per
  // slot (a replica adds room) this puts the room where the demand is; a
  // layer then also takes a plan whose largest load per replica falls by
  // min_gain while its device max/mean rises by at most min_gain (each gain
  // net of move_weight * moved / num_replicas). Among the plans a layer may
  // take (the balance plan too, and under a move limit a demand plan that
  // leaves half the budget to packing), it takes the least device max/mean +
  // room ratio (largest load per replica over the mean load per slot) + move
  // cost.
  kDemand,
};

// "auto", "balance", "demand".
std::string_view ReplicaCountRuleName(ReplicaCountRule rule);

struct ReplicationPolicyParams {
  // Nodes of the expert-parallel group (devices per node = num_devices /
  // num_nodes); >= 1.
  uint32_t num_nodes = 1;
  // Expert groups (num_experts / num_groups consecutive ids each) for
  // hierarchical planning; 1 = global; >= 1.
  uint32_t num_groups = 1;
  // A layer takes the plan only when its device max-over-mean load is at most
  // (1 - min_gain) x the current one; 0 < min_gain < 1.
  double min_gain = 0.05;
  // Replicas moved per layer per proposal, the migration budget (counted as
  // CountMovedReplicas does); >= 1, or -1 = no limit.
  int max_moves = 8;
  // Cost of migration in the planner's objective, max_over_mean + move_weight
  // * moved / num_replicas (PlannerOptions::move_weight); >= 0.
  double move_weight = 0.02;
  // Steps the snapshot must cover before the policy acts.
  uint64_t min_steps = 32;
  // Planner search budget per layer (PlannerOptions::time_budget_ms), on
  // `clock` (not owned; nullptr: no deadline, deterministic); > 0.
  double time_budget_ms = 10.0;
  const Clock* clock = nullptr;
  // The forecast of each layer's load over the next window that the plan is
  // made on; method kWindowMean keeps the old behaviour (the window mean).
  ForecastOptions forecast;
  // How replica counts are chosen (kDemand needs global mode or one node;
  // hierarchical mode over several nodes always uses kBalance).
  ReplicaCountRule replica_counts = ReplicaCountRule::kAuto;
};

// Checks the parameters' ranges; the message names the field.
Status Validate(const ReplicationPolicyParams& params);

// The placement proposal for `snapshot` (policy "replication", knob "phy2log",
// layer -1), if any. Pure, and deterministic without params.clock.
//
// `current_placements` and `placements` are indexed by layer id (LayerEstimate::
// layer) and cover every layer of snapshot.layers and of snapshot.knobs.phy2log,
// each spelled out (a default placement written out): the placement in force
// and the new one (a copy of the one in force for unchanged layers).
// `current` and `value` are the mean, over the layers with a positive load,
// of the device max-over-mean of the load planned on (the forecast) under
// each. `reason` names each changed layer with its max/mean before -> after,
// the replicas moved, and its hottest expert with that expert's replica count
// after, and says which load the layers were planned on.
std::optional<Proposal> ProposeReplication(const EngineSnapshot& snapshot,
                                           const ReplicationPolicyParams& params);

}  // namespace moe::policies

#endif  // MOE_POLICIES_REPLICATION_POLICY_H_
