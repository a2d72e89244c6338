// Counterfactual capacity policy: chooses the capacity factor by the reward
// it would have earnt on the window's own tokens, not by a before/after
// comparison that the workload's drift confounds.
//
// A step's demand (token-slots that chose each expert, before capacity; the
// engine reports it per layer) fixes what any other capacity factor would
// have done to that step exactly (up to the rounding of capacity over
// replicas): with capacity C = ceil(cf * tokens * top_k / num_experts) per
// expert and the `drop` overflow policy, an expert serves min(demand, C) and
// drops the rest; its rows split evenly over its replicas and land on their
// devices (cost_model.h DeviceRows). The cost model turns the device rows into
// the critical path; the reward (reward.h) weighs it against the balanced
// reference, the drops and the quality error the drops cause (estimated as
// quality_per_drop * drop_rate; the quality probe is not counterfactual).
//
// Every candidate is scored on every recent step of the window (any epoch:
// demand does not depend on capacity or placement) and its score is a low
// quantile of those per-step rewards (`pessimism`), so a setting is chosen
// for the bad steps of the recent past, not the average one. The candidate
// with the best score is proposed when it beats the value in force by
// `min_gain`; ties go to the smaller capacity factor.
//
// Pure: no clock, no I/O.

#ifndef MOE_POLICIES_COUNTERFACTUAL_POLICY_H_
#define MOE_POLICIES_COUNTERFACTUAL_POLICY_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "moe/common/status.h"
#include "moe/policies/reward.h"
#include "moe/policies/snapshot.h"

namespace moe::policies {

struct CounterfactualParams {
  // Capacity factors to choose among (each > 0, ascending after validation).
  std::vector<double> candidates = {1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0};
  // Score = this quantile from below of the per-step predicted rewards:
  // 0.5 the median, 0.1 nearly the worst step; in (0, 1].
  double pessimism = 0.2;
  // Predicted quality error per unit of drop rate; >= 0.
  double quality_per_drop = 1.0;
  // Predicted score gain over the value in force needed to move; >= 0.
  double min_gain = 0.002;
  // Recent steps with demand needed before the policy acts; >= 1.
  uint64_t min_steps = 8;
  // Only the newest this many steps of the window are scored (0: all).
  uint64_t lookback_steps = 32;
};

Status Validate(const CounterfactualParams& params);

// One recent step replayed under a capacity factor.
struct StepPrediction {
  double drop_rate = 0;
  double latency_us = 0;   // cost model critical path
  double balanced_us = 0;  // balanced reference
  double reward = 0;
};

// What `capacity_factor` (0 = unlimited) would have done to `step` with the
// snapshot's K, placement and cost model. Layers without demand are skipped.
StepPrediction PredictStep(const EngineSnapshot& snapshot, const StepDemand& step,
                           double capacity_factor, const CounterfactualParams& params,
                           const RewardParams& reward);

// The drop rate that `capacity_factor` (0 = unlimited) with `top_k` would
// have given on the newest `lookback_steps` steps with demand (0: all), as
// the `quantile` from below of the per-step rates (0.9: nearly the worst
// step), under the snapshot's placement and capacity scope. At the K in force
// it is each step's own replay, exact. Below it, an upper bound: a token's
// K' choices are among its K, so no expert's demand grows, while capacity
// and token-slots shrink with K'. Above it, an estimate, not a bound: each
// expert's demand scaled by top_k / K, at most the step's tokens. nullopt
// when no step of the window reported demand.
std::optional<double> PessimisticDropRate(const EngineSnapshot& snapshot, double capacity_factor,
                                          uint32_t top_k, uint64_t lookback_steps, double quantile);

struct CandidateScore {
  double capacity_factor = 0;
  double score = 0;        // pessimistic (quantile) reward
  double mean_reward = 0;  // mean predicted reward
  double drop_rate = 0;    // mean predicted drop rate
  uint64_t steps = 0;
};

// A fingerprint of a placement ([layer][slot], as KnobValues::phy2log) for
// CapacityReplay::Settings: equal placements have equal fingerprints.
uint64_t PlacementFingerprint(const std::vector<std::vector<uint32_t>>& phy2log);

// The settings a CapacityReplay made with `knobs` holds for.
CapacityReplay::Settings ReplaySettings(const KnobValues& knobs, uint32_t num_replicas,
                                        uint32_t num_devices);

// True when a CapacityReplay prices to PredictStep's figures under `model`:
// every device at the usual speed, and a device cost that never falls with
// rows (so the slowest device is the one with the most rows).
bool PricesCapacityReplays(const CostModel& model);

// `step` under every capacity factor of `capacity_factors` with the K,
// placement and capacity scope of `knobs`, in the arithmetic of PredictStep:
// a snapshot under the same settings, with a uniform device speed and a
// device cost that does not fall with rows, prices it to the same bits.
std::shared_ptr<const CapacityReplay> ReplayCapacities(const StepDemand& step,
                                                       const KnobValues& knobs,
                                                       uint32_t num_replicas, uint32_t num_devices,
                                                       const std::vector<double>& capacity_factors);

// Every candidate (and the value in force, first) scored on the recent
// steps; empty without a calibrated cost model or with fewer than
// `min_steps` steps with demand. A step whose snapshot.capacity_replays entry
// holds for the snapshot's settings and the candidate is priced from it
// (the same figures, ~100x less work at 61 layers x 256 experts); any other
// is replayed.
std::vector<CandidateScore> ScoreCapacity(const EngineSnapshot& snapshot,
                                          const CounterfactualParams& params,
                                          const RewardParams& reward);

// The proposal (policy "counterfactual", knob "capacity_factor", layer -1),
// if the best candidate beats the value in force by min_gain. `reason` gives
// both scores and predicted drop rates.
std::optional<Proposal> ProposeCounterfactualCapacity(const EngineSnapshot& snapshot,
                                                      const CounterfactualParams& params,
                                                      const RewardParams& reward);

// Judging a placement on the same tokens: the predicted mean reward per step
// of `placements` ([layer][slot], as Proposal::placements) minus that of the
// placement in force, both on the newest `lookback_steps` steps' own demand at
// the capacity factor in force. The move's own cost is not included (the
// caller weighs it). 0 without a calibrated cost model or demand.
double PlacementGain(const EngineSnapshot& snapshot,
                     const std::vector<std::vector<uint32_t>>& placements,
                     const CounterfactualParams& params, const RewardParams& reward);

// Judging a capacity or placement change after the fact, on the same tokens
// (for a placement alone, changed_to = changed_from = the capacity factor in
// force): the steps of
// `epoch` (those with demand) replayed under `changed_to` and under
// `changed_from`, with the snapshot's K, placement and cost model. When the
// same change also moved experts, `previous_placements` (non-empty) is the
// placement `changed_from` ran under.
struct SameTokens {
  uint64_t steps = 0;
  double reward_changed = 0;   // mean predicted reward per step under changed_to
  double reward_previous = 0;  // ... under changed_from
  double drop_changed = 0;
  double drop_previous = 0;
};
// nullopt without a calibrated cost model or a step of `epoch` with demand.
std::optional<SameTokens> CapacityOnSameTokens(
    const EngineSnapshot& snapshot, uint64_t epoch, double changed_to, double changed_from,
    const CounterfactualParams& params, const RewardParams& reward,
    const std::vector<std::vector<uint32_t>>& previous_placements = {});

}  // namespace moe::policies

#endif  // MOE_POLICIES_COUNTERFACTUAL_POLICY_H_
