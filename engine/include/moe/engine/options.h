// Options of the MoE engine: the model shape, the expert-parallel layout and
// the runtime knobs. Plain structs with a default and a comment per field; the
// moe-engine program fills them from TOML, tests fill them directly.

#ifndef MOE_ENGINE_OPTIONS_H_
#define MOE_ENGINE_OPTIONS_H_

#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "moe/common/status.h"
#include "moe/engine/backend.h"

namespace moe::engine {

// What a token-slot over its expert's capacity gets.
enum class OverflowPolicy {
  kDrop,     // the backup path: shared experts only for that slot
  kReroute,  // the next candidate expert (shortlist order) that has room
  kReplica,  // local replica first; when full, another replica with room
};

// What the capacity C = ceil(cf * T * top_k / E) is the capacity of.
enum class CapacityScope {
  kExpert,  // one logical expert: its C is split over its replicas (a replica adds no room)
  kSlot,    // each physical slot: an expert with r replicas takes up to r * C (each replica's
            // device has its own buffer, as in expert-parallel serving)
};

// Where a layer's routing pipeline runs.
enum class RoutingMode {
  kAuto,    // device when the backend can and the step is covered (below); else host
  kHost,    // scores are downloaded and Route() runs on the host (covers every knob)
  kDevice,  // Backend::RouteOnDevice(); knobs and replays it does not cover are refused
};

std::string_view OverflowPolicyName(OverflowPolicy policy);  // "drop", "reroute", "replica"
std::string_view RoutingModeName(RoutingMode mode);          // "auto", "host", "device"
std::string_view CapacityScopeName(CapacityScope scope);     // "expert", "slot"
std::string_view ScoreFunctionName(ScoreFunction fn);        // "softmax", "sigmoid"

// The model: fixed for the engine's lifetime.
struct ModelOptions {
  uint32_t num_layers = 4;          // MoE layers, applied one after another
  uint32_t hidden = 256;            // hidden size H
  uint32_t num_experts = 16;        // routed experts per layer E
  uint32_t expert_ffn = 256;        // intermediate size F of a routed expert
  uint32_t num_shared_experts = 1;  // shared experts, run on every token (0 = none)
  uint32_t shared_ffn = 256;        // intermediate size of one shared expert
  ScoreFunction score_function = ScoreFunction::kSoftmax;  // router scoring
  bool normalize_gates = false;    // rescale the chosen gate weights of a token to sum to 1
  double routed_scaling = 1.0;     // factor on every routed gate weight (DeepSeek-V3: 2.5)
  uint32_t num_groups = 1;         // expert groups for group-limited routing (1 = off)
  uint32_t topk_groups = 1;        // groups a token may use when num_groups > 1
  double router_init_scale = 2.0;  // gate weights ~ N(0, (scale / sqrt(H))^2)
  // The K the model was trained to use: the quality probe's reference, so a
  // lowered K shows as error. 0 = the initial knobs' top_k.
  uint32_t reference_top_k = 0;
  float rms_eps = 1e-6f;  // RMSNorm epsilon
  uint64_t seed = 1;      // seeds every weight; same seed, same model
};

// Expert parallelism over virtual devices (one machine computes and times each
// device's expert work in turn) and the all-to-all cost model.
struct ParallelOptions {
  uint32_t num_devices = 1;        // devices D of the expert-parallel group
  uint32_t num_replicas = 0;       // physical expert slots per layer (0 = num_experts)
  uint32_t devices_per_node = 8;   // devices sharing the fast intra-node link
  double intra_node_gbps = 300.0;  // intra-node bandwidth per device, GB/s
  double inter_node_gbps = 50.0;   // inter-node bandwidth per device, GB/s
};

// Runtime knobs of one layer. Change only at step boundaries, under an epoch.
struct Knobs {
  uint32_t top_k = 2;            // experts per token (upper bound with dynamic K)
  double top_p = 0.0;            // dynamic K: gate-mass target in (0, 1]; 0 = off
  uint32_t k_min = 1;            // dynamic K: fewest experts per token
  double capacity_factor = 1.0;  // capacity = ceil(cf * T * top_k / E); 0 = unlimited
  CapacityScope capacity_scope = CapacityScope::kExpert;  // per logical expert or per slot
  OverflowPolicy overflow_policy = OverflowPolicy::kDrop;
  double noise_std = 0.0;          // std of Gaussian noise on selection scores (0 = off)
  uint32_t shortlist = 0;          // two-stage routing: candidates M (0 = off)
  double availability_weight = 0;  // two-stage: weight alpha of remaining capacity, [0, 1]
  std::vector<float> expert_bias;  // [E] selection bias; empty = all zero
  std::vector<uint32_t> phy2log;   // [num_replicas] logical expert per slot; empty = default
};

// A partial change of Knobs: an absent field keeps its value.
struct KnobPatch {
  std::optional<uint32_t> top_k;
  std::optional<double> top_p;
  std::optional<uint32_t> k_min;
  std::optional<double> capacity_factor;
  std::optional<CapacityScope> capacity_scope;
  std::optional<OverflowPolicy> overflow_policy;
  std::optional<double> noise_std;
  std::optional<uint32_t> shortlist;
  std::optional<double> availability_weight;
  std::optional<std::vector<float>> expert_bias;
  std::optional<std::vector<uint32_t>> phy2log;

