// One MoE layer on a backend: weights in backend memory and the forward pass.

#ifndef MOE_ENGINE_SRC_MOE_LAYER_H_
#define MOE_ENGINE_SRC_MOE_LAYER_H_

#include <memory>
#include <vector>

#include "moe/engine/backend.h"
#include "moe/engine/model.h"
#include "moe/engine/options.h"
#include "moe/engine/router.h"
#include "moe/engine/stats.h"

namespace moe::engine {

// Scratch buffers shared by all layers of an engine; grown on demand.
struct LayerWorkspace {
  int capacity_tokens = 0;                    // tokens the buffers hold
  int capacity_k = 0;                         // top_k the routed buffers hold
  std::unique_ptr<BackendBuffer> x_norm;      // [T, H]
  std::unique_ptr<BackendBuffer> logits;      // [T, E]
  std::unique_ptr<BackendBuffer> scores;      // [T, E]
  std::unique_ptr<BackendBuffer> accum;       // [T, H]
  std::unique_ptr<BackendBuffer> routed_in;   // [T * K, H]
  std::unique_ptr<BackendBuffer> routed_out;  // [T * K, H]
  std::unique_ptr<BackendBuffer> rows;        // [T * K] int32
  std::unique_ptr<BackendBuffer> weights;     // [T * K]
  std::unique_ptr<BackendBuffer> ffn;         // ExpertWorkspaceFloats(T, max F, H)
  std::vector<float> host_scores;             // [T, E]
};

struct LayerContext {
  int num_tokens = 0;
  const Knobs* knobs = nullptr;
  uint64_t seed = 0;                                     // routing noise
  const std::vector<double>* device_slowdown = nullptr;  // [D] or empty
  bool probe = false;                                    // run the quality probe
  uint64_t probe_seed = 0;
  const ExpertSelection* forced = nullptr;  // replay: recorded selection (validated)
  bool record_selection = false;            // fill LayerStats::selection
};

class MoeLayer {
 public:
  // Uploads the layer's weights and fills every physical slot with a copy of
  // its logical expert under the initial placement (options.knobs.phy2log).
  static Result<std::unique_ptr<MoeLayer>> Create(Backend* backend, const Options& options,
                                                  uint32_t layer);

  // Makes the slots hold `phy2log` (empty = default placement): enqueues a
  // Backend::Copy of the logical expert's weights into every slot whose expert
  // changes and returns those slots in ascending order. The caller
  // synchronizes before timing or using them.
  Result<std::vector<uint32_t>> ApplyPlacement(const std::vector<uint32_t>& phy2log);

  // Bytes of one routed expert's weights (gate_up + down).
  size_t ExpertBytes() const;

  // out[T, H] = x + MoE(RMSNorm(x)); `x` and `out` are backend memory and
  // must not alias.
  Status Forward(const float* x, const LayerContext& ctx, LayerWorkspace* ws, float* out,
                 LayerStats* stats);

 private:
  MoeLayer(Backend* backend, const Options& options, uint32_t layer)
      : backend_(backend), options_(options), layer_(layer) {}
  Status Probe(const LayerContext& ctx, const RoutingPlan& plan, LayerWorkspace* ws,
               LayerStats* stats);
  ExpertWeights Expert(uint32_t e) const;  // logical expert e (the master copy)
  ExpertWeights Slot(uint32_t s) const;    // physical slot s (its own copy)
  ExpertWeights Shared() const;

  Backend* backend_;
  const Options& options_;
  uint32_t layer_;
  std::unique_ptr<BackendBuffer> norm_;
  std::unique_ptr<BackendBuffer> gate_;
  std::vector<std::unique_ptr<BackendBuffer>> gate_up_;  // [E] masters
  std::vector<std::unique_ptr<BackendBuffer>> down_;     // [E] masters
  // Per physical slot: its copy of the weights and the logical expert it holds.
  std::vector<std::unique_ptr<BackendBuffer>> slot_gate_up_;  // [replicas]
  std::vector<std::unique_ptr<BackendBuffer>> slot_down_;     // [replicas]
  std::vector<uint32_t> slot_expert_;                         // [replicas]
  std::unique_ptr<BackendBuffer> shared_gate_up_;
  std::unique_ptr<BackendBuffer> shared_down_;
  std::unique_ptr<BackendBuffer> probe_in_;   // [probe pairs, H]
  std::unique_ptr<BackendBuffer> probe_out_;  // [probe pairs, H]
};

// Grows `ws` to hold `num_tokens` tokens with `top_k` slots each.
Status EnsureWorkspace(Backend* backend, const Options& options, int num_tokens, int top_k,
                       LayerWorkspace* ws);

}  // namespace moe::engine

#endif  // MOE_ENGINE_SRC_MOE_LAYER_H_
