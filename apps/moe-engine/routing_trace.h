// Routing traces: the experts every token chose, per step and layer, in JSON
// Lines, so a routing recorded here or exported by another engine can drive
// moe-engine (docs/engine.md, "Routing traces").
//
// Format (one JSON object per line, UTF-8, blank lines ignored):
//   line 1, the header:
//     {"format": "moectl-routing-trace", "version": 1, "num_layers": 4,
//      "num_experts": 16, "top_k": 2, "source": "free text"}
//     ("top_k" and "source" are optional and informational)
//   then one record per (step, layer):
//     {"step": 0, "layer": 0, "experts": [[3, 7], [1, 2], ...]}
//     "experts" holds one list per token: its expert ids in rank order (best
//     first), 1 or more, distinct, each in [0, num_experts).
// Rules: steps start at 0 and go up by at most 1 from record to record; a
// layer appears at most once per step and is < num_layers; every record of a
// step has the same number of tokens (>= 1). A layer absent from a step is
// routed by the router. Unknown keys are errors.
//
// Thread safety: a loaded RoutingTrace is immutable; a TraceRecorder belongs
// to one thread.

#ifndef MOE_APPS_MOE_ENGINE_ROUTING_TRACE_H_
#define MOE_APPS_MOE_ENGINE_ROUTING_TRACE_H_

#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "moe/common/status.h"
#include "moe/engine/options.h"
#include "moe/engine/router.h"
#include "moe/engine/stats.h"

namespace moe::engine_app {

inline constexpr char kTraceFormat[] = "moectl-routing-trace";
inline constexpr int kTraceVersion = 1;

struct TraceHeader {
  uint32_t num_layers = 0;
  uint32_t num_experts = 0;
  uint32_t top_k = 0;  // informational (0 = not given)
  std::string source;  // informational
};

// One step of a trace.
struct TraceStep {
  uint32_t num_tokens = 0;
  std::vector<std::optional<engine::ExpertSelection>> layers;  // [num_layers]; empty = router
};

struct RoutingTrace {
  std::string path;
  TraceHeader header;
  std::vector<TraceStep> steps;

  // The trace step that drives engine step `step`: step % steps.size() when
  // `loop`, else nullptr past the end.
  const TraceStep* StepFor(uint64_t step, bool loop) const;
};

// The per-layer selections of `step` as StepInput::routing wants them.
std::vector<const engine::ExpertSelection*> RoutingOf(const TraceStep& step);

// Reads and validates a trace. Errors (kInvalidArgument, kNotFound) read
// "FILE:LINE: field "F": what is wrong; how to fix it".
Result<RoutingTrace> LoadRoutingTrace(const std::string& path);

// kInvalidArgument unless the trace fits the model (same number of experts,
// no more layers than the model has).
Status CheckTraceFitsModel(const RoutingTrace& trace, const engine::Options& options);

// Writes a trace while the engine runs: the header on Open(), then one record
// per layer for each step appended (from LayerStats::selection, so run the
// engine with StepInput::record_selection).
class TraceRecorder {
 public:
  static Result<std::unique_ptr<TraceRecorder>> Open(const std::string& path,
                                                     const TraceHeader& header);
  Status Append(const engine::StepStats& stats);
  // Flushes and closes; further calls fail.
  Status Close();
  uint64_t num_steps() const { return num_steps_; }

 private:
  explicit TraceRecorder(std::string path) : path_(std::move(path)) {}
  std::string path_;
  std::ofstream out_;
  uint64_t num_steps_ = 0;
};

}  // namespace moe::engine_app

#endif  // MOE_APPS_MOE_ENGINE_ROUTING_TRACE_H_
