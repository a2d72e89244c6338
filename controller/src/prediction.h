// Prediction: what a decision is expected to do to the reward, recorded with
// every decision (and the only outcome an advisory decision has).
//
//   capacity_factor: a counterfactual on the epoch's own demand. With the
//     mean token-slots per step that chose each expert (expert_demand) and
//     the engine's capacity rule, ceil(cf * tokens * top_k / num_experts)
//     per logical expert with overflow dropped, the drop rate under the
//     current and the new capacity factor follow; the reward of the
//     snapshot's figures with each drop rate and capacity factor gives
//     before and after. Basis "demand counterfactual".
//     Not for a joint change (other knobs in the same command).
//   the learning policy's knobs: the learnt mean rewards of the setting in
//     force and of the setting the command makes (this knob and its
//     companions changed), when both have samples in the snapshot's regime.
//     Basis "learnt means".
//   phy2log: the planner's device max-over-mean load (on demand) before and
//     after; no reward (basis "planned device load"; the gain is absent).
//   anything else: no prediction (basis "none"; the gain is absent).
//
// Pure.

#ifndef MOE_CONTROLLER_SRC_PREDICTION_H_
#define MOE_CONTROLLER_SRC_PREDICTION_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "moe/policies/learning_policy.h"
#include "moe/policies/reward.h"
#include "moe/policies/snapshot.h"

namespace moe::controller {

struct Prediction {
  std::string basis = "none";  // "demand counterfactual", "learnt means", "none"
  std::optional<double> reward_before;
  std::optional<double> reward_after;
  std::optional<double> drop_rate_before;  // demand counterfactual only
  std::optional<double> drop_rate_after;
  std::optional<double> device_max_over_mean_before;  // planned device load only
  std::optional<double> device_max_over_mean_after;

  // reward_after - reward_before, when both are known.
  std::optional<double> gain() const;
  // {"basis", "reward_before", "reward_after", "gain", "drop_rate_before", ...}.
  std::string Json() const;
};

// The other scalar knobs a command changes with the decision's (joint
// settings): each knob and its new value.
using Companions = std::vector<std::pair<std::string, double>>;

// The prediction for setting `knob` from `current` (a proposal's `current`)
// to `value` (its `value`, or the guard's clamped one), with `companions`
// changed in the same command.
Prediction Predict(const std::string& knob, double current, double value,
                   const Companions& companions, const policies::EngineSnapshot& snapshot,
                   const policies::RewardParams& reward,
                   const policies::LearningPolicyParams& learning,
                   const policies::LearningState& learnt);

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_PREDICTION_H_
