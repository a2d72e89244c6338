// EngineSnapshot: the controller's state estimate for one engine, the only
// input (besides parameters) of every policy.
//
// Policies are pure functions of (snapshot, parameters): no clock, no I/O, no
// globals. Time arrives inside the snapshot as `now_ns`.

#ifndef MOE_POLICIES_SNAPSHOT_H_
#define MOE_POLICIES_SNAPSHOT_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "moe/policies/cost_model.h"
#include "moe/policies/knobs.h"
#include "moe/telemetry/types.h"

namespace moe::policies {

// Smoothed figures of one layer over the recent steps of the current epoch.
struct LayerEstimate {
  uint32_t layer = 0;
  double drop_rate = 0;      // dropped / token-slots
  double overflow_rate = 0;  // overflowed / token-slots
  double max_over_mean = 0;  // expert load imbalance
  double layer_us = 0;       // layer critical path
  std::optional<double> quality_error;
  // Mean served token-slots per step of each logical expert [num_experts]
  // (served, so an expert over its capacity shows at most its capacity).
  std::vector<double> expert_load;
  // Mean token-slots per step that chose each expert, before capacity
  // [num_experts]; empty when the engine does not report demand.
  std::vector<double> expert_demand;
};

// One recent step's demand (token-slots that chose each expert, before
// capacity), which fixes the drops and device load the step would have had
// under any other capacity factor or placement: the input of counterfactuals.
struct StepDemand {
  uint64_t step = 0;
  uint64_t epoch = 0;
  double tokens = 0;                        // tokens entering the first layer
  std::vector<std::vector<double>> layers;  // [layer][expert]; an empty layer = not reported
  std::vector<double> all_to_all_us;        // [layer] the engine's modelled all-to-all
};

// True when some layer of `step` reported its demand.
inline bool StepHasDemand(const StepDemand& step) {
  return std::any_of(step.layers.begin(), step.layers.end(),
                     [](const std::vector<double>& layer) { return !layer.empty(); });
}

// One step's demand worked out once under candidate capacity factors, when
// the step arrived (the controller's EngineState), with the K, placement and
// capacity scope then in force: the counterfactual capacity policy prices
// these figures with the cost model instead of replaying the demand on every
// cycle (counterfactual_policy.h ReplayCapacities). `settings` says what
// they hold for; under other settings the policy replays the step.
struct CapacityReplay {
  struct Settings {
    uint64_t placement = 0;  // PlacementFingerprint(knobs.phy2log)
    uint32_t top_k = 0;
    telemetry::CapacityScope scope = telemetry::CapacityScope::kExpert;
    uint32_t num_replicas = 0;
    uint32_t num_devices = 1;
    friend bool operator==(const Settings&, const Settings&) = default;
  };
  Settings settings;
  std::vector<double> capacity_factors;  // [candidate]
  double slots = 0;                      // token-slots of the layers with demand
  std::vector<double> dropped;           // [candidate], over the layers with demand
  // [candidate]: the layers with demand, each with the step's tokens, its
  // all-to-all and the most rows on one device under the candidate.
  std::vector<PathSums> paths;

  uint64_t bytes() const;
};

// A window of StepDemand shared between snapshots: the steps are immutable
// values held by shared pointers, so taking or copying a snapshot copies
// pointers, never the demand (61 layers x 256 experts x 64 steps is 8 MB).
// Reads like a std::vector<StepDemand>; the mutable operator[] (for tests
// that build a window by hand) copies the step first, so a step another
// snapshot holds never changes under it.
class StepWindow {
 public:
  using Steps = std::vector<std::shared_ptr<const StepDemand>>;

  class const_iterator {
   public:
    using iterator_category = std::bidirectional_iterator_tag;
    using value_type = StepDemand;
    using difference_type = std::ptrdiff_t;
    using pointer = const StepDemand*;
    using reference = const StepDemand&;
    const_iterator() = default;
    explicit const_iterator(Steps::const_iterator it) : it_(it) {}
    reference operator*() const { return **it_; }
    pointer operator->() const { return it_->get(); }
    const_iterator& operator++() {
      ++it_;
      return *this;
    }
    const_iterator operator++(int) { return const_iterator(it_++); }
    const_iterator& operator--() {
      --it_;
      return *this;
    }
    const_iterator operator--(int) { return const_iterator(it_--); }
    bool operator==(const const_iterator& other) const { return it_ == other.it_; }
    bool operator!=(const const_iterator& other) const { return it_ != other.it_; }

   private:
    Steps::const_iterator it_;
  };
  using const_reverse_iterator = std::reverse_iterator<const_iterator>;

