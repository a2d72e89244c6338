// The readable forms of `moectl explain ID` (table and CSV; JSON is the
// audit record itself): a header block about the decision, and its change
// element by element.

#ifndef MOE_APPS_MOECTL_EXPLAIN_VIEW_H_
#define MOE_APPS_MOECTL_EXPLAIN_VIEW_H_

#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "moe/storage/rows.h"
#include "output.h"

namespace moe::cli {

// The decision's figures as (label, text) pairs, in reading order: id,
// engine, time, policy, knob, layer, proposal reason, verdict (with the
// guard's reason), status, epoch, ack, predicted gain, reward before/after.
std::vector<std::pair<std::string, std::string>> ExplainHeader(const storage::DecisionRow& d);

// The change, one row per element: columns knob, layer, index, from,
// proposed, to. A scalar knob (capacity_factor, top_k, noise_std) is one
// row with no index; a vector knob (expert_bias: proposal_json's "changes",
// command_json's knob entry, both {layer: {expert: [before, after]}}) and a
// placement (phy2log: {layer: {slot: [expert before, after]}}) have a row
// per element that changed, by layer then index. "proposed" is what the
// policy asked for, "to" what was sent (or, for an advisory decision, would
// have been); "to" is empty when the guard rejected it.
TableData ExplainChanges(const storage::DecisionRow& d);

// Writes the header block, aligned, one "label: text" line each.
void PrintExplainHeader(const std::vector<std::pair<std::string, std::string>>& header,
                        std::ostream& out);

}  // namespace moe::cli

#endif  // MOE_APPS_MOECTL_EXPLAIN_VIEW_H_
