// The telemetry schema as plain C++ values.
//
// These structs mirror telemetry/moe_telemetry.proto one to one. Engines fill
// them, the codec (codec.h) turns them into versioned protobuf bytes and back,
// and the controller, policies and storage consume them without ever seeing
// protobuf or ZeroMQ. This header is the `moe_telemetry_types` target, which
// depends on nothing but the standard library.
//
// Every struct compares with == field by field (exact, doubles included).
//
// Units: times are nanoseconds since the Unix epoch (int64); durations inside a
// step are microseconds (double). Counts are token-slots unless said otherwise
// (a token routed to K experts makes K token-slots).

#ifndef MOE_TELEMETRY_TYPES_H_
#define MOE_TELEMETRY_TYPES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moe::telemetry {

// Version of the wire schema. A decoder accepts messages whose major version
// equals kSchemaVersion and ignores fields it does not know.
inline constexpr uint32_t kSchemaVersion = 1;

enum class OverflowPolicy : uint8_t {
  kDrop = 0,     // the slot takes the backup path (shared experts only)
  kReroute = 1,  // the next shortlisted expert with room
  kReplica = 2,  // a less loaded replica of the same expert
};

// What the capacity ceil(cf * T * top_k / E) is the capacity of.
enum class CapacityScope : uint8_t {
  kExpert = 0,  // one logical expert, split over its replicas
  kSlot = 1,    // each physical slot: a replica adds room
};

enum class ScoreFunction : uint8_t { kSoftmax = 0, kSigmoid = 1 };

// Timing of one layer in one step, microseconds.
struct LayerTiming {
  double router_us = 0;                  // gate GEMM + scoring + selection
  double dispatch_us = 0;                // capacity, permutation, gather
  double expert_us = 0;                  // max over devices of expert compute
  double combine_us = 0;                 // weighted scatter-add + shared experts
  double all_to_all_us = 0;              // modelled (or measured) all-to-all time
  double total_us = 0;                   // critical path of the layer
  std::vector<double> device_expert_us;  // expert compute per device

  friend bool operator==(const LayerTiming&, const LayerTiming&) = default;
};

// What one MoE layer did in one step.
struct LayerRecord {
  uint32_t layer = 0;
  uint32_t num_tokens = 0;              // tokens entering the layer
  uint64_t num_token_slots = 0;         // token-slots requested (sum of K used per token)
  std::vector<uint32_t> expert_tokens;  // routed token-slots per logical expert [E]
  std::vector<uint32_t> slot_tokens;    // routed token-slots per physical slot [replicas]
  std::vector<uint32_t> device_tokens;  // routed token-slots per device [D]
  uint32_t overflowed = 0;              // token-slots that found their first choice full
  uint32_t rerouted = 0;                // of those, served by another expert or replica
  uint32_t dropped = 0;                 // of those, sent to the backup path
  std::vector<uint32_t> k_histogram;    // k_histogram[k] = tokens that used k experts
  double router_entropy = 0;            // mean entropy (nats) of the routing distribution
  double gate_mass = 0;                 // mean gate mass covered by the chosen experts, 0..1
  // Relative error of the layer output against the unconstrained computation on
  // the sampled tokens; absent when not sampled this step.
  std::optional<double> quality_error;
  LayerTiming timing;
  // Token-slots that chose each expert, before capacity [E]; empty when the
  // engine does not report it (then expert_tokens is all there is).
  std::vector<uint32_t> expert_demand;
  uint32_t capacity = 0;          // per-expert capacity this step; 0 = unlimited
  bool routed_on_device = false;  // the routing pipeline ran on the device
  uint32_t expert_rows = 0;       // rows the routed expert GEMMs ran, padding included
  uint32_t host_waits = 0;        // host waits for the device inside the layer

  friend bool operator==(const LayerRecord&, const LayerRecord&) = default;
};

// What one engine step did: the unit of telemetry.
struct StepRecord {
  std::string engine_id;
  uint64_t seq = 0;                // per-engine message sequence number, +1 per message
  uint64_t step = 0;               // engine step counter
  int64_t timestamp_ns = 0;        // when the step finished
  uint64_t epoch = 0;              // epoch of the settings in force during the step
  bool timing_on_device = false;   // true: times measured on real devices; false: modelled
  double step_us = 0;              // wall time of the whole step
  uint64_t telemetry_dropped = 0;  // messages the engine dropped so far (queue full)
  std::vector<LayerRecord> layers;
  // A placement change applied at the start of this step (all 0 when none).
  uint64_t placement_moved_bytes = 0;  // expert weight bytes copied into changed slots
  double placement_copy_us = 0;        // measured on-device copy time
  double placement_move_us = 0;        // modelled network transfer time
  // Lockstep: the engine runs its next step only after the controller's Sync
  // of this one (or a timeout).
  bool await_sync = false;

