// Closed-loop benchmark, analysis: what each contender's run left in its
// database, turned into the figures `moectl bench closed-loop` reports, with
// one cost model and one reward (policies/cost_model.h, reward.h) for all.
//
// Pure functions of the rows read; no I/O.

#ifndef MOE_APPS_MOECTL_BENCH_ANALYSIS_H_
#define MOE_APPS_MOECTL_BENCH_ANALYSIS_H_

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "moe/common/status.h"
#include "moe/policies/cost_model.h"
#include "moe/policies/knobs.h"
#include "moe/policies/reward.h"
#include "moe/storage/rows.h"

namespace moe::cli::bench {

// The knobs a run starts with (the engine's epoch 0).
struct KnobPoint {
  double capacity_factor = 1.0;
  uint32_t top_k = 2;
  double noise_std = 0.0;
};

// The model's shape, as the bench configured the engine.
struct ModelShape {
  uint32_t num_layers = 0;
  uint32_t num_experts = 0;
  uint32_t num_replicas = 0;
  uint32_t num_devices = 1;
  uint32_t top_k = 2;  // configured K: the reward's balanced reference
  uint32_t hidden = 0;
  uint32_t expert_ffn = 0;
  double inter_node_gbps = 50.0;
  double ExpertBytes() const { return 3.0 * hidden * expert_ffn * 4.0; }
};

// Device slowdown factors [num_devices] in force from each step on (a
// scenario's straggler keyframes); empty: every device runs at 1.
using DeviceSlowdowns = std::map<uint64_t, std::vector<double>>;

// One engine step, over its layers.
struct StepData {
  uint64_t step = 0;
  uint64_t epoch = 0;
  double tokens = 0;
  double token_slots = 0;
  double dropped = 0;
  std::optional<double> quality_error;           // mean over the probed layers
  double step_us = 0;                            // measured wall time
  double measured_path_us = 0;                   // measured: sum over layers of layer_us
  std::vector<double> layer_tokens;              // [layer]
  std::vector<double> overhead_us;               // [layer] router + dispatch + combine, measured
  std::vector<double> expert_us;                 // [layer] slowest device, measured
  std::vector<double> all_to_all_us;             // [layer] the engine's model
  std::vector<std::vector<double>> expert_rows;  // [layer][expert] served rows
};

// The settings in force under one epoch.
struct EpochKnobs {
  // The scalar knobs (the knob table's; its vectors stay empty: see below).
  policies::KnobValues knobs;
  double max_abs_bias = 0;
  std::vector<std::vector<uint32_t>> phy2log;  // [layer][slot]
  std::vector<std::vector<float>> bias;        // [layer][expert]
  double moved_bytes = 0;                      // placement bytes moved entering this epoch
  double move_us = 0;                          // modelled move time entering this epoch
};

// What one run left in its database.
struct RunData {
  std::string contender;
  std::string label;  // e.g. "cf=2 k=2 noise=0"
  KnobPoint start;
  std::vector<StepData> steps;
  std::map<uint64_t, EpochKnobs> epochs;
  uint64_t decisions = 0;          // every decision row (rejections included)
  uint64_t decisions_applied = 0;  // acked by the engine
  uint64_t rolled_back = 0;        // applied guard rollbacks
  double wall_s = 0;
};

// Applies one epoch row's change (controller.cc ChangeJson, as parsed JSON)
// to `k`: its scalars, bias and placement, and those of every part of "with"
// (a joint command's other knobs); moved_bytes and move_us are those of every
// placement slot the row changes. Fails on a layer, expert or slot out of
// range.
Status ApplyChange(const nlohmann::json& change, const ModelShape& shape, EpochKnobs* k);

// Builds RunData from the rows of one engine. `start` and `shape` give the
// state before any epoch row. Fails on rows that do not fit the shape.
Result<RunData> BuildRun(const std::string& contender, const KnobPoint& start,
                         const ModelShape& shape, const std::vector<storage::StepRow>& steps,
                         const std::vector<storage::StepLoadRow>& loads,
                         const std::vector<storage::EpochRow>& epochs,
                         const std::vector<storage::DecisionRow>& decisions);

// The settings in force at `epoch` (the newest epoch row at or below it).
const EpochKnobs& KnobsAt(const RunData& run, uint64_t epoch);

// One cost model for every run: least squares of each layer's measured
// slowest-device time on its most loaded device's rows, and of the rest of
// the layer (router + dispatch + combine) on its tokens, pooled over `runs`.
Result<policies::CostModel> FitCostModel(const std::vector<const RunData*>& runs,
                                         const ModelShape& shape);

// Per-step series and the contender's figures.
struct Summary {
  uint64_t steps = 0;
  double p50_latency_us = 0, p99_latency_us = 0;              // cost model critical path
  double p50_balanced_us = 0, p99_balanced_us = 0;            // the same tokens on balanced devices
  double p50_measured_us = 0, p99_measured_us = 0;            // measured wall time
  double p50_measured_path_us = 0, p99_measured_path_us = 0;  // measured critical path
  double tokens_per_s = 0;           // tokens over the modelled critical path
  double measured_tokens_per_s = 0;  // tokens over the measured wall time
  double drop_rate = 0;
  double quality_error = 0;
  double bytes_migrated = 0;
  uint64_t decisions_applied = 0, rolled_back = 0;
  double mean_reward = 0;
  policies::RewardTerms mean_terms;
  // Series, one entry per step.
  std::vector<double> step, latency_us, measured_us, drop_rate_series, capacity_factor, top_k,
      noise_std, max_abs_bias, reward;
};

// `slowdowns` prices each step's devices (CostModel::device_factor) as the
// scenario slowed them down.
Summary Summarise(const RunData& run, const ModelShape& shape, const policies::CostModel& model,
                  const policies::RewardParams& reward, const DeviceSlowdowns& slowdowns = {});

// Nearest-rank percentile (q in [0, 1]) of `values`; 0 when empty.
double Percentile(std::vector<double> values, double q);

}  // namespace moe::cli::bench

#endif  // MOE_APPS_MOECTL_BENCH_ANALYSIS_H_