  size_t size() const { return steps_.size(); }
  bool empty() const { return steps_.empty(); }
  const StepDemand& operator[](size_t i) const { return *steps_[i]; }
  StepDemand& operator[](size_t i) {
    auto copy = std::make_shared<StepDemand>(*steps_[i]);
    StepDemand* mutable_step = copy.get();
    steps_[i] = std::move(copy);
    return *mutable_step;
  }
  const StepDemand& front() const { return *steps_.front(); }
  const StepDemand& back() const { return *steps_.back(); }
  const_iterator begin() const { return const_iterator(steps_.begin()); }
  const_iterator end() const { return const_iterator(steps_.end()); }
  const_reverse_iterator rbegin() const { return const_reverse_iterator(end()); }
  const_reverse_iterator rend() const { return const_reverse_iterator(begin()); }
  void reserve(size_t n) { steps_.reserve(n); }
  void clear() { steps_.clear(); }
  void push_back(StepDemand step) {
    steps_.push_back(std::make_shared<const StepDemand>(std::move(step)));
  }
  // Shares `step` (never null).
  void push_back(std::shared_ptr<const StepDemand> step) { steps_.push_back(std::move(step)); }

 private:
  Steps steps_;
};

struct EngineSnapshot {
  std::string engine_id;
  int64_t now_ns = 0;             // when the snapshot was taken
  int64_t last_telemetry_ns = 0;  // arrival time of the newest step
  uint64_t epoch = 0;             // epoch in force
  uint64_t steps_in_epoch = 0;    // steps observed under `epoch`
  uint32_t num_experts = 0;
  uint32_t num_replicas = 0;  // physical expert slots per layer
  uint32_t num_devices = 1;   // devices of the expert-parallel group; slot s on s / (R / D)
  KnobValues knobs;
  // Figures over the steps of the current epoch (all layers together).
  double drop_rate = 0;
  double overflow_rate = 0;
  double step_us = 0;
  double max_over_mean = 0;
  // Mean over steps and layers of the max-over-mean of expert_demand (before
  // capacity, so no knob caps it); absent when the engine reports no demand.
  std::optional<double> demand_max_over_mean;
  std::optional<double> quality_error;
  double tokens_per_step = 0;  // mean tokens entering the first layer per step
  std::vector<LayerEstimate> layers;
  // The model's configured K (the engine's first Hello): the reference of
  // the reward's balanced latency.
  uint32_t reference_top_k = 0;
  // The cost model fitted from the engine's measured per-device times
  // (calibrated == false until enough steps were seen).
  CostModel cost_model;
  // The window's steps, whatever epoch they ran under, oldest first: demand
  // does not depend on capacity or placement, so every step is evidence.
  StepWindow recent;
  // Beside `recent` (same length, or empty): each step's CapacityReplay, or
  // null where the controller keeps none.
  std::vector<std::shared_ptr<const CapacityReplay>> capacity_replays;
};

// A policy's wish: set `knob` (on `layer`, or every layer when -1) to `value`.
// A vector knob (expert_bias) sets `vectors` instead: the whole new vector of
// every layer, [num_layers][num_experts], beside `current_vectors`, the
// vectors in force (an empty layer = zeros); `current` and `value` then hold
// the largest |element| before and after, for logs. The placement knob
// (phy2log) sets `placements` beside `current_placements` the same way,
// [num_layers][num_replicas], every layer spelled out (no empty layers);
// `current` and `value` then hold the mean over layers of the planned
// device max-over-mean load before and after.
struct Proposal {
  std::string policy;  // e.g. "capacity"
  std::string knob;    // a row of the knob table (knobs.h)
  int32_t layer = -1;
  double current = 0;
  double value = 0;
  std::string reason;  // human-readable: the figures that led to it
  std::vector<std::vector<float>> current_vectors;
  std::vector<std::vector<float>> vectors;
  std::vector<std::vector<uint32_t>> current_placements;
  std::vector<std::vector<uint32_t>> placements;
  // Other scalar knobs of the same setting (the learning policy's joint
  // settings): each judged by the guard and sent in this proposal's command,
  // as a joint change. Each has the same policy and layer; none has
  // companions of its own.
  std::vector<Proposal> companions;
};

// The snapshot's layer estimates indexed by layer id: entry l is the first
// estimate of layer l, or null when the snapshot has none. At least
// `min_layers` entries (e.g. the layers a knob in force covers).
inline std::vector<const LayerEstimate*> LayersById(const EngineSnapshot& snapshot,
                                                    size_t min_layers) {
  size_t num_layers = min_layers;
  for (const LayerEstimate& est : snapshot.layers)
    num_layers = std::max(num_layers, static_cast<size_t>(est.layer) + 1);
  std::vector<const LayerEstimate*> by_layer(num_layers, nullptr);
  for (const LayerEstimate& est : snapshot.layers) {
    if (by_layer[est.layer] == nullptr) by_layer[est.layer] = &est;
  }
  return by_layer;
}

// True for knobs whose proposals carry `vectors` (KnobKind::kVector).
inline bool IsVectorKnob(std::string_view knob) {
  const KnobSpec* spec = FindKnob(knob);
  return spec != nullptr && spec->kind == KnobKind::kVector;
}

// True for the knob whose proposals carry `placements` (KnobKind::kPlacement).
inline bool IsPlacementKnob(std::string_view knob) {
  const KnobSpec* spec = FindKnob(knob);
  return spec != nullptr && spec->kind == KnobKind::kPlacement;
}

}  // namespace moe::policies

#endif  // MOE_POLICIES_SNAPSHOT_H_
