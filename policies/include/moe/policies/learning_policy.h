// Learning policy: a contextual bandit (UCB1) over a few values of one scalar
// knob, with a separate table per load regime.
//
// The arms are params.values, values of params.knob (capacity_factor, top_k
// or noise_std). The regime of a snapshot is its bucket of expert load
// imbalance (max_over_mean) and of load (tokens_per_step); each regime keeps
// its own statistics, so what is learnt under one load never decides another.
//
// The caller owns a LearningState and feeds it: after every epoch it calls
// Learn with the epoch's regime, the knob's value in force and the epoch's
// measured reward (reward.h). ProposeLearning then reads the state, never
// writes it:
//
//   1. Nothing while the epoch in force has fewer than min_steps steps, or
//      while capacity_factor is 0 (unlimited capacity is left alone).
//   2. current = the arm nearest the value in force (NearestArm).
//   3. Explore: while some arm of the regime has fewer than min_samples
//      samples, move to the unexplored arm nearest (in value) to the current
//      arm, ties to the higher value, so exploration walks step by step
//      within the guard's maximum change. When that arm is the current one it
//      is being measured now, and nothing is proposed.
//   4. Exploit: once every arm is known, score(a) = mean(a) + exploration *
//      sqrt(ln(N) / n(a)), N the regime's samples, n(a) the arm's; the best
//      score wins (ties: the arm nearest the current one, then the higher
//      value). It is proposed when it is not the current arm and its score
//      beats the current arm's by at least min_gain.
//
// The guard (guard.h) still bounds every proposal: its knob bounds, maximum
// change per decision, cooldown and rollback apply as to any other policy.
//
// Thread safety: the functions are pure or touch only their `state`
// argument; LearningState is a plain value.

#ifndef MOE_POLICIES_LEARNING_POLICY_H_
#define MOE_POLICIES_LEARNING_POLICY_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moe/common/status.h"
#include "moe/policies/snapshot.h"

namespace moe::policies {

struct LearningPolicyParams {
  // The knob it learns: "capacity_factor", "top_k" or "noise_std".
  std::string knob = "capacity_factor";
  // The arms: values of `knob`, at least two, finite and strictly increasing;
  // > 0 for capacity_factor, >= 0 for noise_std, whole numbers >= 1 for top_k.
  std::vector<double> values = {1.0, 1.25, 1.5, 2.0, 3.0};
  // Regime: buckets of snapshot.max_over_mean; finite, strictly increasing.
  std::vector<double> imbalance_edges = {1.5, 3.0};
  // Regime: buckets of snapshot.tokens_per_step; finite, strictly increasing.
  // Empty = one bucket.
  std::vector<double> tokens_edges = {};
  // UCB coefficient c, in reward units; >= 0. 0 = pure exploitation once
  // every arm is known.
  double exploration = 0.1;
  // Samples an arm needs before it is exploited (arms below are explored
  // first); >= 1.
  uint32_t min_samples = 1;
  // Upper-confidence gain over the arm in force needed to move; >= 0.
  double min_gain = 0.005;
  // Steps under the epoch in force before it acts.
  uint64_t min_steps = 16;
};

// Checks the parameters' ranges and ordering; the message names the field.
Status Validate(const LearningPolicyParams& params);

// The regime of a snapshot, e.g. "imbalance 1 of 3, tokens 0 of 1": bucket b
// of edges e is the number of edges <= value (a value equal to an edge goes to
// the upper bucket; NaN to bucket 0), out of e.size() + 1 buckets. Stable
// text: it is stored in the audit log and compared back only by equality.
std::string RegimeOf(const EngineSnapshot& snapshot, const LearningPolicyParams& params);

// The value of params.knob in force in a snapshot (knobs.capacity_factor,
// knobs.top_k or knobs.noise_std); NaN for an unknown knob.
double KnobInForce(const EngineSnapshot& snapshot, const LearningPolicyParams& params);

// Index of the arm nearest to `value` (ties: the lower arm; NaN: arm 0).
// Precondition: params.values is not empty.
size_t NearestArm(double value, const LearningPolicyParams& params);

// The outcomes measured with one arm in force.
struct ArmStats {
  uint64_t samples = 0;
  double reward_sum = 0;
  // reward_sum / samples; 0 without samples.
  double Mean() const;
};

// What the policy has learnt: per regime (RegimeOf's text), one ArmStats per
// value of params.values, in order. A regime missing from the map has no
// samples. `samples` counts every call of Learn that was recorded.
struct LearningState {
  std::map<std::string, std::vector<ArmStats>> regimes;
  uint64_t samples = 0;
};

// Records one measured outcome: `reward` of the steps that ran with the knob
// at `knob_value` in `regime`, credited to NearestArm(knob_value). A regime's
// table is created (or, when its length differs from params.values, resized)
// to one ArmStats per arm. A non-finite reward or knob value is not recorded.
// Precondition: Validate(params).ok(); state != nullptr.
void Learn(const std::string& regime, double knob_value, double reward,
           const LearningPolicyParams& params, LearningState* state);

// Proposes a move of params.knob to another arm's value (policy "learning",
// knob params.knob, layer -1, `current` the value in force, `value` the
// arm's), or nothing; never a value equal to the one in force. `reason` names
// the regime, whether it explores or exploits, and the chosen and current
// arms' mean rewards and samples. Pure. Precondition: Validate(params).ok().
std::optional<Proposal> ProposeLearning(const EngineSnapshot& snapshot,
                                        const LearningPolicyParams& params,
                                        const LearningState& state);

}  // namespace moe::policies

#endif  // MOE_POLICIES_LEARNING_POLICY_H_
