// Rows of the controller database as plain values, shared by Store (writes)
// and Reader (queries). Times are nanoseconds since the Unix epoch. Every row
// compares with == field by field.

#ifndef MOE_STORAGE_ROWS_H_
#define MOE_STORAGE_ROWS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace moe::storage {

// A decision's life: proposed -> (rejected | advisory | sent -> (acked | failed)
// -> measured) or rolled back. `verdict` is the guard's word on the proposal.
// "advisory": the guard let it through but the engine's mode is advisory, so
// nothing was sent; `command_json` holds what would have been.
struct DecisionRow {
  int64_t id = 0;  // assigned by Store::RecordDecision
  std::string engine_id;
  int64_t created_ns = 0;
  std::string policy;         // e.g. "capacity", "guard-rollback"
  int32_t layer = -1;         // -1: every layer
  std::string knob;           // e.g. "capacity_factor"
  std::string inputs_json;    // the snapshot figures the policy used
  std::string proposal_json;  // what the policy asked for
  std::string verdict;        // "accepted", "clamped", "rejected"
  std::string verdict_reason;
  std::string command_json;       // the settings sent (after the guard); empty if none
  std::string status;             // "rejected", "advisory", "sent", "acked", "failed", "measured"
  std::optional<uint64_t> epoch;  // epoch of the command, when one was sent
  std::optional<int64_t> sent_ns;
  std::optional<int64_t> acked_ns;
  std::optional<uint64_t> applied_at_step;
  std::string ack_error;
  std::string outcome_json;  // measured on the steps that ran under `epoch`
  std::optional<double> reward_before;
  std::optional<double> reward_after;
  std::optional<int64_t> measured_ns;  // when the outcome was recorded
  // The predicted reward after minus before, when the controller could
  // predict it (see prediction_json's "basis"); absent otherwise.
  std::optional<double> predicted_gain;
  std::string prediction_json;  // {"basis", "reward_before", "reward_after", ...}; empty: none
  // A rejection repeated with the same policy, knob, layer, value and reason
  // (numbers in the reason aside) is folded into the first row: `repeats`
  // more times, the last at `last_repeat_ns`.
  uint64_t repeats = 0;
  std::optional<int64_t> last_repeat_ns;

  friend bool operator==(const DecisionRow&, const DecisionRow&) = default;
};

struct DecisionOutcome {
  std::string outcome_json;
  std::optional<double> reward_before;
  std::optional<double> reward_after;
  int64_t measured_ns = 0;

  friend bool operator==(const DecisionOutcome&, const DecisionOutcome&) = default;
};

// The settings in force from an epoch on.
// What the learning policy learnt from one epoch: the reward of its steps
// with `knob` at `value`, in a load regime (policies/learning_policy.h).
struct LearningSampleRow {
  std::string engine_id;
  uint64_t epoch = 0;
  int64_t created_ns = 0;
  std::string regime;  // e.g. "imbalance 1 of 3, tokens 0 of 1"
  // The knobs learnt, joined by ",": "capacity_factor", or for joint
  // settings "capacity_factor,top_k".
  std::string knob;
  double value = 0;  // the first knob's value
  double reward = 0;
  uint64_t steps = 0;  // steps the reward covers
  // Every knob's value, in `knob`'s order; a one-knob sample may leave it
  // empty (stored as {value}), and reads back {value}.
  std::vector<double> setting;

  friend bool operator==(const LearningSampleRow&, const LearningSampleRow&) = default;
};

struct EpochRow {
  std::string engine_id;
  uint64_t epoch = 0;
  int64_t created_ns = 0;
  std::string knobs_json;
  int64_t decision_id = 0;  // 0 when not from a decision (engine start)

  friend bool operator==(const EpochRow&, const EpochRow&) = default;
};

