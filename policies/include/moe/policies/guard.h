// Guard: the safety check every proposal passes before it becomes a command.
//
// The guard bounds each knob, limits the change per decision, enforces a
// cooldown per knob and a hysteresis (changes too small to matter are
// rejected), freezes all changes while telemetry is stale or too few steps ran
// under the current epoch, and rolls back a decision whose measured reward fell
// by more than a threshold. Every call returns a verdict with a reason, which
// the controller records as an audit row.
//
// Pure: time comes from the snapshot; the guard's memory (when each knob last
// changed) is a GuardState value the caller keeps per engine.

#ifndef MOE_POLICIES_GUARD_H_
#define MOE_POLICIES_GUARD_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moe/common/status.h"
#include "moe/policies/reward.h"
#include "moe/policies/snapshot.h"

namespace moe::policies {

// The limits of every knob but phy2log (the knob table's KnobSpec::limits
// points here), then the placement's budget and the rules of every knob.
struct GuardParams {
  KnobLimits capacity_factor{0.5, 4.0, 0.5};
  // capacity_factor 0 (unlimited: every token served, as a dropless engine
  // runs) may be proposed and sent ([guard.capacity_factor] unlimited). A
  // finite value moves to it in one decision, whatever max_change says (it
  // is the limit of ever larger capacity), and back to any value within
  // [min, max]. Off: a proposal of 0 is rejected.
  bool unlimited_capacity = false;
  KnobLimits top_k{1, 8, 1};
  KnobLimits noise_std{0, 0.2, 0.02, 0.001};
  KnobLimits expert_bias{-0.1, 0.1, 0.005, 1e-4};
  KnobLimits top_p{0, 1, 1, 0.01};  // 0 (dynamic K off) to 1 in one decision
  KnobLimits k_min{1, 8, 1};
  KnobLimits shortlist{0, 64, 64};  // 0 (off) or candidates >= top_k (the engine checks)
  KnobLimits availability_weight{0, 1, 0.25, 0.01};
  KnobLimits overflow_policy{0, 2, 2};  // wire values: drop 0, reroute 1, replica 2
  KnobLimits capacity_scope{0, 1, 1};   // wire values: expert 0, slot 1
  // Placement (phy2log): at most this many slots change per layer in one
  // decision (the migration budget; a larger proposal is rejected, not cut),
  // and this cooldown (at least cooldown_ms) between placement changes.
  int max_slot_moves = 16;
  int64_t placement_cooldown_ms = 30'000;
  int64_t cooldown_ms = 3000;  // per knob, between accepted changes
  // A capacity_factor raise (or a move to unlimited) skips the cooldown while
  // the epoch in force drops at least this share of its token-slots: more
  // capacity only serves more tokens, and raises cannot oscillate (they end
  // at max or unlimited). 0: never.
  double urgent_drop_rate = 0;
  double hysteresis = 0.02;         // |new - current| below this is rejected
  int64_t stale_after_ms = 3000;    // no telemetry for this long freezes changes
  uint64_t min_steps_in_epoch = 8;  // steps under the epoch in force before the next change
  // Roll back when reward_after < reward_before - max(rollback_threshold *
  // |reward_before|, rollback_min_delta).
  double rollback_threshold = 0.25;
  double rollback_min_delta = 0.02;
};

Status Validate(const GuardParams& params);

// The limits of `knob` (its row's KnobSpec::limits); nullptr for a knob
// without limits (phy2log) or an unknown one.
const KnobLimits* LimitsFor(const std::string& knob, const GuardParams& params);

enum class VerdictKind { kAccepted, kClamped, kRejected };
std::string_view VerdictName(VerdictKind kind);  // "accepted", "clamped", "rejected"

struct Verdict {
  VerdictKind kind = VerdictKind::kRejected;
  double value = 0;                               // the value to apply (accepted/clamped)
  std::vector<std::vector<float>> vectors;        // vector knobs: the vectors to apply
  std::vector<std::vector<uint32_t>> placements;  // phy2log: the placements to apply
  std::string reason;
};

// When each knob of one engine last changed (ns since epoch, from snapshots).
struct GuardState {
  std::map<std::string, int64_t> last_change_ns;
};

// Judges `proposal` against `snapshot`. On acceptance records the change time
// in `state`. Unknown knobs are rejected. A vector knob is clamped element by
// element (bounds, then max_change around the element in force) and rejected
// when no element moves by min_change. A placement is rejected unless every
// layer has num_replicas slots holding ids < num_experts with every expert
// present, at least one slot changes, and no layer changes more than
// max_slot_moves slots.
Verdict Judge(const Proposal& proposal, const EngineSnapshot& snapshot, const GuardParams& params,
              GuardState* state);

// Milliseconds before `knob` may change again under the cooldown that Judge
// applies (the placement cooldown for phy2log); 0 when it may change now.
int64_t CooldownLeftMs(const std::string& knob, int64_t now_ns, const GuardParams& params,
                       const GuardState& state);

// True when a decision's measured reward fell enough to roll it back.
bool ShouldRollBack(double reward_before, double reward_after, const GuardParams& params);

}  // namespace moe::policies

#endif  // MOE_POLICIES_GUARD_H_
