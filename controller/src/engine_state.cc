#include "engine_state.h"

#include <algorithm>
#include <cmath>

#include "moe/telemetry/load.h"

namespace moe::controller {

StepFigures Summarise(const telemetry::StepRecord& record) {
  StepFigures f;
  f.step = record.step;
  f.epoch = record.epoch;
  f.step_us = record.step_us;
  if (!record.layers.empty()) f.tokens = record.layers.front().num_tokens;
  double quality_sum = 0;
  int quality_n = 0;
  double demand_sum = 0;
  int demand_n = 0;
  for (const telemetry::LayerRecord& layer : record.layers) {
    if (!layer.expert_demand.empty()) {
      demand_sum += telemetry::MaxOverMean(layer.expert_demand);
      ++demand_n;
    }
    f.token_slots += layer.num_token_slots;
    f.dropped += layer.dropped;
    f.overflowed += layer.overflowed;
    policies::LayerEstimate e;
    e.layer = layer.layer;
    double slots = std::max<double>(1, static_cast<double>(layer.num_token_slots));
    e.drop_rate = layer.dropped / slots;
    e.overflow_rate = layer.overflowed / slots;
    e.max_over_mean = telemetry::MaxOverMean(layer.expert_tokens);
    e.expert_load.assign(layer.expert_tokens.begin(), layer.expert_tokens.end());
    e.expert_demand.assign(layer.expert_demand.begin(), layer.expert_demand.end());
    e.layer_us = layer.timing.total_us;
    f.layer_tokens.push_back(layer.num_tokens);
    f.device_rows.emplace_back(layer.device_tokens.begin(), layer.device_tokens.end());
    f.all_to_all_us.push_back(layer.timing.all_to_all_us);
    f.critical_path_us += layer.timing.total_us;
    f.device_max_over_mean +=
        layer.device_tokens.empty() ? 1.0 : telemetry::MaxOverMean(layer.device_tokens);
    e.quality_error = layer.quality_error;
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
  f.bytes = sizeof(StepFigures) + f.layers.capacity() * sizeof(policies::LayerEstimate) +
            (f.layer_tokens.capacity() + f.all_to_all_us.capacity()) * sizeof(double) +
            f.device_rows.capacity() * sizeof(std::vector<double>);
  for (const policies::LayerEstimate& e : f.layers)
    f.bytes += (e.expert_load.capacity() + e.expert_demand.capacity()) * sizeof(double);
  for (const std::vector<double>& rows : f.device_rows)
    f.bytes += rows.capacity() * sizeof(double);
  return f;
}

void EngineState::FitCostModel(const telemetry::StepRecord& record) {
  for (const telemetry::LayerRecord& layer : record.layers) {
    const telemetry::LayerTiming& t = layer.timing;
    for (size_t d = 0; d < layer.device_tokens.size() && d < t.device_expert_us.size(); ++d) {
      if (layer.device_tokens[d] > 0)
        device_fit_.Add(layer.device_tokens[d], t.device_expert_us[d]);
    }
    overhead_fit_.Add(layer.num_tokens, t.router_us + t.dispatch_us + t.combine_us);
  }
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
  cost_model_.calibrated = true;
}

std::pair<double, double> EngineState::ModelledPath(const StepFigures& step) const {
  if (!cost_model_.calibrated || step.device_rows.empty()) return {0, 0};
  const uint32_t num_devices = std::max<uint32_t>(1, hello_.num_devices);
  const double k = reference_top_k_ > 0 ? reference_top_k_ : knobs().top_k;
  double path = 0, balanced = 0;
  for (size_t l = 0; l < step.device_rows.size(); ++l) {
    if (step.device_rows[l].empty()) return {0, 0};
    const double tokens = step.layer_tokens[l];
    path += policies::LayerPathUs(cost_model_, tokens, step.device_rows[l], step.all_to_all_us[l]);
    balanced += policies::BalancedLayerPathUs(cost_model_, tokens, tokens * k, num_devices,
                                              step.all_to_all_us[l]);
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
}

std::optional<uint64_t> EngineState::OnStep(const telemetry::StepRecord& record, int64_t now_ns) {
  last_step_ns_ = now_ns;
  ++steps_seen_;
  std::optional<uint64_t> ended;
  if (record.epoch > epoch_ && !window_.empty()) ended = epoch_;
  epoch_ = std::max(epoch_, record.epoch);
  ledger_.OnStep(record.epoch);
  window_.push_back(Summarise(record));
  window_bytes_ += window_.back().bytes;
  FitCostModel(record);
  while (window_.size() > 1 &&
         (window_.size() > window_steps_ || window_bytes_ > window_bytes_limit_)) {
    window_bytes_ -= window_.front().bytes;
    window_.pop_front();
  }
  return ended;
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
  ledger_.OnSent(epoch, knobs);
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
  const policies::KnobValues in_force = knobs();
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
  const policies::KnobValues values = knobs();
  const std::vector<std::vector<float>>& in_force = values.*spec->vectors;
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
  std::vector<policies::LayerEstimate> layers;
  std::vector<uint32_t> counts;
  std::vector<uint32_t> quality_counts;
  for (const StepFigures& step : window_) {
    if (step.epoch != epoch) continue;
    slots += step.token_slots;
    if (step.demand_max_over_mean) {
      demand_imbalance += *step.demand_max_over_mean;
      ++demand_steps;
    }
    overflowed += step.overflowed;
    tokens += step.tokens;
    for (const policies::LayerEstimate& e : step.layers) {
      if (e.layer >= layers.size()) {
        layers.resize(e.layer + 1);
        counts.resize(e.layer + 1);
        quality_counts.resize(e.layer + 1);
      }
      policies::LayerEstimate& acc = layers[e.layer];
      acc.layer = e.layer;
      acc.drop_rate += e.drop_rate;
      acc.overflow_rate += e.overflow_rate;
      acc.max_over_mean += e.max_over_mean;
      acc.layer_us += e.layer_us;
      if (acc.expert_load.size() < e.expert_load.size())
        acc.expert_load.resize(e.expert_load.size());
      for (size_t i = 0; i < e.expert_load.size(); ++i)
        acc.expert_load[i] += e.expert_load[i];
      if (acc.expert_demand.size() < e.expert_demand.size()) {
        acc.expert_demand.resize(e.expert_demand.size());
      }
      for (size_t i = 0; i < e.expert_demand.size(); ++i)
        acc.expert_demand[i] += e.expert_demand[i];
      if (e.quality_error) {
        acc.quality_error = acc.quality_error.value_or(0) + *e.quality_error;
        ++quality_counts[e.layer];
      }
      ++counts[e.layer];
    }
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    if (counts[i] == 0) continue;
    double n = counts[i];
    layers[i].drop_rate /= n;
    layers[i].overflow_rate /= n;
    layers[i].max_over_mean /= n;
    layers[i].layer_us /= n;
    for (double& load : layers[i].expert_load)
      load /= n;
    for (double& demand : layers[i].expert_demand)
      demand /= n;
    if (layers[i].quality_error) *layers[i].quality_error /= quality_counts[i];
  }
  s.overflow_rate = slots ? static_cast<double>(overflowed) / static_cast<double>(slots) : 0;
  if (f.steps > 0) s.tokens_per_step = tokens / static_cast<double>(f.steps);
  if (demand_steps > 0) {
    s.demand_max_over_mean = demand_imbalance / static_cast<double>(demand_steps);
  }
  s.layers = std::move(layers);
  s.reference_top_k = reference_top_k_ > 0 ? reference_top_k_ : knobs().top_k;
  s.cost_model = cost_model_;
  s.recent.reserve(window_.size());
  for (const StepFigures& step : window_) {
    policies::StepDemand d;
    d.step = step.step;
    d.epoch = step.epoch;
    d.tokens = step.tokens;
    d.all_to_all_us = step.all_to_all_us;
    for (const policies::LayerEstimate& e : step.layers) {
      if (d.layers.size() <= e.layer) d.layers.resize(e.layer + 1);
      d.layers[e.layer] = e.expert_demand;
    }
    s.recent.push_back(std::move(d));
  }
  return s;
}

}  // namespace moe::controller
