// Engine: an L-layer MoE model run one step at a time on a Backend.
//
// Each layer: RMSNorm -> router (gate GEMM, scoring, routing pipeline in
// router.h) -> shared experts on every token + routed experts on the tokens
// grouped by physical slot, one grouped SwiGLU per virtual device -> weighted
// combine -> residual. Each step returns StepStats (stats.h).
//
// Knobs change only at step boundaries: Submit() validates a KnobUpdate and
// queues it; the next Step() applies every queued update in order before it
// computes anything, and reports the newest epoch in its StepStats.
//
// Ownership: the engine owns its backend and all weights.
// Thread safety: Step() and the accessors belong to one thread; Submit() may be
// called from any thread, also while a step runs.

#ifndef MOE_ENGINE_ENGINE_H_
#define MOE_ENGINE_ENGINE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "moe/common/status.h"
#include "moe/engine/backend.h"
#include "moe/engine/options.h"
#include "moe/engine/router.h"
#include "moe/engine/stats.h"

namespace moe::engine {

// One step's input.
struct StepInput {
  const float* hidden = nullptr;        // [num_tokens, H] host memory
  int num_tokens = 0;                   // >= 1
  std::vector<double> device_slowdown;  // [D] factor on each device's expert time; empty = 1
  // Replay: per layer, a recorded selection that replaces the router's (see
  // router.h, "Replay"); a null entry, or a layer past the end, is routed by
  // the router. Borrowed for the call; each must have num_tokens tokens.
  std::vector<const ExpertSelection*> routing = {};
  bool record_selection = false;  // fill LayerStats::selection (for recording a trace)
};

class Engine {
 public:
  // Validates `options`, checks the backend supports what they need, and
  // uploads the seeded weights. Errors: kInvalidArgument, kUnsupported.
  static Result<std::unique_ptr<Engine>> Create(const Options& options,
                                                std::unique_ptr<Backend> backend);
  virtual ~Engine() = default;

  // Runs every layer over `input`. When `output` is non-null it receives the
  // final hidden states [num_tokens, H]. Errors: kInvalidArgument for a bad
  // input (no tokens, a replayed selection that does not fit the model).
  virtual Result<StepStats> Step(const StepInput& input, std::vector<float>* output = nullptr) = 0;

  // Validates `update` against the knobs it will apply to (those in force plus
  // updates already queued) and queues it. Returns the step at which it will
  // apply (the next step to start). Errors: kInvalidArgument for a bad knob,
  // kOutOfRange for a value outside Options::command_bounds or an epoch more
  // than command_bounds.max_epoch_step past the newest, kFailedPrecondition
  // when the epoch does not exceed the newest one.
  virtual Result<uint64_t> Submit(const KnobUpdate& update) = 0;

  virtual const Options& options() const = 0;
  virtual const Backend& backend() const = 0;
  // Knobs in force for `layer` (as of the last step boundary).
  virtual Knobs knobs(uint32_t layer) const = 0;
  virtual uint64_t epoch() const = 0;      // epoch in force
  virtual uint64_t next_step() const = 0;  // the step the next Step() runs
};

}  // namespace moe::engine

#endif  // MOE_ENGINE_ENGINE_H_
