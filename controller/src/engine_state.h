// EngineState: what the controller knows of one engine: identity, the epoch
// ledger (settings in force per epoch), a window of recent steps, and the
// decision in flight.

#ifndef MOE_CONTROLLER_SRC_ENGINE_STATE_H_
#define MOE_CONTROLLER_SRC_ENGINE_STATE_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "epoch_ledger.h"
#include "moe/controller/levers.h"
#include "moe/controller/options.h"
#include "moe/policies/cost_model.h"
#include "moe/policies/guard.h"
#include "moe/policies/reward.h"
#include "moe/policies/snapshot.h"
#include "moe/telemetry/types.h"

namespace moe::controller {

// The figures of one step, summed over layers.
// One layer's scalars as a step reported them: what a snapshot sums over
// the window every cycle, kept apart from the loads so that the sum reads
// 48 bytes a layer.
struct LayerFigures {
  uint32_t layer = 0;
  bool has_quality = false;
  double drop_rate = 0;      // dropped / token-slots
  double overflow_rate = 0;  // overflowed / token-slots
  double max_over_mean = 0;  // expert load imbalance
  double layer_us = 0;       // layer critical path
  double quality_error = 0;  // when has_quality
};

struct StepFigures {
  uint64_t step = 0;
  uint64_t epoch = 0;
  uint64_t token_slots = 0;
  uint64_t dropped = 0;
  uint64_t overflowed = 0;
  double step_us = 0;
  double tokens = 0;            // tokens entering the first layer
  double critical_path_us = 0;  // sum over layers of timing.total_us
  double max_over_mean = 0;     // mean over layers
  // Mean over the layers that report demand of its max over mean; absent
  // when no layer does.
  std::optional<double> demand_max_over_mean;
  double device_max_over_mean = 0;  // mean over layers of device_tokens' max over mean
  std::optional<double> quality_error;
  // Per layer as the step reported them (each layer at most once: the codec
  // refuses a step that names one twice): the scalars, and beside them each
  // layer's served load. The demand is in `demand`, shared with snapshots.
  std::vector<LayerFigures> layers;
  std::vector<std::vector<double>> expert_load;  // [i] of layers[i]
  // The step's demand by layer id (policies::StepDemand), never null.
  std::shared_ptr<const policies::StepDemand> demand;
  // For the cost model (policies/cost_model.h), per layer: tokens, the
  // served rows on each device, modelled all-to-all; and the step's
  // placement-move time. has_device_rows: every layer reported its devices.
  std::vector<double> layer_tokens;
  std::vector<std::vector<double>> device_rows;
  std::vector<double> max_device_rows;  // [layer] the most of device_rows[layer]
  policies::PathSums path_sums;         // the layers reduced, to price them in O(1)
  bool has_device_rows = false;
  std::vector<double> all_to_all_us;
  double migration_us = 0;
  // The step under the counterfactual policy's candidates (null: none kept;
  // EngineState::set_capacity_replays).
  std::shared_ptr<const policies::CapacityReplay> capacity;
  uint64_t bytes = 0;  // what these figures hold, vectors included (Summarise sets it)
};

StepFigures Summarise(const telemetry::StepRecord& record);

// One knob change a command carries: a scalar `value`, or for a vector knob
// (expert_bias) the vector of every layer.
struct KnobChange {
  std::string knob;
  double value = 0;
  std::vector<std::vector<float>> vectors;        // [layer][element]; vector knobs only
  std::vector<std::vector<uint32_t>> placements;  // [layer][slot]; phy2log only
};

// Running sums of the per-expert figures (served load, demand) of the
// window's steps under one epoch, kept as steps enter and leave the window,
// so that a snapshot costs O(layers x experts), not O(window x layers x
// experts). The figures are token counts, integers, so every sum is exact in
// a double (below 2^53) and equals a sum from scratch in any order.
class EpochSums {
 public:
  // The sum of vectors of possibly differing lengths, as a from-scratch sum
  // that grows to the longest one would hold it (an empty vector adds nothing).
  class VectorSum {
   public:
    void Add(const std::vector<double>& v);
    void Subtract(const std::vector<double>& v);
    // The longest length added and not subtracted (0: none).
    size_t size() const;
    // sum[i] / n for i below size().
    std::vector<double> MeanOver(double n) const;
    uint64_t bytes() const { return sum_.capacity() * sizeof(double); }

   private:
    std::vector<double> sum_;
    std::vector<std::pair<size_t, uint64_t>> lengths_;  // length -> vectors of it
  };
  struct Layer {
    uint64_t steps = 0;  // steps that reported the layer
    VectorSum load;
    VectorSum demand;
  };

