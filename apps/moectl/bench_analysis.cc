#include "bench_analysis.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <nlohmann/json.hpp>

namespace moe::cli::bench {
namespace {

using nlohmann::json;

std::vector<uint32_t> DefaultPlacement(const ModelShape& shape) {
  std::vector<uint32_t> p(shape.num_replicas);
  for (uint32_t s = 0; s < shape.num_replicas; ++s)
    p[s] = shape.num_experts > 0 ? s % shape.num_experts : 0;
  return p;
}

double MaxAbs(const std::vector<std::vector<float>>& bias) {
  double m = 0;
  for (const auto& layer : bias)
    for (float b : layer)
      m = std::max(m, std::abs(static_cast<double>(b)));
  return m;
}

// Every scalar knob of the knob table that `change` names, into `k`.
void ApplyScalars(const json& change, EpochKnobs* k) {
  for (const policies::KnobSpec& spec : policies::AllKnobs()) {
    const std::string name(spec.name);
    if (spec.scalar() && change.contains(name) && change[name].is_number()) {
      spec.set_value(&k->knobs, change[name].get<double>());
    }
  }
}

// Applies one part of an epoch row's change (controller.cc ChangeJson: its
// scalars, bias and placement) to `k`, counting the slots the placement
// changes per device into `device_slots`.
Status ApplyPart(const json& change, const ModelShape& shape, EpochKnobs* k,
                 std::vector<double>* device_slots) {
  ApplyScalars(change, k);
  if (change.contains("expert_bias") && change["expert_bias"].is_object()) {
    for (const auto& [layer, experts] : change["expert_bias"].items()) {
      const size_t l = std::stoul(layer);
      if (l >= k->bias.size()) return Status::InvalidArgument("epoch row: bias layer out of range");
      for (const auto& [expert, pair] : experts.items()) {
        const size_t e = std::stoul(expert);
        if (e >= k->bias[l].size())
          return Status::InvalidArgument("epoch row: bias expert out of range");
        k->bias[l][e] = pair.at(1).get<float>();
      }
    }
    k->max_abs_bias = MaxAbs(k->bias);
  }
  if (change.contains("phy2log") && change["phy2log"].is_object()) {
    const uint32_t per_device = std::max<uint32_t>(1, shape.num_replicas / shape.num_devices);
    for (const auto& [layer, slots] : change["phy2log"].items()) {
      const size_t l = std::stoul(layer);
      if (l >= k->phy2log.size())
        return Status::InvalidArgument("epoch row: placement layer out of range");
      for (const auto& [slot, pair] : slots.items()) {
        const size_t s = std::stoul(slot);
        if (s >= k->phy2log[l].size())
          return Status::InvalidArgument("epoch row: slot out of range");
        k->phy2log[l][s] = pair.at(1).get<uint32_t>();
        (*device_slots)[std::min<size_t>(shape.num_devices - 1, s / per_device)] += 1;
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Status ApplyChange(const json& change, const ModelShape& shape, EpochKnobs* k) {
  k->moved_bytes = 0;
  k->move_us = 0;
  std::vector<double> device_slots(std::max<uint32_t>(1, shape.num_devices), 0);
  MOE_RETURN_IF_ERROR(ApplyPart(change, shape, k, &device_slots));
  // A joint command's other knobs (a capacity change with its placement).
  if (change.contains("with") && change["with"].is_array()) {
    for (const json& part : change["with"]) {
      if (part.is_object()) MOE_RETURN_IF_ERROR(ApplyPart(part, shape, k, &device_slots));
    }
  }
  double total = 0, largest = 0;
  for (double n : device_slots) {
    total += n;
    largest = std::max(largest, n);
  }
  if (total > 0) {
    k->moved_bytes = total * shape.ExpertBytes();
    // As the engine models it: the largest device's bytes over the inter-node link.
    k->move_us = largest * shape.ExpertBytes() / (shape.inter_node_gbps * 1e3);
  }
  return Status::Ok();
}

double Percentile(std::vector<double> values, double q) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const double rank = std::ceil(q * static_cast<double>(values.size()));
  const size_t index =
      static_cast<size_t>(std::clamp(rank, 1.0, static_cast<double>(values.size()))) - 1;
  return values[index];
}

Result<RunData> BuildRun(const std::string& contender, const KnobPoint& start,
                         const ModelShape& shape, const std::vector<storage::StepRow>& steps,
                         const std::vector<storage::StepLoadRow>& loads,
                         const std::vector<storage::EpochRow>& epochs,
                         const std::vector<storage::DecisionRow>& decisions) {
  RunData run;
  run.contender = contender;
  run.start = start;
  EpochKnobs k;
  k.knobs.capacity_factor = start.capacity_factor;
  k.knobs.top_k = start.top_k;
  k.knobs.noise_std = start.noise_std;
  k.phy2log.assign(shape.num_layers, DefaultPlacement(shape));
  k.bias.assign(shape.num_layers, std::vector<float>(shape.num_experts, 0.0f));
  run.epochs[0] = k;
  for (const storage::EpochRow& row : epochs) {
    json change = json::parse(row.knobs_json, nullptr, /*allow_exceptions=*/false);
    if (change.is_discarded())
      return Status::InvalidArgument("epoch row: not JSON: " + row.knobs_json);
    if (change.contains("source")) {  // the engine's Hello: its settings in force
      ApplyScalars(change, &k);
      k.moved_bytes = k.move_us = 0;
    } else {
      try {
        MOE_RETURN_IF_ERROR(ApplyChange(change, shape, &k));
      } catch (const std::exception& e) {
        return Status::InvalidArgument(fmt::format("epoch row {}: {}", row.epoch, e.what()));
      }
    }
    run.epochs[row.epoch] = k;
  }
  std::map<uint64_t, StepData> by_step;
  std::map<uint64_t, std::pair<double, int>> quality;
  for (const storage::StepRow& r : steps) {
    if (r.rollup) continue;
    if (r.layer >= shape.num_layers) return Status::InvalidArgument("step row: layer out of range");
    StepData& s = by_step[r.step];
    s.step = r.step;
    s.epoch = r.epoch;
    s.step_us = r.step_us;
    if (s.layer_tokens.empty()) {
      s.layer_tokens.assign(shape.num_layers, 0);
      s.overhead_us.assign(shape.num_layers, 0);
      s.expert_us.assign(shape.num_layers, 0);
      s.all_to_all_us.assign(shape.num_layers, 0);
      s.expert_rows.assign(shape.num_layers, {});
    }
    if (r.layer == 0) s.tokens = r.num_tokens;
    s.token_slots += static_cast<double>(r.num_token_slots);
    s.dropped += r.dropped;
    s.measured_path_us += r.layer_us;
    s.layer_tokens[r.layer] = r.num_tokens;
    s.overhead_us[r.layer] = r.router_us + r.dispatch_us + r.combine_us;
    s.expert_us[r.layer] = r.expert_us;
    s.all_to_all_us[r.layer] = r.all_to_all_us;
    if (r.quality_error) {
      quality[r.step].first += *r.quality_error;
      quality[r.step].second += 1;
    }
  }
  for (const storage::StepLoadRow& l : loads) {
    auto it = by_step.find(l.step);
    if (it == by_step.end() || l.layer >= shape.num_layers) continue;
    it->second.expert_rows[l.layer].assign(l.expert_tokens.begin(), l.expert_tokens.end());
  }
  for (auto& [step, s] : by_step) {
    auto q = quality.find(step);
    if (q != quality.end()) s.quality_error = q->second.first / q->second.second;
    run.steps.push_back(std::move(s));
  }
  for (const storage::DecisionRow& d : decisions) {
    ++run.decisions;
    const bool applied = d.acked_ns.has_value() && d.ack_error.empty() &&
                         (d.status == "acked" || d.status == "measured");
    if (!applied) continue;
    ++run.decisions_applied;
    if (d.policy == "guard-rollback") ++run.rolled_back;
  }
  return run;
}

const EpochKnobs& KnobsAt(const RunData& run, uint64_t epoch) {
  auto it = run.epochs.upper_bound(epoch);
  if (it != run.epochs.begin()) --it;
  return it->second;
}

Result<policies::CostModel> FitCostModel(const std::vector<const RunData*>& runs,
                                         const ModelShape& shape) {
  policies::AffineFitter device, overhead;
  for (const RunData* run : runs) {
    for (const StepData& s : run->steps) {
      const EpochKnobs& k = KnobsAt(*run, s.epoch);
      for (size_t l = 0; l < s.expert_rows.size(); ++l) {
        if (s.expert_rows[l].empty()) continue;
        std::vector<double> rows = policies::DeviceRows(s.expert_rows[l], k.phy2log[l],
                                                        shape.num_replicas, shape.num_devices);
        const double top = *std::max_element(rows.begin(), rows.end());
        if (top > 0) device.Add(top, s.expert_us[l]);
        overhead.Add(s.layer_tokens[l], s.overhead_us[l]);
      }
    }
  }
  policies::CostModel model;
  Result<policies::AffineCost> d = device.Fit(16);
  if (!d.ok()) return d.status().WithContext("fitting the cost model");
  model.device = *d;
  Result<policies::AffineCost> o = overhead.Fit(4);
  model.overhead = o.ok() ? *o : overhead.Flat();
  model.calibrated = true;
  return model;
}

Summary Summarise(const RunData& run, const ModelShape& shape, const policies::CostModel& fitted,
                  const policies::RewardParams& reward, const DeviceSlowdowns& slowdowns) {
  policies::CostModel model = fitted;
  Summary out;
  out.steps = run.steps.size();
  out.decisions_applied = run.decisions_applied;
  out.rolled_back = run.rolled_back;
  double quality_sum = 0, tokens = 0, slots = 0, dropped = 0, model_us = 0, wall_us = 0;
  int quality_n = 0;
  for (const StepData& s : run.steps) {
    if (s.quality_error) {
      quality_sum += *s.quality_error;
      ++quality_n;
    }
  }
  out.quality_error = quality_n > 0 ? quality_sum / quality_n : 0;
  std::vector<double> balanced_series, path_series;
  uint64_t last_epoch = UINT64_MAX;
  for (const StepData& s : run.steps) {
    const EpochKnobs& k = KnobsAt(run, s.epoch);
    auto slow = slowdowns.upper_bound(s.step);
    if (slow != slowdowns.begin()) model.device_factor = std::prev(slow)->second;
    double path = 0, balanced = 0;
    for (size_t l = 0; l < s.expert_rows.size(); ++l) {
      std::vector<double> rows = s.expert_rows[l].empty()
                                     ? std::vector<double>(shape.num_devices, 0.0)
                                     : policies::DeviceRows(s.expert_rows[l], k.phy2log[l],
                                                            shape.num_replicas, shape.num_devices);
      path += policies::LayerPathUs(model, s.layer_tokens[l], rows, s.all_to_all_us[l]);
      balanced +=
          policies::BalancedLayerPathUs(model, s.layer_tokens[l], s.layer_tokens[l] * shape.top_k,
                                        shape.num_devices, s.all_to_all_us[l]);
    }
    policies::OutcomeFigures f;
    f.steps = 1;
    f.drop_rate = s.token_slots > 0 ? s.dropped / s.token_slots : 0;
    f.step_us = s.step_us;
    f.critical_path_us = s.measured_path_us;
    f.model_latency_us = path;
    f.balanced_latency_us = balanced;
    // A placement move is paid by the first step of its epoch.
    if (s.epoch != last_epoch && run.epochs.count(s.epoch)) {
      f.migration_us = k.move_us;
      out.bytes_migrated += k.moved_bytes;
    }
    last_epoch = s.epoch;
    f.quality_error = out.quality_error;
    f.capacity_factor = k.knobs.capacity_factor;
    const double r = policies::Reward(f, reward);
    const policies::RewardTerms t = policies::Terms(f, reward);
    out.mean_terms.latency += t.latency;
    out.mean_terms.slo += t.slo;
    out.mean_terms.drops += t.drops;
    out.mean_terms.quality += t.quality;
    out.mean_terms.migration += t.migration;
    out.mean_terms.capacity += t.capacity;
    out.mean_reward += r;
    tokens += s.tokens;
    slots += s.token_slots;
    dropped += s.dropped;
    model_us += path;
    wall_us += s.step_us;
    out.step.push_back(static_cast<double>(s.step));
    out.latency_us.push_back(path);
    out.measured_us.push_back(s.step_us);
    path_series.push_back(s.measured_path_us);
    balanced_series.push_back(balanced);
    out.drop_rate_series.push_back(f.drop_rate);
    out.capacity_factor.push_back(k.knobs.capacity_factor);
    out.top_k.push_back(k.knobs.top_k);
    out.noise_std.push_back(k.knobs.noise_std);
    out.max_abs_bias.push_back(k.max_abs_bias);
    out.reward.push_back(r);
  }
  if (out.steps == 0) return out;
  const double n = static_cast<double>(out.steps);
  out.mean_reward /= n;
  out.mean_terms.latency /= n;
  out.mean_terms.slo /= n;
  out.mean_terms.drops /= n;
  out.mean_terms.quality /= n;
  out.mean_terms.migration /= n;
  out.mean_terms.capacity /= n;
  out.drop_rate = slots > 0 ? dropped / slots : 0;
  out.p50_latency_us = Percentile(out.latency_us, 0.5);
  out.p99_latency_us = Percentile(out.latency_us, 0.99);
  out.p50_balanced_us = Percentile(balanced_series, 0.5);
  out.p99_balanced_us = Percentile(balanced_series, 0.99);
  out.p50_measured_us = Percentile(out.measured_us, 0.5);
  out.p99_measured_us = Percentile(out.measured_us, 0.99);
  out.p50_measured_path_us = Percentile(path_series, 0.5);
  out.p99_measured_path_us = Percentile(path_series, 0.99);
  out.tokens_per_s = model_us > 0 ? tokens / (model_us * 1e-6) : 0;
  out.measured_tokens_per_s = wall_us > 0 ? tokens / (wall_us * 1e-6) : 0;
  return out;
}

}  // namespace moe::cli::bench
