// ControllerOptions: everything moectld is configured with. Filled from
// configs/controller.toml by apps/moectld/controller_config.cc; defaults here
// are the documented defaults.

#ifndef MOE_CONTROLLER_OPTIONS_H_
#define MOE_CONTROLLER_OPTIONS_H_

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "moe/policies/adaptive_k_policy.h"
#include "moe/policies/baseline_policies.h"
#include "moe/policies/bias_policy.h"
#include "moe/policies/capacity_policy.h"
#include "moe/policies/cost_model.h"
#include "moe/policies/counterfactual_policy.h"
#include "moe/policies/guard.h"
#include "moe/policies/learning_policy.h"
#include "moe/policies/noise_policy.h"
#include "moe/policies/replication_policy.h"
#include "moe/policies/reward.h"

namespace moe::controller {

// The daemon's HTTP endpoint for Prometheus (/metrics) and health checks
// (/healthz). Read by moectld's main, not by the controller library.
struct MetricsOptions {
  // "host:port" to listen on ("127.0.0.1:9464", "[::1]:9464"); empty: off.
  std::string listen;
  // Also export per-layer series (one per engine and layer).
  bool per_layer = false;
  // /healthz reports 503 when the loop has not published figures for this long.
  int64_t loop_timeout_ms = 10'000;
};

// The daemon's control socket for operator levers (moe/controller/levers.h).
// Read by moectld's main, not by the controller library.
struct ControlOptions {
  // Unix socket path; empty: no control socket (the shipped
  // configs/controller.toml sets /run/moectld/control.sock).
  std::string socket;
  // The socket file's group (its members may pull levers) and permission
  // bits. Empty group: the daemon's own group.
  std::string group;
  uint32_t socket_mode = 0660;
};

// What the controller does with a decision the guard lets through.
// What one engine may make the daemon hold ([limits] in controller.toml).
// A Hello over the shape budget is refused (no state is made from it); the
// per-engine window of recent steps holds at most `window_steps` steps and at
// most `window_bytes` bytes of figures (the newest step always stays). The
// defaults fit the largest public MoE models with room to spare: DeepSeek-V3
// runs 61 MoE layers x 256 routed experts (15,616 per engine).
struct LimitsOptions {
  uint32_t max_layers = 128;                   // Hello.num_layers
  uint32_t max_experts = 1024;                 // Hello.num_experts (routed, per layer)
  uint64_t max_layer_experts = 131'072;        // num_layers x num_experts
  uint32_t max_replicas = 4096;                // Hello.num_replicas (physical slots per layer)
  uint64_t max_layer_replicas = 524'288;       // num_layers x num_replicas
  uint32_t max_devices = 1024;                 // Hello.num_devices
  uint64_t window_bytes = uint64_t{64} << 20;  // figures kept per engine
};

// The cost model the controller prices steps with ([cost_model] in
// controller.toml; policies/cost_model.h). By default it is fitted online
// from each engine's measured per-device times, so it follows the hardware,
// and also the noise of a shared machine. `fixed` replaces the fit with the
// figures given (an offline calibration, or a benchmark's, so that decisions
// do not move with the machine's load). `stragglers` measures each device's
// speed against the model in force (a throttled or shared device gets its
// factor); off, every device counts at the usual speed. Both apply to every
// engine and change on reload.
struct CostModelOptions {
  bool fixed = false;
  policies::AffineCost device;    // with fixed: one device's expert time by rows
  policies::AffineCost overhead;  // with fixed: router + exchange of a layer by tokens
  bool stragglers = true;
  bool operator==(const CostModelOptions&) const = default;
};

enum class ControlMode {
  kActive,    // sends it as a command, measures it, rolls it back if worse
  kAdvisory,  // records it (status "advisory", with its predicted gain); sends nothing
};

// "active" / "advisory".
std::string_view ControlModeName(ControlMode mode);

struct ControllerOptions {
  // ZeroMQ endpoints the daemon binds (engines connect to them).
  std::string telemetry_endpoint = "tcp://127.0.0.1:5555";
  std::string command_endpoint = "tcp://127.0.0.1:5556";

  // CURVE: when `curve_secret_key` is set, both channels are encrypted and only
  // the engines listed in `engine_keys` (engine id -> its public key) may
  // connect, each speaking only for the ids listed with its key. Z85 text.
  std::string curve_public_key;
  std::string curve_secret_key;
  std::map<std::string, std::string> engine_keys;
  // Without CURVE, endpoints must be loopback or ipc:// unless this is set
  // (telemetry/include/moe/telemetry/transport.h, "Identity").
  bool insecure = false;