  void Add(const StepFigures& step);
  void Subtract(const StepFigures& step);
  uint64_t steps() const { return steps_; }
  // Indexed by layer id, up to the highest one any step reported.
  const std::vector<Layer>& layers() const { return layers_; }
  uint64_t bytes() const;

 private:
  uint64_t steps_ = 0;
  std::vector<Layer> layers_;
};

// A command sent and not yet measured.
// A change sent in the same command as a decision's own (a joint setting):
// what a rollback of the decision restores.
struct CompanionChange {
  std::string policy;
  KnobChange change;
  double previous_value = 0;
  std::vector<std::vector<float>> previous_vectors;
  std::vector<std::vector<uint32_t>> previous_placements;
};

struct PendingDecision {
  int64_t decision_id = 0;
  uint64_t epoch = 0;
  int64_t sent_ns = 0;
  bool acked = false;
  std::string knob;
  double previous_value = 0;
  double new_value = 0;
  std::vector<std::vector<float>> previous_vectors;        // vector knobs: what a rollback restores
  std::vector<std::vector<uint32_t>> previous_placements;  // phy2log: what a rollback restores
  bool is_rollback = false;
  bool from_operator = false;               // a pin: never rolled back by the guard
  std::vector<CompanionChange> companions;  // other knobs of the same command
  policies::OutcomeFigures before;
  double reward_before = 0;
  // The ack timed out: whether the engine applied it is unknown until a step
  // under `epoch` (applied) or `outcome_steps` steps under older epochs after
  // the timeout, or a Hello (not applied), settle it.
  bool ack_unknown = false;
  uint64_t steps_since_timeout = 0;
};

// Writes `change` into `knobs` (the knobs in force after it).
void ApplyChange(const KnobChange& change, policies::KnobValues& knobs);

class EngineState {
 public:
  // The window holds at most `window_steps` steps and `window_bytes` bytes of
  // their figures (StepFigures::bytes); the newest step always stays. The
  // ledger's knob vectors are held to `window_bytes` too.
  EngineState(std::string engine_id, size_t window_steps, uint64_t window_bytes = UINT64_MAX)
      : engine_id_(std::move(engine_id)),
        window_steps_(window_steps),
        window_bytes_limit_(window_bytes) {
    ledger_.set_max_bytes(window_bytes);
  }

  // The engine's Hello (at start, on reconnect, and periodically): the
  // settings in force under its epoch go into the ledger; an epoch below
  // the one seen means a restart and clears the window.
  void OnHello(const telemetry::Hello& hello, int64_t now_ns);
  // Returns the epoch in force before the step when the step starts a newer
  // one (the older epoch ended), else nullopt.
  std::optional<uint64_t> OnStep(const telemetry::StepRecord& record, int64_t now_ns);
  // A command under `epoch` carries `change` on top of the settings in force.
  void OnSent(uint64_t epoch, const KnobChange& change,
              const std::vector<KnobChange>& companions = {});

  // State estimate over the steps of the epoch in force.
  policies::EngineSnapshot Snapshot(int64_t now_ns) const { return SnapshotOf(epoch_, now_ns); }
  // State estimate over the steps of `epoch` (its settings from the ledger).
  policies::EngineSnapshot SnapshotOf(uint64_t epoch, int64_t now_ns) const;
  // Mean figures of the (at most `max_steps` latest) steps run under `epoch`.
  policies::OutcomeFigures Figures(uint64_t epoch, size_t max_steps) const;
  uint64_t StepsUnder(uint64_t epoch) const;

  // The next epoch to issue: above any epoch seen or issued.
  uint64_t NextEpoch() {
    last_issued_epoch_ = std::max(last_issued_epoch_, epoch_) + 1;
    return last_issued_epoch_;
  }
  // Epochs up to `epoch` were issued before (by an earlier run of the
  // controller, per the database): NextEpoch goes above them.
  void ReserveEpochsThrough(uint64_t epoch) {
    last_issued_epoch_ = std::max(last_issued_epoch_, epoch);
  }

  // Each new step is worked out under these capacity factors (and the one
  // in force), once, for the counterfactual capacity policy
  // (policies::ReplayCapacities): the newest `lookback` steps always hold
  // replays under the settings in force, redone at the next step after the
  // settings change. None while the cost model is not calibrated or has a
  // straggler (the policy could not use them). Empty factors: none are kept.
  void set_capacity_replays(std::vector<double> factors, size_t lookback);
  // Where the cost model comes from (CostModelOptions): a fixed model is in
  // force at once; back to the measured fit, the points gathered meanwhile
  // are fitted at the next step. Stragglers off clears the device factors.
  void set_cost_model_options(const CostModelOptions& options);

