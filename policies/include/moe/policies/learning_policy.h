// Learning policy: a contextual bandit (UCB1) over a few joint settings of
// one or more scalar knobs, with a separate table per load regime.
//
// The arms are params.arms: each a Setting, one value per knob of
// params.knobs (e.g. knobs {capacity_factor, top_k}, arms {1.5, 8}, {2, 8},
// {2, 6}; GridOf makes every combination of per-knob values). A learner of
// one knob has one-value settings. The regime of a snapshot is its bucket of
// expert *demand* imbalance (demand_max_over_mean: token-slots that chose
// each expert, before capacity, so the regime does not depend on the capacity
// being learnt; the served max_over_mean only for an engine that reports no
// demand) and of load (tokens_per_step); each regime keeps its own
// statistics, so what is learnt under one load never decides another.
//
// The caller owns a LearningState and feeds it: after every epoch it calls
// Learn with the epoch's regime, the setting that was actually applied and
// the epoch's measured reward (reward.h). Statistics are kept per exact
// setting (SettingKey), not per arm: a setting the guard clamped between two
// arms is learnt as itself and credited to no arm, and arms that change on a
// reload find the statistics of their own settings (ArmsChange says which).
// ProposeLearning then reads the state, never writes it:
//
//   1. Nothing while the epoch in force has fewer than min_steps steps, or
//      while capacity_factor is a learnt knob and 0 (unlimited capacity is
//      left alone).
//   2. current = the arm nearest the setting in force (NearestArm: distance
//      summed over the knobs, each knob's difference divided by the spread of
//      its values over the arms, so every knob counts alike). When the
//      setting in force is no arm (a clamped move), moving onto an arm is
//      always worth it, so the rules below may then propose `current` itself.
//   3. Explore: while some arm of the regime has fewer than min_samples
//      samples, move to the unexplored arm nearest to the current arm, ties
//      to the higher setting (compared knob by knob), so exploration walks
//      step by step within the guard's maximum change. When that arm is the
//      setting in force it is being measured now, and nothing is proposed.
//      Gate: an unexplored arm is explored live only when its pessimistic
//      drop rate on the window's own demand (ExploreDropRate) is at most
//      explore_max_drop_rate; a gated arm is passed over (the reason names
//      it) and stays unexplored, so it is tried once the window says it is
//      safe. The drop limit is the quality limit too: the quality error that
//      drops cause is quality_per_drop x drop rate (counterfactual_policy.h);
//      what demand cannot show (a knob's own effect on quality, the cost
//      model's error) is what the live sample measures.
//   4. Exploit: once every arm that is not gated is known, score(a) =
//      mean(a) + exploration * sqrt(ln(N) / n(a)) over the known arms, N the
//      regime's samples on them, n(a) the arm's; the best score wins (ties:
//      the arm nearest the current one, then the higher setting). It is
//      proposed when it is not the setting in force and its score beats the
//      current arm's by at least min_gain (off an arm, or from an arm in
//      force that is gated and unknown: whatever the gain).
//
// A proposal moves every knob whose value differs: the first such knob (in
// params.knobs order) is the proposal, the others its `companions`, judged
// by the guard and sent in the same command. The guard (guard.h) still
// bounds each: its knob bounds, maximum change per decision, cooldown and
// rollback apply as to any other policy.
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
#include <string_view>
#include <vector>

#include "moe/common/status.h"
#include "moe/policies/snapshot.h"

