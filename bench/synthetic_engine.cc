#include "synthetic_engine.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <utility>

namespace moe::bench {
namespace {

// Zipf exponent of expert popularity: the hottest expert of a layer draws
// about 9x the mean demand of 256 experts (real DeepSeek routing: 7-8x).
constexpr double kZipfExponent = 0.9;
// How strongly a unit of selection bias moves demand (exp(-kBiasGain * b)).
constexpr double kBiasGain = 20.0;
// The popularity of every layer rotates by one rank this often (load drift).
constexpr uint64_t kDriftSteps = 64;
// Relative per-step noise of each expert's demand.
constexpr double kDemandNoise = 0.05;

}  // namespace

SyntheticEngine::SyntheticEngine(std::string engine_id, const ModelShape& shape, uint64_t seed)
    : engine_id_(std::move(engine_id)), shape_(shape), rng_(seed), top_k_(shape.top_k) {
  const uint32_t e = shape_.num_experts;
  rank_.resize(shape_.num_layers);
  bias_.assign(shape_.num_layers, std::vector<float>(e, 0.0f));
  weight_.assign(shape_.num_layers, std::vector<double>(e, 0.0));
  phy2log_.assign(shape_.num_layers, std::vector<uint32_t>(shape_.num_replicas));
  for (uint32_t l = 0; l < shape_.num_layers; ++l) {
    rank_[l].resize(e);
    std::iota(rank_[l].begin(), rank_[l].end(), 0u);
    std::shuffle(rank_[l].begin(), rank_[l].end(), rng_);
    for (uint32_t s = 0; s < shape_.num_replicas; ++s)
      phy2log_[l][s] = s % e;
    RefreshWeights(l);
  }
}

void SyntheticEngine::RefreshWeights(uint32_t layer) {
  const uint32_t e = shape_.num_experts;
  const uint64_t shift = step_ / kDriftSteps;
  double sum = 0;
  for (uint32_t x = 0; x < e; ++x) {
    const uint64_t rank = (rank_[layer][x] + shift) % e;
    double w = std::pow(static_cast<double>(rank) + 1.0, -kZipfExponent) *
               std::exp(-kBiasGain * static_cast<double>(bias_[layer][x]));
    weight_[layer][x] = w;
    sum += w;
  }
  for (double& w : weight_[layer])
    w /= sum;
}

telemetry::Hello SyntheticEngine::Hello() const {
  telemetry::Hello h;
  h.engine_id = engine_id_;
  h.backend = "synthetic";
  h.num_layers = shape_.num_layers;
  h.num_experts = shape_.num_experts;
  h.num_shared_experts = 1;
  h.num_replicas = shape_.num_replicas;
  h.num_devices = shape_.num_devices;
  h.hidden = 7168;
  h.epoch = epoch_;
  h.knobs.top_k = top_k_;
  h.knobs.capacity_factor = capacity_factor_;
  h.knobs.noise_std = 0.0;
  h.knobs.top_p = 0.0;
  h.knobs.k_min = 1;
  return h;
}

telemetry::StepRecord SyntheticEngine::NextStep(int64_t timestamp_ns) {
  ++step_;
  const uint32_t num_experts = shape_.num_experts;
  const uint32_t num_replicas = shape_.num_replicas;
  const uint32_t slots_per_device = std::max(1u, num_replicas / shape_.num_devices);
  const uint64_t token_slots = uint64_t{shape_.num_tokens} * top_k_;
  // Capacity per replica slot: ceil(cf * tokens * K / replicas).
  const auto capacity = static_cast<uint32_t>(
      std::ceil(capacity_factor_ * static_cast<double>(token_slots) / num_replicas));
  std::normal_distribution<double> noise(0.0, kDemandNoise);

  telemetry::StepRecord r;
  r.engine_id = engine_id_;
  r.step = step_;
  r.epoch = epoch_;
  r.timestamp_ns = timestamp_ns;
  r.layers.resize(shape_.num_layers);
  std::vector<uint32_t> replicas(num_experts);
  std::vector<uint32_t> served_left(num_experts);
  double step_us = 0;
  for (uint32_t l = 0; l < shape_.num_layers; ++l) {
    if (step_ % kDriftSteps == 0) RefreshWeights(l);
    telemetry::LayerRecord& layer = r.layers[l];
    layer.layer = l;
    layer.num_tokens = shape_.num_tokens;
    layer.capacity = capacity;
    layer.expert_demand.resize(num_experts);
    layer.expert_tokens.resize(num_experts);
    std::fill(replicas.begin(), replicas.end(), 0u);
    for (uint32_t s = 0; s < num_replicas; ++s)
      ++replicas[phy2log_[l][s] % num_experts];
    uint64_t demand_sum = 0;
    uint32_t dropped = 0;
    for (uint32_t x = 0; x < num_experts; ++x) {
      double want = static_cast<double>(token_slots) * weight_[l][x] * (1.0 + noise(rng_));
      auto demand = static_cast<uint32_t>(std::max(0.0, std::round(want)));
      uint32_t room = capacity * std::max(1u, replicas[x]);
      uint32_t served = std::min(demand, room);
      layer.expert_demand[x] = demand;
      layer.expert_tokens[x] = served;
      demand_sum += demand;
      dropped += demand - served;
    }
    layer.num_token_slots = demand_sum;
    layer.overflowed = dropped;
    layer.dropped = dropped;
    // Each expert's tokens split evenly over its replicas.
    layer.slot_tokens.assign(num_replicas, 0u);
    layer.device_tokens.assign(shape_.num_devices, 0u);
    for (uint32_t x = 0; x < num_experts; ++x)
      served_left[x] = layer.expert_tokens[x];
    for (uint32_t s = 0; s < num_replicas; ++s) {
      uint32_t x = phy2log_[l][s] % num_experts;
      uint32_t share = layer.expert_tokens[x] / std::max(1u, replicas[x]);
      uint32_t take = --replicas[x] == 0 ? served_left[x] : std::min(share, served_left[x]);
      served_left[x] -= take;
      layer.slot_tokens[s] = take;
      layer.device_tokens[std::min(s / slots_per_device, shape_.num_devices - 1)] += take;
    }
    layer.k_histogram.assign(top_k_ + 1, 0u);
    layer.k_histogram[top_k_] = shape_.num_tokens;
    layer.router_entropy = 4.1;
    layer.gate_mass = 0.93;
    if (step_ % 8 == 0) {
      layer.quality_error =
          0.002 + 0.5 * static_cast<double>(dropped) / static_cast<double>(token_slots);
    }
    // Time: the slowest device's rows at 50 ns per token-slot, plus fixed parts.
    uint32_t busiest = *std::max_element(layer.device_tokens.begin(), layer.device_tokens.end());
    layer.timing.router_us = 25;
    layer.timing.dispatch_us = 15;
    layer.timing.expert_us = 0.05 * busiest;
    layer.timing.combine_us = 12;
    layer.timing.all_to_all_us = 40;
    layer.timing.total_us = 25 + 15 + 0.05 * busiest + 12 + 40;
    if (device_times_) {
      for (uint32_t tokens : layer.device_tokens)
        layer.timing.device_expert_us.push_back(0.05 * tokens);
    }
    layer.expert_rows = static_cast<uint32_t>(demand_sum - dropped);
    step_us += layer.timing.total_us;
  }
  r.step_us = step_us;
  return r;
}

telemetry::Ack SyntheticEngine::Apply(const telemetry::Command& command, int64_t now_ns) {
  telemetry::Ack ack;
  ack.engine_id = engine_id_;
  ack.epoch = command.epoch;
  ack.timestamp_ns = now_ns;
  if (command.epoch <= epoch_) {
    ack.error = "stale epoch";
    return ack;
  }
  const telemetry::KnobSet& k = command.knobs;
  if (k.capacity_factor) capacity_factor_ = *k.capacity_factor;
  if (k.top_k) top_k_ = std::clamp<uint32_t>(*k.top_k, 1, shape_.num_experts);
  for (const telemetry::LayerKnobs& lk : command.layer_knobs) {
    if (lk.layer >= shape_.num_layers) continue;
    if (lk.knobs.expert_bias && lk.knobs.expert_bias->size() == shape_.num_experts) {
      bias_[lk.layer] = *lk.knobs.expert_bias;
      RefreshWeights(lk.layer);
    }
    if (lk.knobs.phy2log && lk.knobs.phy2log->size() == shape_.num_replicas) {
      phy2log_[lk.layer] = *lk.knobs.phy2log;
    }
  }
  epoch_ = command.epoch;
  ack.applied = true;
  ack.applied_at_step = step_ + 1;
  return ack;
}

}  // namespace moe::bench