struct EngineRow {
  std::string engine_id;
  std::string backend;  // empty until the engine's Hello was stored
  uint32_t num_layers = 0;
  uint32_t num_experts = 0;
  uint32_t num_shared_experts = 0;
  uint32_t num_replicas = 0;
  uint32_t num_devices = 0;
  uint32_t hidden = 0;
  int64_t first_seen_ns = 0;
  int64_t last_seen_ns = 0;
  uint64_t last_step = 0;
  uint64_t last_epoch = 0;
  // When the controller marked the engine gone (silent for its
  // engine_expiry); cleared by the engine's next message.
  std::optional<int64_t> gone_ns;

  friend bool operator==(const EngineRow&, const EngineRow&) = default;
};

// One operator lever pulled through moectld's control socket, refused or not.
struct OperatorActionRow {
  int64_t id = 0;  // assigned by Store::RecordOperatorAction
  int64_t created_ns = 0;
  std::string engine_id;
  std::string action;                  // "pause", "resume", "pin", "unpin", "mode"
  std::string knob;                    // pin/unpin: the knob
  std::optional<double> value;         // pin: the value held
  std::optional<int64_t> until_ns;     // pin: when it lapses; absent: until unpinned
  std::string mode;                    // mode: "active" / "advisory"
  int64_t uid = -1;                    // the caller's uid (from the socket's peer credentials)
  std::string who;                     // e.g. "alice (uid 1000, pid 4242)"
  std::string reason;                  // the caller's --reason
  std::string result;                  // "done", or "refused: why"
  std::optional<int64_t> decision_id;  // pin: the decision row of the command it caused

  friend bool operator==(const OperatorActionRow&, const OperatorActionRow&) = default;
};

// One layer of one step, summarised; or (rollup == true) one layer of one
// engine over one minute, for raw rows pruned by retention. In a rollup,
// `timestamp_ns` is the start of the minute, `step`/`seq`/`epoch` are those of
// the latest step in it, counts are sums (saturated at the field's maximum),
// `drop_rate` is sum(dropped) / sum(num_token_slots), and every other figure is
// the mean over the bucket's `num_steps` rows (`quality_error` over the sampled
// ones only).
struct StepRow {
  std::string engine_id;
  uint64_t step = 0;
  uint64_t seq = 0;
  int64_t timestamp_ns = 0;
  uint64_t epoch = 0;
  uint32_t layer = 0;
  uint32_t num_tokens = 0;
  uint64_t num_token_slots = 0;
  uint32_t overflowed = 0;
  uint32_t rerouted = 0;
  uint32_t dropped = 0;
  double drop_rate = 0;      // dropped / num_token_slots
  double max_over_mean = 0;  // expert load imbalance
  double router_entropy = 0;
  double gate_mass = 0;
  std::optional<double> quality_error;
  double router_us = 0;
  double dispatch_us = 0;
  double expert_us = 0;
  double combine_us = 0;
  double all_to_all_us = 0;
  double layer_us = 0;  // LayerTiming::total_us
  double step_us = 0;
  bool timing_on_device = false;  // in a rollup: true if any step's was
  uint32_t num_steps = 1;         // steps summarised: 1 for a raw row
  bool rollup = false;            // true: a per-minute rollup (sums/means over the bucket)

  friend bool operator==(const StepRow&, const StepRow&) = default;
};

// Served token-slots per logical expert of one layer of one raw step (the
// expert_loads table), for analyses that need every step's load.
struct StepLoadRow {
  uint64_t step = 0;
  uint64_t epoch = 0;
  uint32_t layer = 0;
  std::vector<uint64_t> expert_tokens;  // [num_experts]

  friend bool operator==(const StepLoadRow&, const StepLoadRow&) = default;
};

// Load of one expert summed over a window.
struct ExpertLoadRow {
  uint32_t layer = 0;
  uint32_t expert = 0;
  uint64_t tokens = 0;
  double share = 0;    // tokens / all routed token-slots of the layer in the window
  double vs_mean = 0;  // tokens / mean tokens per expert of the layer

  friend bool operator==(const ExpertLoadRow&, const ExpertLoadRow&) = default;
};

}  // namespace moe::storage

#endif  // MOE_STORAGE_ROWS_H_