  friend bool operator==(const StepRecord&, const StepRecord&) = default;
};

// A set of knob values; an absent field means "leave as is".
struct KnobSet {
  std::optional<uint32_t> top_k;
  std::optional<double> top_p;  // 0 = dynamic K off
  std::optional<uint32_t> k_min;
  std::optional<double> capacity_factor;  // 0 = unlimited (dropless)
  std::optional<OverflowPolicy> overflow_policy;
  std::optional<double> noise_std;
  std::optional<uint32_t> shortlist;
  std::optional<double> availability_weight;
  std::optional<std::vector<float>> expert_bias;  // [E]
  std::optional<std::vector<uint32_t>> phy2log;   // [replicas]
  std::optional<CapacityScope> capacity_scope;

  bool empty() const {
    return !top_k && !top_p && !k_min && !capacity_factor && !overflow_policy && !noise_std &&
           !shortlist && !availability_weight && !expert_bias && !phy2log && !capacity_scope;
  }

  friend bool operator==(const KnobSet&, const KnobSet&) = default;
};

// Per-layer override of a KnobSet.
struct LayerKnobs {
  uint32_t layer = 0;
  KnobSet knobs;

  friend bool operator==(const LayerKnobs&, const LayerKnobs&) = default;
};

// Controller -> engine: apply these settings at the next step boundary under
// `epoch`. Epochs increase monotonically per engine.
struct Command {
  std::string engine_id;
  uint64_t epoch = 0;
  int64_t issued_ns = 0;
  KnobSet knobs;                        // applies to every layer
  std::vector<LayerKnobs> layer_knobs;  // overrides for single layers
  std::string reason;                   // short text for logs

  friend bool operator==(const Command&, const Command&) = default;
};

// Controller -> engine: every message of the engine through `step` is taken
// in and acted on; a Command decided on them was sent before this. The
// answer to a StepRecord with `await_sync`.
struct Sync {
  std::string engine_id;
  uint64_t step = 0;
  int64_t timestamp_ns = 0;

  friend bool operator==(const Sync&, const Sync&) = default;
};

// Engine -> controller: the outcome of a Command.
struct Ack {
  std::string engine_id;
  uint64_t epoch = 0;
  bool applied = false;
  std::string error;             // why not applied (when applied == false)
  uint64_t applied_at_step = 0;  // first step that runs under `epoch`
  int64_t timestamp_ns = 0;

  friend bool operator==(const Ack&, const Ack&) = default;
};

// Engine -> controller, once at start (and again after reconnects): who the
// engine is and what it runs.
struct Hello {
  std::string engine_id;
  uint64_t seq = 0;  // shares the engine's telemetry sequence
  uint32_t schema_version = kSchemaVersion;
  std::string backend;  // "cpu", "cuda"
  uint32_t num_layers = 0;
  uint32_t num_experts = 0;  // routed experts per layer
  uint32_t num_shared_experts = 0;
  uint32_t num_replicas = 0;  // physical slots per layer
  uint32_t num_devices = 0;
  uint32_t hidden = 0;
  uint64_t epoch = 0;  // epoch in force
  KnobSet knobs;       // settings in force (every field present)
  int64_t timestamp_ns = 0;
  // Layers whose settings differ from `knobs` (e.g. a per-layer expert bias):
  // only the differing fields are present.
  std::vector<LayerKnobs> layer_knobs;

  friend bool operator==(const Hello&, const Hello&) = default;
};

// Engine -> controller when there is nothing else to say, so silence can be
// told apart from a dead engine.
struct Heartbeat {
  std::string engine_id;
  uint64_t seq = 0;
  uint64_t step = 0;
  uint64_t epoch = 0;
  int64_t timestamp_ns = 0;

  friend bool operator==(const Heartbeat&, const Heartbeat&) = default;
};

}  // namespace moe::telemetry

#endif  // MOE_TELEMETRY_TYPES_H_
