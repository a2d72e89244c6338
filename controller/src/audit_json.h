// Audit serialisation: the JSON the decisions and epochs tables record
// (inputs, proposals, commands, outcomes), and a change written into a
// Command. Pure functions.

#ifndef MOE_CONTROLLER_SRC_AUDIT_JSON_H_
#define MOE_CONTROLLER_SRC_AUDIT_JSON_H_

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "engine_state.h"
#include "moe/policies/reward.h"
#include "moe/policies/snapshot.h"
#include "moe/telemetry/types.h"

namespace moe::controller {

// An outcome's figures: steps, drop rate, times, imbalance, capacity factor.
nlohmann::json FiguresJson(const policies::OutcomeFigures& f);

// A scalar knob's value as the audit shows it: an enum by its name, an
// integer knob as an integer, a real as a number.
nlohmann::json KnobJson(const policies::KnobSpec& spec, double value);

// Every scalar knob of `knobs` by name (KnobJson each).
nlohmann::json KnobsJson(const policies::KnobValues& knobs);

// The epochs row of an engine's first Hello: every scalar knob in force by
// name (enums as wire values, as ChangeJson writes them), "source": "engine
// hello".
nlohmann::json HelloEpochJson(const policies::KnobValues& knobs);

// The snapshot a decision was taken on, with its learning regime, as JSON
// text (the decision row's inputs_json). Written straight to text, not
// through a json tree: it runs on the path from snapshot to command, and the
// per-layer figures of 61 layers cost ~150 us as a tree on a shared core.
// Non-finite figures are written as null, as nlohmann::json dumps them.
std::string SnapshotJsonText(const policies::EngineSnapshot& s, const std::string& regime);

// Writes `change` into `command`; a vector knob goes to the layers whose
// vector differs from `in_force` ([layer][element]), a placement to the
// layers whose placement differs from `placed`.
void AddChange(const KnobChange& change, const std::vector<std::vector<float>>& in_force,
               const std::vector<std::vector<uint32_t>>& placed, telemetry::Command* command);

// A placement change: per changed layer, {slot: [expert before, after]}.
nlohmann::json PlacementChangesJson(const std::vector<std::vector<uint32_t>>& before,
                                    const std::vector<std::vector<uint32_t>>& after);

// PlacementChangesJson(before, after).dump(), written directly: the same
// text (layers and slots as decimal keys in string order), without building
// the tree (~0.3 ms for a plan of 61 layers at 8 moves each).
std::string PlacementChangesText(const std::vector<std::vector<uint32_t>>& before,
                                 const std::vector<std::vector<uint32_t>>& after);

// The text `object` (an object without `key`) would dump with `member_text`
// (JSON text, e.g. PlacementChangesText's) set under `key`: the members in
// key order, as nlohmann::json::dump() writes them.
std::string DumpWithMember(const nlohmann::json& object, const std::string& key,
                           std::string_view member_text);

// A vector change: per changed layer, {element: [before, after]}.
nlohmann::json VectorChangesJson(const std::vector<std::vector<float>>& before,
                                 const std::vector<std::vector<float>>& after);

// The change as the epochs table and command_json record it.
nlohmann::json ChangeJson(const KnobChange& change, const std::vector<std::vector<float>>& before,
                          const std::vector<std::vector<uint32_t>>& placed);

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_AUDIT_JSON_H_