  // Writes every present field into `knobs`.
  void ApplyTo(Knobs* knobs) const;
};

// A command's worth of knob changes, applied at one step boundary.
struct KnobUpdate {
  uint64_t epoch = 0;                                  // must exceed the epoch in force
  KnobPatch all_layers;                                // applied to every layer first
  std::vector<std::pair<uint32_t, KnobPatch>> layers;  // then per-layer overrides
};

// What a command may set, whoever sent it: the engine's own limits, checked
// by Engine::Submit() on top of ValidateKnobs() (which refuses only what
// cannot run). A rogue or buggy controller cannot push the engine outside
// them. The initial knobs (Options::knobs) are the operator's and are not
// bound by these.
struct CommandBounds {
  double min_capacity_factor = 0.25;     // smallest finite capacity factor a command may set
  double max_capacity_factor = 64.0;     // largest
  bool allow_unlimited_capacity = true;  // may a command set capacity_factor = 0 (dropless)?
  uint32_t min_top_k = 1;
  uint32_t max_top_k = 0;  // 0: the model's num_experts
  double max_noise_std = 1.0;
  float max_abs_expert_bias = 1.0f;  // |bias| of every expert
  // Dynamic K (top_p > 0) gives a token as few as k_min experts: the
  // smallest k_min and the smallest non-zero top_p a command may set
  // (top_p 0, dynamic K off, is always allowed).
  uint32_t min_k_min = 1;
  double min_top_p = 0.0;
  // Two-stage routing: how far availability may outweigh affinity.
  double max_availability_weight = 1.0;
  // A command's epoch may exceed the newest accepted one by at most this, so
  // one message cannot jump the epoch to the end of its range.
  uint64_t max_epoch_step = 1'000'000;
};

struct Options {
  ModelOptions model;
  ParallelOptions parallel;
  Knobs knobs;  // initial knobs of every layer (under initial_epoch)
  // The epoch of the initial knobs; commands must exceed it. moe-engine
  // starts at the wall clock's milliseconds, so an engine that restarts never
  // repeats an epoch of its earlier run (a controller issues one decision per
  // cadence tick, far fewer than one per millisecond).
  uint64_t initial_epoch = 0;
  CommandBounds command_bounds;  // limits on what commands may set (Submit)
  // Routing: kAuto routes a layer on the device when the backend supports
  // Feature::kDeviceRouting, its memory is not host memory (kHostMemory: there
  // host routing costs no transfer), the layer's knobs pass
  // CheckDeviceRoutingCovered(), and the step does not replay a trace;
  // otherwise on the host. LayerStats::routed_on_device says which ran.
  RoutingMode routing = RoutingMode::kAuto;
  // Device routing sizes the expert GEMMs by the capacity layout (router.h),
  // which needs no host wait inside a step, while its rows exceed the step's
  // top_k * tokens by at most this fraction (padding rows are computed and
  // discarded). Beyond it, or with unlimited capacity, the step waits once
  // for the routing counters before the expert GEMMs (LayerStats::host_waits).
  double max_capacity_padding = 0.5;
  uint32_t quality_probe_tokens = 4;  // tokens sampled by the quality probe (0 = off)
  uint32_t quality_probe_every = 10;  // run the probe every N steps
  uint64_t seed = 1;                  // seeds routing noise and probe sampling
};

// Checks the model and parallel options (shapes, groups, replicas % devices).
Status ValidateOptions(const Options& options);

// Checks knobs against the model: ranges, top_k <= E, bias size, placement
// (every expert has a replica, ids < E, size == num_replicas), shortlist >= top_k.
Status ValidateKnobs(const Knobs& knobs, const Options& options);

// Checks the values a command sets (the fields present in `patch`) against
// `options.command_bounds`: kOutOfRange naming the knob, the value and the
// bound. Knobs the command leaves alone are not judged.
Status CheckCommandBounds(const KnobPatch& patch, const Options& options);

// The default placement: slot s holds expert s % E.
std::vector<uint32_t> DefaultPlacement(const Options& options);

// Number of physical slots per layer (num_replicas, or E when 0).
uint32_t NumReplicas(const Options& options);

}  // namespace moe::engine

#endif  // MOE_ENGINE_OPTIONS_H_