  // Any message from the engine at `now_ns` (liveness).
  void Touch(int64_t now_ns) { last_seen_ns_ = std::max(last_seen_ns_, now_ns); }
  int64_t last_seen_ns() const { return last_seen_ns_; }
  uint64_t steps_seen() const { return steps_seen_; }
  // Steps in the window and the bytes their figures hold.
  size_t window_size() const { return window_.size(); }
  uint64_t window_bytes() const { return window_bytes_; }

  // The scalar in force (vector knobs: the largest |element|).
  double KnobValue(const std::string& knob) const;
  // A vector knob in force, one vector per layer (zeros where none is set).
  std::vector<std::vector<float>> KnobVectors(const std::string& knob) const;
  // The placement in force, one phy2log per layer, spelled out (the default,
  // slot s holds s % num_experts, where the engine reported none).
  std::vector<std::vector<uint32_t>> Placements() const;

  const std::string& engine_id() const { return engine_id_; }
  bool has_hello() const { return has_hello_; }
  const telemetry::Hello& hello() const { return hello_; }
  uint64_t epoch() const { return epoch_; }
  int64_t last_step_ns() const { return last_step_ns_; }
  // The settings in force: the ledger's for the epoch in force.
  policies::KnobValues knobs() const { return ledger_.KnobsOf(epoch_); }
  EpochLedger& ledger() { return ledger_; }
  const EpochLedger& ledger() const { return ledger_; }

  std::optional<PendingDecision>& pending() { return pending_; }
  const std::optional<PendingDecision>& pending() const { return pending_; }
  policies::GuardState& guard_state() { return guard_state_; }
  // The cost model fitted from every step seen (per-device rows against
  // measured per-device expert time; per-layer tokens against the rest).
  const policies::CostModel& cost_model() const { return cost_model_; }
  // What changed in the cost model since the last call, for the log: its
  // first fit, a refit every 4096 steps, and each change of device factors
  // (a straggler found or gone); nullopt when nothing did.
  std::optional<std::string> TakeCostModelNews();
  int64_t next_policy_run_ns = 0;
  int64_t last_react_ns = 0;  // when a dropping step last brought the pipeline forward

  // The latest decision measured (for `moectl status`).
  std::optional<EngineStatus::Outcome> last_outcome;

  // Runs of identical rejections, by (policy, knob, layer): the decision row
  // they are folded into (DecisionRow::repeats). Cleared by any accepted
  // decision of the engine.
  struct RejectionRun {
    std::string key;  // value and reason with their numbers masked
    int64_t decision_id = 0;
    uint64_t repeats = 0;
  };
  std::map<std::string, RejectionRun> rejection_runs;
  // When each pinned knob was last sent (ApplyPins retries no sooner than
  // kPinRetryMs).
  std::map<std::string, int64_t> pin_tried_ns;

 private:
  std::string engine_id_;
  size_t window_steps_;
  uint64_t window_bytes_limit_;
  uint64_t window_bytes_ = 0;
  bool has_hello_ = false;
  telemetry::Hello hello_;
  uint64_t epoch_ = 0;
  uint64_t last_issued_epoch_ = 0;
  int64_t last_step_ns_ = 0;
  int64_t last_seen_ns_ = 0;
  uint64_t steps_seen_ = 0;
  EpochLedger ledger_;
  std::deque<StepFigures> window_;
  // The running sums of the steps of sums_epoch_ in the window (the epoch in
  // force, SyncSums); a snapshot of another epoch sums from scratch.
  uint64_t sums_epoch_ = 0;
  EpochSums sums_;
  void SyncSums();
  void Evict();
  std::optional<PendingDecision> pending_;
  policies::GuardState guard_state_;
  uint32_t reference_top_k_ = 0;
  policies::AffineFitter device_fit_;
  policies::AffineFitter overhead_fit_;
  // Each device's time over the fit's (a straggler), into cost_model_.
  policies::DeviceSpeedEstimator device_speed_;
  policies::CostModel cost_model_;
  CostModelOptions cost_options_;
  bool cost_model_news_ = false;
  uint64_t cost_model_logged_step_ = 0;
  // The device factors last reported as news: a factor that drifts by less
  // than 10% of them is not news (they are recomputed every step).
  std::vector<double> logged_factors_;
  void FitCostModel(const telemetry::StepRecord& record);
  std::vector<double> replay_factors_;
  size_t replay_lookback_ = 0;
  void UpdateCapacityReplays();
  // Modelled and balanced critical path of one step (0, 0 without a model).
  std::pair<double, double> ModelledPath(const StepFigures& step) const;
};

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_ENGINE_STATE_H_
