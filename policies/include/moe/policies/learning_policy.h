// Learning policy: a contextual bandit (UCB1) over a few values of one scalar
// knob, with a separate table per load regime.
//
// The arms are params.values, values of params.knob (capacity_factor, top_k
// or noise_std). The regime of a snapshot is its bucket of expert *demand*
// imbalance (demand_max_over_mean: token-slots that chose each expert, before
// capacity, so the regime does not depend on the capacity being learnt; the
// served max_over_mean only for an engine that reports no demand) and of load
// (tokens_per_step); each regime keeps its own statistics, so what is learnt
// under one load never decides another.
//
// The caller owns a LearningState and feeds it: after every epoch it calls
// Learn with the epoch's regime, the knob's value that was actually applied
// and the epoch's measured reward (reward.h). Statistics are kept per exact
// value (ValueKey), not per arm: a value the guard clamped between two arms
// is learnt as itself and credited to no arm, and arms that change on a
// reload find the statistics of their own values (ArmsChange says which).
// ProposeLearning then reads the state, never writes it:
//
//   1. Nothing while the epoch in force has fewer than min_steps steps, or
//      while capacity_factor is 0 (unlimited capacity is left alone).
//   2. current = the arm nearest the value in force (NearestArm). When the
//      value in force is no arm (a clamped move), moving onto an arm is
//      always worth it, so the rules below may then propose `current` itself.
//   3. Explore: while some arm of the regime has fewer than min_samples
//      samples, move to the unexplored arm nearest (in value) to the current
//      arm, ties to the higher value, so exploration walks step by step
//      within the guard's maximum change. When that arm is the value in
//      force it is being measured now, and nothing is proposed.
//   4. Exploit: once every arm is known, score(a) = mean(a) + exploration *
//      sqrt(ln(N) / n(a)), N the regime's samples on arms, n(a) the arm's;
//      the best score wins (ties: the arm nearest the current one, then the
//      higher value). It is proposed when it is not the value in force and
//      its score beats the current arm's by at least min_gain (off an arm:
//      whatever the gain).
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
  // Regime: buckets of the demand imbalance (DemandImbalance); finite,
  // strictly increasing.
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

// The imbalance a regime is bucketed by: snapshot.demand_max_over_mean when
// the engine reports demand, else the served snapshot.max_over_mean.
double DemandImbalance(const EngineSnapshot& snapshot);

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

// The key a value's statistics are kept under: `value` rounded to 1e-6, so
// a value that crossed the wire as a float (1.1f) meets the arm 1.1.
double ValueKey(double value);

// What the policy has learnt: per regime (RegimeOf's text), per value in
// force (ValueKey), the outcomes measured. A regime or value missing from the
// map has no samples. `samples` counts every call of Learn that was recorded.
struct LearningState {
  std::map<std::string, std::map<double, ArmStats>> regimes;
  uint64_t samples = 0;
};

// The statistics of each arm of params.values in `regime`, in order (zeros
// where none were learnt).
std::vector<ArmStats> ArmStatsOf(const std::string& regime, const LearningPolicyParams& params,
                                 const LearningState& state);

// Records one measured outcome: `reward` of the steps that ran with the knob
// at `knob_value` in `regime`, under ValueKey(knob_value), whether or not it
// is an arm. A non-finite reward or knob value is not recorded.
// Precondition: state != nullptr.
void Learn(const std::string& regime, double knob_value, double reward,
           const LearningPolicyParams& params, LearningState* state);

// What a change of the arms (or of the knob) does to what was learnt, as one
// log line; empty when `before` and `after` have the same knob and values.
// Another knob: "learning: knob changed from A to B: statistics reset". Other
// values: "learning: arms changed from [..] to [..]; statistics follow their
// values: 0.5: new, 1: 3 samples, ...; no longer arms: 3 (2 samples, kept)".
std::string ArmsChange(const LearningPolicyParams& before, const LearningPolicyParams& after,
                       const LearningState& state);

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