namespace moe::policies {

// One value per knob of LearningPolicyParams::knobs, in that order.
using Setting = std::vector<double>;

struct LearningPolicyParams {
  // The knobs it learns jointly: distinct scalar knobs the controller tunes
  // (LearnableKnob), at least one.
  std::vector<std::string> knobs = {"capacity_factor"};
  // The arms, at least two, distinct, each one finite value per knob: > 0
  // for capacity_factor (0 is unlimited, left alone), >= 0 for the real
  // knobs, whole numbers for the integer ones (>= 1 for top_k). A learner of
  // one knob takes its values in strictly increasing order.
  std::vector<Setting> arms = {{1.0}, {1.25}, {1.5}, {2.0}, {3.0}};
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
  // Exploration gate (rule 3): the most an unexplored arm's pessimistic
  // drop rate may be for it to be tried live; in [0, 1], 1 = no gate.
  double explore_max_drop_rate = 0.05;
  // ... that drop rate is this quantile from below of the per-step rates
  // (0.9: nearly the worst step); in [0, 1] ...
  double explore_quantile = 0.9;
  // ... over the newest this many steps with demand; >= 1.
  uint64_t explore_lookback_steps = 16;
};

// Checks the parameters' ranges and ordering; the message names the field.
Status Validate(const LearningPolicyParams& params);

// Whether the learner may learn `knob`: a scalar knob of the knob table
// (knobs.h) of integer or real kind, with the guard's limits.
bool LearnableKnob(std::string_view knob);

// Every combination of one value per knob, the first knob varying slowest:
// GridOf({{1, 2}, {6, 8}}) = {1, 6}, {1, 8}, {2, 6}, {2, 8}. Empty when any
// knob has no value.
std::vector<Setting> GridOf(const std::vector<std::vector<double>>& values_per_knob);

// The knobs' names joined by ",", e.g. "capacity_factor,top_k": the name a
// learner's samples are stored and selected under (a one-knob learner's is
// the knob's name).
std::string KnobsName(const std::vector<std::string>& knobs);

// A setting as logs and reasons show it: "capacity_factor 2" for one knob,
// "capacity_factor 2, top_k 6" for more (each value as KnobSpec::Format).
std::string SettingText(const std::vector<std::string>& knobs, const Setting& setting);

// The imbalance a regime is bucketed by: snapshot.demand_max_over_mean when
// the engine reports demand, else the served snapshot.max_over_mean.
double DemandImbalance(const EngineSnapshot& snapshot);

// The regime of a snapshot, e.g. "imbalance 1 of 3, tokens 0 of 1": bucket b
// of edges e is the number of edges <= value (a value equal to an edge goes to
// the upper bucket; NaN to bucket 0), out of e.size() + 1 buckets. Stable
// text: it is stored in the audit log and compared back only by equality.
std::string RegimeOf(const EngineSnapshot& snapshot, const LearningPolicyParams& params);

// The setting in force in a snapshot: each knob's value in snapshot.knobs;
// NaN for a knob the table lacks.
Setting SettingInForce(const EngineSnapshot& snapshot, const LearningPolicyParams& params);

// Index of the arm nearest to `setting` (the distance of rule 2 above; ties:
// the lower index; a NaN value counts as the largest distance for its knob).
// Precondition: params.arms is not empty.
size_t NearestArm(const Setting& setting, const LearningPolicyParams& params);

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
// ValueKey of every value.
Setting SettingKey(const Setting& setting);

// What the policy has learnt: per regime (RegimeOf's text), per setting in
// force (SettingKey), the outcomes measured. A regime or setting missing from
// the map has no samples. `samples` counts every call of Learn that was
// recorded.
struct LearningState {
  std::map<std::string, std::map<Setting, ArmStats>> regimes;
  uint64_t samples = 0;
};

// The statistics of each arm of params.arms in `regime`, in order (zeros
// where none were learnt).
std::vector<ArmStats> ArmStatsOf(const std::string& regime, const LearningPolicyParams& params,
                                 const LearningState& state);

// Records one measured outcome: `reward` of the steps that ran with
// `applied` (one value per knob) in `regime`, under SettingKey(applied),
// whether or not it is an arm. A non-finite reward or value, or a setting of
// another size than params.knobs, is not recorded.
// Precondition: state != nullptr.
void Learn(const std::string& regime, const Setting& applied, double reward,
           const LearningPolicyParams& params, LearningState* state);

// The pessimistic drop rate of `arm` on the snapshot's window, the gate of
// rule 3: PessimisticDropRate (counterfactual_policy.h) at the arm's
// capacity_factor and top_k, a knob the learner does not learn (and any other
// knob of the arm, which demand cannot show) as in force, over the newest
// explore_lookback_steps steps at explore_quantile. nullopt when the window
// has no demand: the gate is then open.
std::optional<double> ExploreDropRate(const EngineSnapshot& snapshot, const Setting& arm,
                                      const LearningPolicyParams& params);

// What a change of the arms (or of the knobs) does to what was learnt, as
// one log line; empty when `before` and `after` have the same knobs and
// arms. Other knobs: "learning: knobs changed from A to B: statistics reset".
// Other arms: "learning: arms changed from [..] to [..]; statistics follow
// their settings: 0.5: new, 1: 3 samples, ...; no longer arms: 3 (2 samples,
// kept)" (a joint setting is written "(2, 6)").
std::string ArmsChange(const LearningPolicyParams& before, const LearningPolicyParams& after,
                       const LearningState& state);

// Proposes a move to another arm (policy "learning", layer -1): the first
// knob of params.knobs whose value differs is the proposal (`knob`, `current`
// its value in force, `value` the arm's), every other differing knob one of
// its `companions` (same policy and reason). Nothing when the arm is the
// setting in force. `reason` names the regime, whether it explores or
// exploits, and the chosen and current arms' settings, mean rewards and
// samples. Pure. Precondition: Validate(params).ok().
std::optional<Proposal> ProposeLearning(const EngineSnapshot& snapshot,
                                        const LearningPolicyParams& params,
                                        const LearningState& state);

}  // namespace moe::policies

#endif  // MOE_POLICIES_LEARNING_POLICY_H_