  // SQLite database (WAL). Its directory is created if missing.
  std::string db_path = "/var/lib/moectld/moectl.db";
  int64_t db_batch_rows = 2000;
  int64_t db_flush_interval_ms = 200;
  int64_t raw_retention_s = 0;       // 0: keep raw per-step rows forever
  int64_t rollup_retention_s = 0;    // 0: keep per-minute rollups forever
  int64_t decision_retention_s = 0;  // 0: keep decisions forever (in-flight ones always stay)
  // The write queue: step records beyond this many pending rows or bytes
  // (packed, as queued) are refused and counted (StoreStats::rejected).
  int64_t db_max_queue_rows = 200'000;
  int64_t db_max_queue_bytes = int64_t{256} << 20;

  // How often the policy pipeline runs for each engine.
  int64_t cadence_ms = 1000;
  // React to telemetry: a step whose drop rate is at least react_drop_rate
  // runs the pipeline for its engine at once instead of at the next cadence
  // tick, when no decision is in flight and the last such reaction was at
  // least react_min_interval_ms ago (a shift is answered within a step or
  // two, not a cadence later). 0 = only the cadence; in [0, 1].
  double react_drop_rate = 0.0;
  int64_t react_min_interval_ms = 10;
  // The controller's clock. 0: the wall clock. > 0 (for benchmarks and
  // simulations, with engines that await the controller): time advances by
  // this many ms per step record taken in, from any engine, and stands still
  // between them, so the cadence, the cooldowns and every timeout count steps
  // and a decision lands at the same step however fast the machine runs. The
  // replication planner then has no deadline (it runs to its work limits:
  // time_budget_ms is not used). Fixed at start.
  int64_t step_clock_ms = 0;
  // A command without an ack after this long is recorded as failed.
  int64_t ack_timeout_ms = 5000;
  // Steps under a new epoch before its outcome is measured (and judged for rollback).
  uint64_t outcome_steps = 16;
  // Most recent steps kept per engine for the state estimate.
  uint64_t window_steps = 64;
  // Log a progress line this often (0: never).
  int64_t progress_interval_ms = 10'000;

  // Liveness: an engine with no message for stale_after_ms is "stale"; after
  // engine_expiry_ms it is "gone": its state is evicted (its rows stay, a
  // decision in flight is closed as "unknown") and no policy runs for it
  // until it speaks again. At most max_engines engines are tracked at once;
  // messages of further new engine ids are dropped and counted.
  int64_t stale_after_ms = 10'000;
  int64_t engine_expiry_ms = 600'000;
  int64_t max_engines = 1024;
  LimitsOptions limits;

  std::string log_level = "info";

  // The mode of every engine (`mode` in controller.toml), and per-engine
  // overrides by engine id ([engines."id"] mode = ...). Advisory engines are
  // decided for and audited like active ones, and never sent a command; a
  // reload to active takes over at the next cadence tick.
  ControlMode mode = ControlMode::kActive;
  std::map<std::string, ControlMode> engine_modes;
  // The mode of `engine_id`: its override, else `mode`.
  ControlMode ModeOf(const std::string& engine_id) const {
    auto it = engine_modes.find(engine_id);
    return it == engine_modes.end() ? mode : it->second;
  }

  // Policies. Each can be switched off. At every cadence tick the enabled
  // policies are asked in `policy_order`; the first proposal the guard lets
  // through becomes the command (one change in flight per engine), and every
  // proposal asked before it that the guard rejected is recorded too.
  std::vector<std::string> policy_order = {"capacity", "bias",        "adaptive_k",
                                           "noise",    "replication", "learning"};
  // Joint settings: once a proposal is accepted, the policies after it in
  // `policy_order` are asked too, on the snapshot with that change applied;
  // each accepted proposal of another knob joins the same command (one epoch,
  // one decision, measured and rolled back together), so e.g. capacity and
  // placement move in one step instead of one outcome window apart.
  bool joint_changes = false;
  bool capacity_enabled = true;
  policies::CapacityPolicyParams capacity;
  bool bias_enabled = true;
  policies::BiasPolicyParams bias;
  bool adaptive_k_enabled = false;
  policies::AdaptiveKParams adaptive_k;
  bool noise_enabled = false;
  policies::NoisePolicyParams noise;
  bool replication_enabled = true;  // acts only on engines with several devices
  policies::ReplicationPolicyParams replication;
  // Learns from every measured decision (also while disabled, so it can be
  // switched on with experience); proposes only when enabled.
  bool learning_enabled = false;
  policies::LearningPolicyParams learning;
  // Capacity chosen by the reward it would have earnt on the window's own
  // demand (policies/counterfactual_policy.h).
  bool counterfactual_enabled = false;
  policies::CounterfactualParams counterfactual;
  // Baselines for the closed-loop benchmark (policies/baseline_policies.h):
  // Tutel-style dynamic capacity and vLLM-style periodic EPLB.
  bool dynamic_capacity_enabled = false;
  policies::DynamicCapacityParams dynamic_capacity;
  bool eplb_enabled = false;
  policies::PeriodicEplbParams eplb;
  policies::GuardParams guard;
  policies::RewardParams reward;
  bool rollback_enabled = true;
  CostModelOptions cost_model;

  MetricsOptions metrics;
  ControlOptions control;
};

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_OPTIONS_H_
