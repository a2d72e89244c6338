#include "engine_state.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include "moe/policies/counterfactual_policy.h"
#include "moe/telemetry/load.h"

namespace moe::controller {

StepFigures Summarise(const telemetry::StepRecord& record) {
  StepFigures f;
  f.step = record.step;
  f.epoch = record.epoch;
  f.step_us = record.step_us;
  if (!record.layers.empty()) f.tokens = record.layers.front().num_tokens;
  auto demand = std::make_shared<policies::StepDemand>();
  demand->step = record.step;
  demand->epoch = record.epoch;
  demand->tokens = f.tokens;
  double quality_sum = 0;
  int quality_n = 0;
  double demand_sum = 0;
  int demand_n = 0;
  f.has_device_rows = !record.layers.empty();
  f.layers.reserve(record.layers.size());
  f.expert_load.reserve(record.layers.size());
  for (const telemetry::LayerRecord& layer : record.layers) {
    if (!layer.expert_demand.empty()) {
      demand_sum += telemetry::MaxOverMean(layer.expert_demand);
      ++demand_n;
    }
    f.token_slots += layer.num_token_slots;
    f.dropped += layer.dropped;
    f.overflowed += layer.overflowed;
    LayerFigures e;
    e.layer = layer.layer;
    double slots = std::max<double>(1, static_cast<double>(layer.num_token_slots));
    e.drop_rate = layer.dropped / slots;
    e.overflow_rate = layer.overflowed / slots;
    e.max_over_mean = telemetry::MaxOverMean(layer.expert_tokens);
    f.expert_load.emplace_back(layer.expert_tokens.begin(), layer.expert_tokens.end());
    if (demand->layers.size() <= layer.layer) demand->layers.resize(layer.layer + 1);
    demand->layers[layer.layer].assign(layer.expert_demand.begin(), layer.expert_demand.end());
    e.layer_us = layer.timing.total_us;
    f.layer_tokens.push_back(layer.num_tokens);
    f.device_rows.emplace_back(layer.device_tokens.begin(), layer.device_tokens.end());
    f.max_device_rows.push_back(layer.device_tokens.empty()
                                    ? 0.0
                                    : static_cast<double>(*std::max_element(
                                          layer.device_tokens.begin(), layer.device_tokens.end())));
    f.has_device_rows = f.has_device_rows && !layer.device_tokens.empty();
    f.all_to_all_us.push_back(layer.timing.all_to_all_us);
    f.path_sums.AddLayer(layer.num_tokens, f.max_device_rows.back(), layer.timing.all_to_all_us);
    f.critical_path_us += layer.timing.total_us;
    f.device_max_over_mean +=
        layer.device_tokens.empty() ? 1.0 : telemetry::MaxOverMean(layer.device_tokens);
    e.has_quality = layer.quality_error.has_value();
    e.quality_error = layer.quality_error.value_or(0);
    f.max_over_mean += e.max_over_mean;
    if (layer.quality_error) {
      quality_sum += *layer.quality_error;
      ++quality_n;
    }
    f.layers.push_back(e);
  }
  if (!record.layers.empty()) {
    f.max_over_mean /= static_cast<double>(record.layers.size());
    f.device_max_over_mean /= static_cast<double>(record.layers.size());
  }
  if (quality_n > 0) f.quality_error = quality_sum / quality_n;
  if (demand_n > 0) f.demand_max_over_mean = demand_sum / demand_n;
  f.migration_us = record.placement_move_us;
  demand->all_to_all_us = f.all_to_all_us;
  f.bytes =
      sizeof(StepFigures) + f.layers.capacity() * sizeof(LayerFigures) +
      f.expert_load.capacity() * sizeof(std::vector<double>) +
      (f.layer_tokens.capacity() + f.all_to_all_us.capacity() + f.max_device_rows.capacity()) *
          sizeof(double) +
      f.device_rows.capacity() * sizeof(std::vector<double>) + sizeof(policies::StepDemand) +
      demand->layers.capacity() * sizeof(std::vector<double>) +
      demand->all_to_all_us.capacity() * sizeof(double);
  for (const std::vector<double>& rows : f.device_rows)
    f.bytes += rows.capacity() * sizeof(double);
  for (const std::vector<double>& load : f.expert_load)
    f.bytes += load.capacity() * sizeof(double);
  for (const std::vector<double>& d : demand->layers)
    f.bytes += d.capacity() * sizeof(double);
  f.demand = std::move(demand);
  return f;
}

void EpochSums::VectorSum::Add(const std::vector<double>& v) {
  if (v.empty()) return;
  if (sum_.size() < v.size()) sum_.resize(v.size(), 0.0);
  for (size_t i = 0; i < v.size(); ++i)
    sum_[i] += v[i];
  for (auto& [length, count] : lengths_) {
    if (length == v.size()) {
      ++count;
      return;
    }
  }
  lengths_.emplace_back(v.size(), 1);
}

void EpochSums::VectorSum::Subtract(const std::vector<double>& v) {
  if (v.empty()) return;
  for (size_t i = 0; i < v.size() && i < sum_.size(); ++i)
    sum_[i] -= v[i];
  std::erase_if(lengths_, [&](std::pair<size_t, uint64_t>& entry) {
    return entry.first == v.size() && --entry.second == 0;
  });
  // Nothing left: start again from exact zeros.
  if (lengths_.empty()) sum_.clear();
}

size_t EpochSums::VectorSum::size() const {
  size_t longest = 0;
  for (const auto& [length, count] : lengths_)
    longest = std::max(longest, length);
  return longest;
}

std::vector<double> EpochSums::VectorSum::MeanOver(double n) const {
  std::vector<double> out(sum_.begin(), sum_.begin() + static_cast<std::ptrdiff_t>(size()));
  for (double& x : out)
    x /= n;
  return out;
}

void EpochSums::Add(const StepFigures& step) {
  ++steps_;
  for (size_t i = 0; i < step.layers.size(); ++i) {
    const uint32_t layer = step.layers[i].layer;
    if (layers_.size() <= layer) layers_.resize(layer + 1);
    Layer& acc = layers_[layer];
    ++acc.steps;
    acc.load.Add(step.expert_load[i]);
    acc.demand.Add(step.demand->layers[layer]);
  }
}

void EpochSums::Subtract(const StepFigures& step) {
  --steps_;
  for (size_t i = 0; i < step.layers.size(); ++i) {
    const uint32_t layer = step.layers[i].layer;
    Layer& acc = layers_[layer];
    --acc.steps;
    acc.load.Subtract(step.expert_load[i]);
    acc.demand.Subtract(step.demand->layers[layer]);
  }
  while (!layers_.empty() && layers_.back().steps == 0)
    layers_.pop_back();
  if (steps_ == 0) layers_.clear();
}

uint64_t EpochSums::bytes() const {
  uint64_t total = layers_.capacity() * sizeof(Layer);
  for (const Layer& l : layers_)
    total += l.load.bytes() + l.demand.bytes();
  return total;
}

void EngineState::set_cost_model_options(const CostModelOptions& options) {
  if (options == cost_options_) return;
  cost_options_ = options;
  if (options.fixed) {
    cost_model_.device = options.device;
    cost_model_.overhead = options.overhead;
    cost_model_.calibrated = true;
  } else {
    // Refitted from the points gathered at the next step; until then none.
    cost_model_.calibrated = false;
  }
  if (!options.stragglers) {
    device_speed_ = policies::DeviceSpeedEstimator();
    cost_model_.device_factor.clear();
    logged_factors_.clear();
  }
  cost_model_news_ = true;
}

void EngineState::FitCostModel(const telemetry::StepRecord& record) {
  const bool stragglers = cost_options_.stragglers;
  for (const telemetry::LayerRecord& layer : record.layers) {
    const telemetry::LayerTiming& t = layer.timing;
    for (size_t d = 0; d < layer.device_tokens.size() && d < t.device_expert_us.size(); ++d) {
      if (layer.device_tokens[d] == 0) continue;
      // The fit is of a device at the usual speed: a straggler's times are
      // scaled back by its factor, and its ratio to the model measured.
      if (cost_model_.calibrated && stragglers) {
        device_speed_.Add(d, layer.device_tokens[d], t.device_expert_us[d], cost_model_.device);
      }
      // Gathered under a fixed model too, so a reload back to the fit has points.
      device_fit_.Add(layer.device_tokens[d], t.device_expert_us[d] / device_speed_.FactorOf(d));
    }
    overhead_fit_.Add(layer.num_tokens, t.router_us + t.dispatch_us + t.combine_us);
  }
  if (stragglers) device_speed_.EndStep();
  if (!cost_options_.fixed) {
    Result<policies::AffineCost> device = device_fit_.Fit(16);
    if (!device.ok()) return;
    cost_model_.device = *device;
    // The tokens may not vary (a steady workload): then the overhead is its mean.
    Result<policies::AffineCost> overhead = overhead_fit_.Fit(4);
    if (overhead.ok()) {
      cost_model_.overhead = *overhead;
    } else {
      cost_model_.overhead = overhead_fit_.Flat();
    }
    if (!cost_model_.calibrated || steps_seen_ - cost_model_logged_step_ >= 4096) {
      cost_model_news_ = true;
    }
    cost_model_.calibrated = true;
  }
  if (!stragglers) return;
  // A median of the window's step ratios: a slowdown shows half a window
  // after it began, at a cost of O(devices x window) a step.
  device_speed_.Update();
  cost_model_.device_factor = device_speed_.Factors();
  const std::vector<double>& f = cost_model_.device_factor;
  bool moved = f.size() != logged_factors_.size();
  for (size_t d = 0; !moved && d < f.size(); ++d)
    moved = std::abs(f[d] - logged_factors_[d]) > 0.1 * logged_factors_[d];
  if (moved) {
    cost_model_news_ = true;
    logged_factors_ = f;
  }
}

std::optional<std::string> EngineState::TakeCostModelNews() {
  if (!cost_model_news_) return std::nullopt;
  cost_model_news_ = false;
  cost_model_logged_step_ = steps_seen_;
  std::string slow;
  for (size_t d = 0; d < cost_model_.device_factor.size(); ++d) {
    if (cost_model_.device_factor[d] != 1.0) {
      slow += fmt::format(", device {} at {:.2f}x", d, cost_model_.device_factor[d]);
    }
  }
  return fmt::format(
      "a device runs {:.1f} us + {:.4f} us a row, a layer's router and exchange {:.1f} us + "
      "{:.4f} us a token ({}){}",
      cost_model_.device.fixed_us, cost_model_.device.per_row_us, cost_model_.overhead.fixed_us,
      cost_model_.overhead.per_row_us,
      cost_options_.fixed ? std::string("fixed by [cost_model]")
                          : fmt::format("{} device points", device_fit_.count()),
      !cost_options_.stragglers ? std::string(", stragglers not measured")
      : slow.empty()            ? std::string(", every device at the usual speed")
                                : slow);
}

std::pair<double, double> EngineState::ModelledPath(const StepFigures& step) const {
  if (!cost_model_.calibrated || !step.has_device_rows) return {0, 0};
  const uint32_t num_devices = std::max<uint32_t>(1, hello_.num_devices);
  const double k = reference_top_k_ > 0 ? reference_top_k_ : ledger_.KnobsRefOf(epoch_).top_k;
  // Every device at the usual speed and a device cost that never falls with
  // rows: the step's sums price it in O(1) (policies::PathSums); a straggler
  // needs every layer's devices.
  const bool by_sums = policies::PricesCapacityReplays(cost_model_);
  const bool balanced_by_sums = cost_model_.device_factor.empty();
  double path = by_sums ? policies::PathUs(cost_model_, step.path_sums) : 0;
  double balanced =
      balanced_by_sums ? policies::BalancedPathUs(cost_model_, step.path_sums, k, num_devices) : 0;
  if (by_sums && balanced_by_sums) return {path, balanced};
  for (size_t l = 0; l < step.device_rows.size(); ++l) {
    const double tokens = step.layer_tokens[l];
    if (!by_sums) {
      path +=
          policies::LayerPathUs(cost_model_, tokens, step.device_rows[l], step.all_to_all_us[l]);
    }
    if (!balanced_by_sums) {
      balanced += policies::BalancedLayerPathUs(cost_model_, tokens, tokens * k, num_devices,
                                                step.all_to_all_us[l]);
    }
  }
  return {path, balanced};
}

void EngineState::OnHello(const telemetry::Hello& hello, int64_t now_ns) {
  bool restarted = has_hello_ && hello.epoch < epoch_;
  if (!has_hello_ && hello.knobs.top_k) reference_top_k_ = *hello.knobs.top_k;
  // A new shape (the engine restarted with another model) makes the old
  // steps meaningless too.
  const bool reshaped =
      has_hello_ &&
      (hello.num_layers != hello_.num_layers || hello.num_experts != hello_.num_experts ||
       hello.num_replicas != hello_.num_replicas || hello.num_devices != hello_.num_devices);
  if (restarted || reshaped) {
    window_.clear();
    window_bytes_ = 0;
    sums_ = EpochSums{};
  }
  hello_ = hello;
  has_hello_ = true;
  epoch_ = hello.epoch;
  // The Hello holds every knob in force; what it lacks keeps the defaults.
  // The vectors of every layer: the engine-wide one, then per-layer differences.
  policies::KnobValues knobs =
      policies::KnobValuesOf(hello.knobs, hello.layer_knobs, hello.num_layers);
  ledger_.OnHello(hello.epoch, knobs, restarted);
  last_step_ns_ = std::max(last_step_ns_, now_ns);
  SyncSums();
}

void EngineState::SyncSums() {
  if (sums_epoch_ == epoch_) return;
  sums_epoch_ = epoch_;
  sums_ = EpochSums{};
  for (const StepFigures& step : window_) {
    if (step.epoch == sums_epoch_) sums_.Add(step);
  }
}

void EngineState::Evict() {
  const StepFigures& oldest = window_.front();
  window_bytes_ -= oldest.bytes;
  if (oldest.epoch == sums_epoch_) sums_.Subtract(oldest);
  window_.pop_front();
}

std::optional<uint64_t> EngineState::OnStep(const telemetry::StepRecord& record, int64_t now_ns) {
  last_step_ns_ = now_ns;
  ++steps_seen_;
  std::optional<uint64_t> ended;
  if (record.epoch > epoch_ && !window_.empty()) ended = epoch_;
  epoch_ = std::max(epoch_, record.epoch);
  ledger_.OnStep(record.epoch);
  SyncSums();
  window_.push_back(Summarise(record));
  window_bytes_ += window_.back().bytes;
  if (window_.back().epoch == sums_epoch_) sums_.Add(window_.back());
  FitCostModel(record);
  UpdateCapacityReplays();
  while (window_.size() > 1 &&
         (window_.size() > window_steps_ || window_bytes_ > window_bytes_limit_)) {
    Evict();
  }
  return ended;
}

void EngineState::set_capacity_replays(std::vector<double> factors, size_t lookback) {
  replay_factors_ = std::move(factors);
  replay_lookback_ = lookback;
  if (replay_factors_.empty()) {
    for (StepFigures& f : window_) {
      if (!f.capacity) continue;
      f.bytes -= f.capacity->bytes();
      window_bytes_ -= f.capacity->bytes();
      f.capacity.reset();
    }
  }
}

void EngineState::UpdateCapacityReplays() {
  // Only for a cost model the counterfactual policy can price them with.
  if (replay_factors_.empty() || !has_hello_ || !cost_model_.calibrated ||
      !policies::PricesCapacityReplays(cost_model_)) {
    return;
  }
  const policies::KnobValues& knobs = ledger_.KnobsRefOf(epoch_);
  std::vector<double> factors = replay_factors_;
  if (std::find(factors.begin(), factors.end(), knobs.capacity_factor) == factors.end()) {
    factors.push_back(knobs.capacity_factor);
  }
  const uint32_t replicas = hello_.num_replicas > 0 ? hello_.num_replicas : hello_.num_experts;
  const uint32_t devices = std::max<uint32_t>(1, hello_.num_devices);
  const policies::CapacityReplay::Settings settings =
      policies::ReplaySettings(knobs, replicas, devices);
  const size_t lookback = replay_lookback_ > 0 ? replay_lookback_ : window_.size();
  size_t n = 0;
  for (auto it = window_.rbegin(); it != window_.rend() && n < lookback; ++it) {
    if (!policies::StepHasDemand(*it->demand)) continue;
    ++n;
    if (it->capacity && it->capacity->settings == settings &&
        it->capacity->capacity_factors == factors) {
      continue;
    }
    if (it->capacity) {
      it->bytes -= it->capacity->bytes();
      window_bytes_ -= it->capacity->bytes();
    }
    it->capacity = policies::ReplayCapacities(*it->demand, knobs, replicas, devices, factors);
    it->bytes += it->capacity->bytes();
    window_bytes_ += it->capacity->bytes();
  }
}

void ApplyChange(const KnobChange& change, policies::KnobValues& knobs) {
  const policies::KnobSpec* spec = policies::FindKnob(change.knob);
  if (spec == nullptr) return;
  if (spec->scalar()) spec->set_value(&knobs, change.value);
  if (spec->kind == policies::KnobKind::kVector) knobs.*spec->vectors = change.vectors;
  if (spec->kind == policies::KnobKind::kPlacement) knobs.*spec->placements = change.placements;
}

void EngineState::OnSent(uint64_t epoch, const KnobChange& change,
                         const std::vector<KnobChange>& companions) {
  policies::KnobValues knobs = ledger_.KnobsOf(epoch_);
  ApplyChange(change, knobs);
  for (const KnobChange& c : companions)
    ApplyChange(c, knobs);
  ledger_.OnSent(epoch, std::move(knobs));
  last_issued_epoch_ = std::max(last_issued_epoch_, epoch);
}

double EngineState::KnobValue(const std::string& knob) const {
  const policies::KnobSpec* spec = policies::FindKnob(knob);
  if (spec == nullptr) return 0;
  const policies::KnobValues in_force = knobs();
  if (spec->scalar()) return spec->value(in_force);
  if (spec->kind == policies::KnobKind::kVector) {
    double largest = 0;
    for (const std::vector<float>& layer : in_force.*spec->vectors) {
      for (float b : layer)
        largest = std::max(largest, std::abs(static_cast<double>(b)));
    }
    return largest;
  }
  return 0;
}

std::vector<std::vector<uint32_t>> EngineState::Placements() const {
  const uint32_t num_replicas = hello_.num_replicas > 0 ? hello_.num_replicas : hello_.num_experts;
  std::vector<uint32_t> fallback(num_replicas);
  for (uint32_t s = 0; s < num_replicas; ++s)
    fallback[s] = hello_.num_experts > 0 ? s % hello_.num_experts : 0;
  std::vector<std::vector<uint32_t>> out(hello_.num_layers, fallback);
  const policies::KnobValues& in_force = ledger_.KnobsRefOf(epoch_);
  for (size_t l = 0; l < out.size() && l < in_force.phy2log.size(); ++l) {
    if (in_force.phy2log[l].size() == num_replicas) out[l] = in_force.phy2log[l];
  }
  return out;
}

std::vector<std::vector<float>> EngineState::KnobVectors(const std::string& knob) const {
  std::vector<std::vector<float>> out;
  const policies::KnobSpec* spec = policies::FindKnob(knob);
  if (spec == nullptr || spec->kind != policies::KnobKind::kVector) return out;
  out.assign(hello_.num_layers, std::vector<float>(hello_.num_experts, 0.0f));
  const std::vector<std::vector<float>>& in_force = ledger_.KnobsRefOf(epoch_).*spec->vectors;
  for (size_t l = 0; l < out.size() && l < in_force.size(); ++l) {
    if (in_force[l].size() == hello_.num_experts) out[l] = in_force[l];
  }
  return out;
}

uint64_t EngineState::StepsUnder(uint64_t epoch) const {
  return static_cast<uint64_t>(std::count_if(
      window_.begin(), window_.end(), [&](const StepFigures& f) { return f.epoch == epoch; }));
}

policies::OutcomeFigures EngineState::Figures(uint64_t epoch, size_t max_steps) const {
  policies::OutcomeFigures out;
  out.capacity_factor = ledger_.KnobsOf(epoch).capacity_factor;
  uint64_t slots = 0, dropped = 0;
  double step_us = 0, critical_path = 0, imbalance = 0, device_imbalance = 0, quality = 0;
  double model_path = 0, balanced_path = 0, migration = 0;
  bool modelled = true;
  int quality_n = 0;
  for (auto it = window_.rbegin(); it != window_.rend() && out.steps < max_steps; ++it) {
    if (it->epoch != epoch) continue;
    ++out.steps;
    slots += it->token_slots;
    dropped += it->dropped;
    step_us += it->step_us;
    critical_path += it->critical_path_us;
    const auto [path, balanced] = ModelledPath(*it);
    modelled = modelled && balanced > 0;
    model_path += path;
    balanced_path += balanced;
    migration += it->migration_us;
    imbalance += it->max_over_mean;
    device_imbalance += it->device_max_over_mean;
    if (it->quality_error) {
      quality += *it->quality_error;
      ++quality_n;
    }
  }
  if (out.steps == 0) return out;
  out.drop_rate = slots ? static_cast<double>(dropped) / static_cast<double>(slots) : 0;
  out.step_us = step_us / static_cast<double>(out.steps);
  out.critical_path_us = critical_path / static_cast<double>(out.steps);
  if (modelled) {
    out.model_latency_us = model_path / static_cast<double>(out.steps);
    out.balanced_latency_us = balanced_path / static_cast<double>(out.steps);
  }
  out.migration_us = migration / static_cast<double>(out.steps);
  out.max_over_mean = imbalance / static_cast<double>(out.steps);
  out.device_max_over_mean = device_imbalance / static_cast<double>(out.steps);
  if (quality_n > 0) out.quality_error = quality / quality_n;
  return out;
}

policies::EngineSnapshot EngineState::SnapshotOf(uint64_t epoch, int64_t now_ns) const {
  policies::EngineSnapshot s;
  s.engine_id = engine_id_;
  s.now_ns = now_ns;
  s.last_telemetry_ns = last_step_ns_;
  s.epoch = epoch;
  s.num_experts = hello_.num_experts;
  s.num_replicas = hello_.num_replicas > 0 ? hello_.num_replicas : hello_.num_experts;
  s.num_devices = std::max<uint32_t>(1, hello_.num_devices);
  s.knobs = ledger_.KnobsOf(epoch);
  policies::OutcomeFigures f = Figures(epoch, window_steps_);
  s.steps_in_epoch = f.steps;
  s.drop_rate = f.drop_rate;
  s.step_us = f.step_us;
  s.max_over_mean = f.max_over_mean;
  s.quality_error = f.quality_error;
  uint64_t slots = 0, overflowed = 0;
  double tokens = 0, demand_imbalance = 0;
  uint64_t demand_steps = 0;
  // The per-expert sums: kept for the epoch in force, from scratch for another.
  EpochSums scratch;
  if (epoch != sums_epoch_) {
    for (const StepFigures& step : window_) {
      if (step.epoch == epoch) scratch.Add(step);
    }
  }
  const EpochSums& sums = epoch == sums_epoch_ ? sums_ : scratch;
  std::vector<policies::LayerEstimate> layers(sums.layers().size());
  std::vector<uint32_t> quality_counts(layers.size());
  // The per-layer scalars are few: summed from the window in its order.
  for (const StepFigures& step : window_) {
    if (step.epoch != epoch) continue;
    slots += step.token_slots;
    if (step.demand_max_over_mean) {
      demand_imbalance += *step.demand_max_over_mean;
      ++demand_steps;
    }
    overflowed += step.overflowed;
    tokens += step.tokens;
    for (const LayerFigures& e : step.layers) {
      policies::LayerEstimate& acc = layers[e.layer];
      acc.layer = e.layer;
      acc.drop_rate += e.drop_rate;
      acc.overflow_rate += e.overflow_rate;
      acc.max_over_mean += e.max_over_mean;
      acc.layer_us += e.layer_us;
      if (e.has_quality) {
        acc.quality_error = acc.quality_error.value_or(0) + e.quality_error;
        ++quality_counts[e.layer];
      }
    }
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const EpochSums::Layer& sum = sums.layers()[i];
    if (sum.steps == 0) continue;
    double n = static_cast<double>(sum.steps);
    layers[i].drop_rate /= n;
    layers[i].overflow_rate /= n;
    layers[i].max_over_mean /= n;
    layers[i].layer_us /= n;
    layers[i].expert_load = sum.load.MeanOver(n);
    layers[i].expert_demand = sum.demand.MeanOver(n);
    if (layers[i].quality_error) *layers[i].quality_error /= quality_counts[i];
  }
  s.overflow_rate = slots ? static_cast<double>(overflowed) / static_cast<double>(slots) : 0;
  if (f.steps > 0) s.tokens_per_step = tokens / static_cast<double>(f.steps);
  if (demand_steps > 0) {
    s.demand_max_over_mean = demand_imbalance / static_cast<double>(demand_steps);
  }
  s.layers = std::move(layers);
  s.reference_top_k = reference_top_k_ > 0 ? reference_top_k_ : ledger_.KnobsRefOf(epoch_).top_k;
  s.cost_model = cost_model_;
  s.recent.reserve(window_.size());
  for (const StepFigures& step : window_)
    s.recent.push_back(step.demand);
  if (!replay_factors_.empty()) {
    s.capacity_replays.reserve(window_.size());
    for (const StepFigures& step : window_)
      s.capacity_replays.push_back(step.capacity);
  }
  return s;
}

}  // namespace moe::controller
