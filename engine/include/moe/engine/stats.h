// What the engine reports after each step: plain values the serving program
// turns into telemetry. Counts are token-slots unless said otherwise (a token
// routed to K experts makes K token-slots); times are microseconds.

#ifndef MOE_ENGINE_STATS_H_
#define MOE_ENGINE_STATS_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "moe/engine/router.h"

namespace moe::engine {

struct LayerStats {
  uint32_t layer = 0;
  uint32_t num_tokens = 0;              // tokens entering the layer
  uint64_t num_token_slots = 0;         // token-slots requested (sum of K used per token)
  std::vector<uint32_t> expert_tokens;  // routed token-slots per logical expert [E]
  std::vector<uint32_t> expert_demand;  // token-slots that chose each expert first [E]
  std::vector<uint32_t> slot_tokens;    // routed token-slots per physical slot [replicas]
  std::vector<uint32_t> device_tokens;  // routed token-slots per device [D]
  uint32_t capacity = 0;                // per-expert capacity this step (0 = unlimited)
  uint32_t overflowed = 0;  // token-slots whose first choice was full (= rerouted + dropped)
  uint32_t rerouted = 0;    // of those, served by another expert or replica
  uint32_t dropped = 0;     // of those, sent to the backup path (shared experts only)
  std::vector<uint32_t> k_histogram;    // [top_k + 1]: tokens that asked for k experts
  double router_entropy = 0;            // mean entropy (nats) of the routing distribution
  double gate_mass = 0;                 // mean normalised score mass of the chosen experts
  std::optional<double> quality_error;  // probe: relative error vs unconstrained routing

  double router_us = 0;      // norm + gate GEMM + scoring + selection
  double dispatch_us = 0;    // capacity, permutation, gather
  double expert_us = 0;      // max over devices of expert compute (with slowdown)
  double combine_us = 0;     // shared experts + weighted scatter-add + residual
  double shared_us = 0;      // of combine_us, the shared experts' FFN
  double all_to_all_us = 0;  // modelled dispatch + combine all-to-all
  double total_us = 0;       // critical path: router + dispatch + expert + a2a + combine
  std::vector<double> device_expert_us;  // [D] expert compute per device (with slowdown)

  bool routed_on_device = false;  // Backend::RouteOnDevice() routed it (Options::routing)
  uint32_t expert_rows = 0;       // rows the routed expert GEMMs ran, capacity padding included
  uint32_t host_waits = 0;        // host waits inside the layer (host routing, counters, probe)

  bool replayed = false;      // the selection came from StepInput::routing (a trace)
  ExpertSelection selection;  // the experts each token chose; only with record_selection
};

struct StepStats {
  uint64_t step = 0;   // 0-based step counter
  uint64_t epoch = 0;  // epoch of the knobs in force during the step
  uint32_t num_tokens = 0;
  double step_us = 0;  // wall time of the whole step (all layers)
  // true: times come from the device's own clock (CUDA events); false: host
  // wall clock around ops that ran synchronously (the CPU backend). Virtual
  // devices run one after another either way.
  bool timing_on_device = false;
  // A placement change applied at the start of this step (0 when none): the
  // expert weight bytes copied into slots whose logical expert changed, summed
  // over layers and devices;
  uint64_t placement_moved_bytes = 0;
  // measured: time of those on-backend copies between two marks (the device's
  // clock on CUDA, read after the step's one wait, so the copies cost no wait
  // of their own; the on-device part of a move; > 0 exactly when bytes moved);
  double placement_copy_us = 0;
  // modelled: the network transfer a real multi-node move would need, the
  // largest device's bytes over the inter-node bandwidth.
  double placement_move_us = 0;
  std::vector<LayerStats> layers;
};

}  // namespace moe::engine

#endif  // MOE_ENGINE_STATS_H_
