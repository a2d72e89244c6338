// One MoE layer on a backend: weights in backend memory and the forward pass.
//
// A step of a layer is two calls. Forward() enqueues the layer's work on the
// backend and returns; with device routing and the capacity layout it never
// waits for the backend. Finish() runs once the backend has finished that work
// (after Synchronize()) and turns the layer's marks and routing counters into
// LayerStats. Between the two, other layers may be enqueued, except when the
// quality probe runs: it reads the layer's workspace, so Finish() must come
// before the next layer's Forward().

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

// Scratch buffers shared by all layers of an engine; grown on demand. Only
// the layer being enqueued uses them (the backend runs work in order).
struct LayerWorkspace {
  int capacity_tokens = 0;                     // tokens the buffers hold
  int capacity_k = 0;                          // top_k the per-pair buffers hold
  int capacity_rows = 0;                       // permutation rows the row buffers hold
  std::unique_ptr<BackendBuffer> x_norm;       // [T, H]
  std::unique_ptr<BackendBuffer> logits;       // [T, E]
  std::unique_ptr<BackendBuffer> scores;       // [T, E]
  std::unique_ptr<BackendBuffer> accum;        // [T, H]
  std::unique_ptr<BackendBuffer> chosen;       // [T * K] int32 (device routing)
  std::unique_ptr<BackendBuffer> pair_slot;    // [T * K] int32 (device routing)
  std::unique_ptr<BackendBuffer> pair_weight;  // [T * K] (device routing)
  std::unique_ptr<BackendBuffer> routed_in;    // [rows, H]
  std::unique_ptr<BackendBuffer> routed_out;   // [rows, H]
  std::unique_ptr<BackendBuffer> rows;         // [rows] int32
  std::unique_ptr<BackendBuffer> weights;      // [rows]
  std::unique_ptr<BackendBuffer> ffn;          // ExpertWorkspaceFloats(T, max F, H)
  std::vector<float> host_scores;              // [T, E]
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
  // Device routing's counters of this layer (MoeLayer::CounterEntries()
  // entries): in backend memory, and the host memory the engine copies them
  // into (valid in Finish()).
  uint32_t* counters = nullptr;
  uint32_t* host_counters = nullptr;
};

class MoeLayer {
 public:
  // Uploads the layer's weights into the physical slots of the initial
  // placement (options.knobs.phy2log; the first replica of an expert from the
  // host, its other replicas by a Backend::Copy) and the device copies of the
  // initial knobs.
  static Result<std::unique_ptr<MoeLayer>> Create(Backend* backend, const Options& options,
                                                  uint32_t layer);

  // Makes the slots hold `knobs.phy2log` (empty = default placement) and the
  // backend copies of the placement and expert bias match `knobs`. A slot
  // whose expert changes gets a Backend::Copy of that expert's weights from a
  // slot that keeps it, or, when every old holder changes too (a swap), from
  // a staging copy taken first; no per-expert master copy is kept. Returns the
  // changed slots in ascending order. Call at a step boundary; the caller
  // synchronizes before timing the copies.
  Result<std::vector<uint32_t>> ApplyKnobs(const Knobs& knobs);

  // Bytes of one routed expert's weights (gate_up + down).
  size_t ExpertBytes() const;

  // Enqueues out[T, H] = x + MoE(RMSNorm(x)); `x` and `out` are backend memory
  // and must not alias. `ctx` must stay valid until Finish().
  Status Forward(const float* x, const LayerContext& ctx, LayerWorkspace* ws, float* out);

  // Fills `stats` for the last Forward(); the backend must have finished it.
  Status Finish(const LayerContext& ctx, LayerWorkspace* ws, LayerStats* stats);

  // Whether Forward(ctx) routes on the device (Options::routing).
  bool RoutesOnDevice(const LayerContext& ctx) const;
  // Whether the last Forward() routed on the device (its counters must reach
  // LayerContext::host_counters before Finish()).
  bool routed_on_device() const { return pending_.on_device; }

  // Entries of one layer's device routing counters (for any top_k).
  static size_t CounterEntries(const Options& options);

 private:
  MoeLayer(Backend* backend, const Options& options, uint32_t layer)
      : backend_(backend), options_(options), layer_(layer) {}
  Status RouteOnHost(const LayerContext& ctx, LayerWorkspace* ws);
  Status RouteOnDevice(const LayerContext& ctx, LayerWorkspace* ws);
  Status Probe(const LayerContext& ctx, const RoutingPlan& plan, LayerWorkspace* ws,
               LayerStats* stats);
  Status Record(BackendMark* mark) { return backend_->RecordMark(mark); }
  ExpertWeights Expert(uint32_t e) const;  // logical expert e (its first replica)
  ExpertWeights Slot(uint32_t s) const;    // physical slot s
  ExpertWeights Shared() const;
  // (Re)writes slot s's packed copy from its row-major weights, if the backend packs.
  Status PackSlot(uint32_t s);

  Backend* backend_;
  const Options& options_;
  uint32_t layer_;
  std::unique_ptr<BackendBuffer> norm_;
  std::unique_ptr<BackendBuffer> gate_;
  // Per physical slot: its weights and the logical expert it holds.
  std::vector<std::unique_ptr<BackendBuffer>> slot_gate_up_;  // [replicas]
  std::vector<std::unique_ptr<BackendBuffer>> slot_down_;     // [replicas]
  std::vector<uint32_t> slot_expert_;                         // [replicas]
  // Backend-packed copies (Backend::PackExpert), when the backend packs.
  std::vector<std::unique_ptr<BackendBuffer>> slot_packed_;  // [replicas] or empty
  std::unique_ptr<BackendBuffer> shared_gate_up_;
  std::unique_ptr<BackendBuffer> shared_down_;
  std::unique_ptr<BackendBuffer> shared_packed_;  // or null
  std::unique_ptr<BackendBuffer> probe_in_;       // [probe pairs, H]
  std::unique_ptr<BackendBuffer> probe_out_;      // [probe pairs, H]
  std::unique_ptr<BackendBuffer> probe_rows_;     // [probe pairs] int32

  // Backend copies of the knobs device routing reads.
  std::unique_ptr<BackendBuffer> phy2log_;  // [replicas] int32
  std::unique_ptr<BackendBuffer> bias_;     // [E]
  std::vector<float> bias_host_;            // what bias_ holds (empty: none)
  bool bias_valid_ = false;                 // bias_host_ describes bias_

  // Marks of a step: router start/end, dispatch end, each device's end,
  // shared experts' end, combine end.
  std::unique_ptr<BackendMark> mark_start_, mark_routed_, mark_dispatched_;
  std::vector<std::unique_ptr<BackendMark>> mark_device_;  // [D]
  std::unique_ptr<BackendMark> mark_shared_, mark_combined_;

  // The step in flight between Forward() and Finish().
  struct Pending {
    bool on_device = false;
    uint32_t host_waits = 0;
    std::vector<int> offsets;  // [replicas + 1] rows of each slot in the permutation
    RoutingPlan plan;          // host routing: the whole plan; device: filled by Finish()
  };
  Pending pending_;
};

// Grows `ws` to hold `num_tokens` tokens with `top_k` slots each and `rows`
// permutation rows.
Status EnsureWorkspace(Backend* backend, const Options& options, int num_tokens, int top_k,
                       int rows, LayerWorkspace* ws);

}  // namespace moe::engine

#endif  // MOE_ENGINE_SRC_MOE_LAYER_H_
