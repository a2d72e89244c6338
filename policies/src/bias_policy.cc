#include "moe/policies/bias_policy.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

namespace moe::policies {
namespace {

using Vectors = std::vector<std::vector<float>>;

// Layers named one by one in a reason; the rest are counted.
constexpr size_t kMaxLayersInReason = 8;

struct LayerChange {
  uint32_t layer = 0;
  double max_over_mean = 0;
  size_t hottest = 0;
  double hottest_ratio = 0;
  size_t coldest = 0;
  double coldest_ratio = 0;
  size_t num_changed = 0;
};

double MaxAbs(const Vectors& vectors) {
  double m = 0;
  for (const auto& v : vectors) {
    for (float x : v)
      m = std::max(m, std::fabs(static_cast<double>(x)));
  }
  return m;
}

// Updates `bias` in place from one layer's load; returns the change, or
// nullopt when no element moved.
std::optional<LayerChange> UpdateLayer(const LayerEstimate& est, const BiasPolicyParams& p,
                                       std::vector<float>* bias) {
  // The router's choices before capacity when the engine reports them:
  // served load understates an expert its capacity caps.
  const bool by_demand = !est.expert_demand.empty();
  const std::vector<double>& load = by_demand ? est.expert_demand : est.expert_load;
  size_t num_experts = load.size();
  if (num_experts == 0 || bias->size() != num_experts) return std::nullopt;
  double sum = 0;
  for (double x : load)
    sum += x;
  double mean = sum / static_cast<double>(num_experts);
  const double imbalance = by_demand && mean > 0
                               ? *std::max_element(load.begin(), load.end()) / mean
                               : est.max_over_mean;
  if (!(mean > 0) || !(imbalance > p.min_imbalance)) return std::nullopt;

  LayerChange change;
  change.layer = est.layer;
  change.max_over_mean = imbalance;
  for (size_t e = 0; e < num_experts; ++e) {
    if (load[e] > load[change.hottest]) change.hottest = e;
    if (load[e] < load[change.coldest]) change.coldest = e;
    double err = load[e] / mean - 1;
    if (!(std::fabs(err) > p.deadband)) continue;
    // DeepSeek-V3's rule moves every bias by a fixed rate against the sign of
    // its load error; the default is proportional to the error.
    const double raw =
        p.sign_update ? (err > 0 ? p.update_rate : -p.update_rate) : p.update_rate * err;
    double delta = -std::clamp(raw, -p.max_step, p.max_step);
    double old = (*bias)[e];
    double target = std::clamp(old + delta, -p.max_bias, p.max_bias);
    // Rounding may step past a bound that is off the 1e-5 grid; the bound wins.
    double rounded = std::clamp(std::round(target * 1e5) / 1e5, -p.max_bias, p.max_bias);
    float updated = static_cast<float>(rounded);
    if (updated != (*bias)[e]) {
      (*bias)[e] = updated;
      ++change.num_changed;
    }
  }
  if (change.num_changed == 0) return std::nullopt;
  change.hottest_ratio = load[change.hottest] / mean;
  change.coldest_ratio = load[change.coldest] / mean;
  return change;
}

std::string Reason(const std::vector<LayerChange>& changes, uint64_t steps, double before,
                   double after) {
  size_t num_changed = 0;
  for (const LayerChange& c : changes)
    num_changed += c.num_changed;
  std::string reason = fmt::format("expert load imbalance over {} steps: {} biases on {} layers;",
                                   steps, num_changed, changes.size());
  for (size_t i = 0; i < changes.size() && i < kMaxLayersInReason; ++i) {
    const LayerChange& c = changes[i];
    reason += fmt::format(
        " layer {} max/mean {:.3f} (hottest expert {} at {:.2f}x mean, coldest expert {} at "
        "{:.2f}x mean, {} biases);",
        c.layer, c.max_over_mean, c.hottest, c.hottest_ratio, c.coldest, c.coldest_ratio,
        c.num_changed);
  }
  if (changes.size() > kMaxLayersInReason) {
    reason += fmt::format(" and {} more layers;", changes.size() - kMaxLayersInReason);
  }
  reason += fmt::format(" max |bias| {:.5f} -> {:.5f}", before, after);
  return reason;
}

}  // namespace

Status Validate(const BiasPolicyParams& p) {
  if (!(p.update_rate > 0)) {
    return Status::InvalidArgument(
        fmt::format("bias policy: update_rate must be > 0, got {}", p.update_rate));
  }
  if (!(p.max_step > 0)) {
    return Status::InvalidArgument(
        fmt::format("bias policy: max_step must be > 0, got {}", p.max_step));
  }
  if (!(p.deadband >= 0)) {
    return Status::InvalidArgument(
        fmt::format("bias policy: deadband must be >= 0, got {}", p.deadband));
  }
  if (!(p.min_imbalance > 0)) {
    return Status::InvalidArgument(
        fmt::format("bias policy: min_imbalance must be > 0, got {}", p.min_imbalance));
  }
  if (!(p.max_bias > 0)) {
    return Status::InvalidArgument(
        fmt::format("bias policy: max_bias must be > 0, got {}", p.max_bias));
  }
  if (!(p.max_step <= p.max_bias)) {
    return Status::InvalidArgument(
        fmt::format("bias policy: need max_step <= max_bias, got max_step={} max_bias={}",
                    p.max_step, p.max_bias));
  }
  return Status::Ok();
}

std::optional<Proposal> ProposeBias(const EngineSnapshot& snapshot,
                                    const BiasPolicyParams& params) {
  if (snapshot.steps_in_epoch < params.min_steps) return std::nullopt;
  const Vectors& in_force = snapshot.knobs.expert_bias;

  const std::vector<const LayerEstimate*> by_layer = LayersById(snapshot, in_force.size());
  const size_t num_layers = by_layer.size();

  Vectors current(num_layers);
  for (size_t l = 0; l < num_layers; ++l) {
    if (l < in_force.size() && !in_force[l].empty()) {
      current[l] = in_force[l];
    } else {
      const LayerEstimate* est = by_layer[l];
      size_t width = est != nullptr && !est->expert_load.empty() ? est->expert_load.size()
                                                                 : snapshot.num_experts;
      current[l].assign(width, 0.0f);
    }
  }

  Vectors updated = current;
  std::vector<LayerChange> changes;
  for (size_t l = 0; l < num_layers; ++l) {
    if (by_layer[l] == nullptr) continue;
    if (auto change = UpdateLayer(*by_layer[l], params, &updated[l])) changes.push_back(*change);
  }
  if (changes.empty()) return std::nullopt;

  Proposal proposal;
  proposal.policy = "bias";
  proposal.knob = knob::kExpertBias;
  proposal.layer = -1;
  proposal.current = MaxAbs(current);
  proposal.value = MaxAbs(updated);
  proposal.reason = Reason(changes, snapshot.steps_in_epoch, proposal.current, proposal.value);
  proposal.current_vectors = std::move(current);
  proposal.vectors = std::move(updated);
  return proposal;
}

}  // namespace moe::policies
