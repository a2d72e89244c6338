// Single-mechanism balancing as serving engines ship it today, as policies,
// so the closed-loop benchmark (`moectl bench closed-loop`) can run each one
// alone under the same controller, guard and reward as moectl's own:
//
//   - dynamic capacity (Tutel-style): capacity follows what the demand
//     needs: the capacity factor is set to the largest needed one of the
//     recent steps (the hottest expert's demand over the mean demand per
//     expert, over every layer), rounded up to `step`, plus `margin`.
//   - periodic EPLB (vLLM/SGLang-style): every `period_steps` steps under
//     the placement in force, every layer is re-planned from scratch by EPLB
//     (planner.h PlanEplb) from the window's mean demand per expert.
//
// Pure functions of (snapshot, parameters).

#ifndef MOE_POLICIES_BASELINE_POLICIES_H_
#define MOE_POLICIES_BASELINE_POLICIES_H_

#include <cstdint>
#include <optional>

#include "moe/common/status.h"
#include "moe/policies/snapshot.h"

namespace moe::policies {

struct DynamicCapacityParams {
  uint64_t lookback_steps = 4;  // newest steps whose need is taken (>= 1)
  double margin = 0.0;          // added to the needed factor (>= 0)
  double step = 0.05;           // rounding up of the factor (> 0)
  double min_change = 0.05;     // smaller changes are not proposed (>= 0)
};

Status Validate(const DynamicCapacityParams& params);

// Policy "dynamic_capacity", knob "capacity_factor". Nothing without demand.
std::optional<Proposal> ProposeDynamicCapacity(const EngineSnapshot& snapshot,
                                               const DynamicCapacityParams& params);

struct PeriodicEplbParams {
  uint64_t period_steps = 50;  // steps under the placement in force before re-planning (>= 1)
};

Status Validate(const PeriodicEplbParams& params);

// Policy "eplb", knob "phy2log": every layer with demand re-planned by EPLB
// (global mode), `current_placements`/`placements` spelled out per layer;
// `current`/`value` the mean planned device max-over-mean before and after.
// A layer whose plan would not lower its device max-over-mean keeps its
// placement. Nothing on a single device, without demand, or when no layer
// changes.
std::optional<Proposal> ProposePeriodicEplb(const EngineSnapshot& snapshot,
                                            const PeriodicEplbParams& params);

}  // namespace moe::policies

#endif  // MOE_POLICIES_BASELINE_POLICIES_H_
