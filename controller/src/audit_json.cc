#include "audit_json.h"

#include <cmath>
#include <string>
#include <utility>

#include "moe/policies/guard.h"

namespace moe::controller {
namespace {

using nlohmann::json;

constexpr int64_t kNanosPerMilli = 1'000'000;

}  // namespace

json FiguresJson(const policies::OutcomeFigures& f) {
  json j = {{"steps", f.steps},
            {"drop_rate", f.drop_rate},
            {"step_us", f.step_us},
            {"critical_path_us", f.critical_path_us},
            {"max_over_mean", f.max_over_mean},
            {"device_max_over_mean", f.device_max_over_mean},
            {"capacity_factor", f.capacity_factor}};
  if (f.quality_error) j["quality_error"] = *f.quality_error;
  return j;
}

json KnobJson(const policies::KnobSpec& spec, double value) {
  if (spec.kind == policies::KnobKind::kEnum) return spec.Format(value);
  if (spec.whole()) return static_cast<int64_t>(std::llround(value));
  return value;
}

json KnobsJson(const policies::KnobValues& knobs) {
  json j = json::object();
  for (const policies::KnobSpec& spec : policies::AllKnobs()) {
    if (spec.scalar()) j[std::string(spec.name)] = KnobJson(spec, spec.value(knobs));
  }
  return j;
}

json HelloEpochJson(const policies::KnobValues& knobs) {
  json j = {{"source", "engine hello"}};
  for (const policies::KnobSpec& spec : policies::AllKnobs()) {
    if (!spec.scalar()) continue;
    const double value = spec.value(knobs);
    j[std::string(spec.name)] = spec.whole() ? json(std::llround(value)) : json(value);
  }
  return j;
}

json SnapshotJson(const policies::EngineSnapshot& s, const std::string& regime) {
  json layers = json::array();
  for (const policies::LayerEstimate& l : s.layers) {
    layers.push_back({{"layer", l.layer},
                      {"drop_rate", l.drop_rate},
                      {"overflow_rate", l.overflow_rate},
                      {"max_over_mean", l.max_over_mean},
                      {"layer_us", l.layer_us}});
  }
  json j = {{"epoch", s.epoch},
            {"steps_in_epoch", s.steps_in_epoch},
            {"drop_rate", s.drop_rate},
            {"overflow_rate", s.overflow_rate},
            {"step_us", s.step_us},
            {"max_over_mean", s.max_over_mean},
            {"telemetry_age_ms", (s.now_ns - s.last_telemetry_ns) / kNanosPerMilli},
            {"tokens_per_step", s.tokens_per_step},
            {"regime", regime},
            {"knobs", KnobsJson(s.knobs)},
            {"layers", std::move(layers)}};
  if (s.quality_error) j["quality_error"] = *s.quality_error;
  if (s.demand_max_over_mean) j["demand_max_over_mean"] = *s.demand_max_over_mean;
  return j;
}

// Writes `change` into `command`; a vector knob goes to the layers whose
// vector differs from `in_force` ([layer][element]).
void AddChange(const KnobChange& change, const std::vector<std::vector<float>>& in_force,
               const std::vector<std::vector<uint32_t>>& placed, telemetry::Command* command) {
  const policies::KnobSpec* spec = policies::FindKnob(change.knob);
  if (spec == nullptr) return;
  if (spec->scalar()) spec->set(&command->knobs, change.value);
  if (spec->kind == policies::KnobKind::kVector) {
    for (size_t l = 0; l < change.vectors.size(); ++l) {
      if (l < in_force.size() && in_force[l] == change.vectors[l]) continue;
      telemetry::LayerKnobs layer;
      layer.layer = static_cast<uint32_t>(l);
      layer.knobs.*spec->vector = change.vectors[l];
      command->layer_knobs.push_back(std::move(layer));
    }
  }
  if (spec->kind == policies::KnobKind::kPlacement) {
    for (size_t l = 0; l < change.placements.size(); ++l) {
      if (l < placed.size() && placed[l] == change.placements[l]) continue;
      telemetry::LayerKnobs layer;
      layer.layer = static_cast<uint32_t>(l);
      layer.knobs.*spec->placement = change.placements[l];
      command->layer_knobs.push_back(std::move(layer));
    }
  }
}

// A placement change as JSON: per changed layer, {slot: [expert before, after]}.
json PlacementChangesJson(const std::vector<std::vector<uint32_t>>& before,
                          const std::vector<std::vector<uint32_t>>& after) {
  json layers = json::object();
  for (size_t l = 0; l < after.size(); ++l) {
    json changed = json::object();
    for (size_t s = 0; s < after[l].size(); ++s) {
      const bool known = l < before.size() && s < before[l].size();
      if (!known || before[l][s] != after[l][s]) {
        changed[std::to_string(s)] = {known ? json(before[l][s]) : json(nullptr), after[l][s]};
      }
    }
    if (!changed.empty()) layers[std::to_string(l)] = std::move(changed);
  }
  return layers;
}

// A vector change as JSON: per changed layer, {expert: [before, after]}.
json VectorChangesJson(const std::vector<std::vector<float>>& before,
                       const std::vector<std::vector<float>>& after) {
  json layers = json::object();
  for (size_t l = 0; l < after.size(); ++l) {
    json changed = json::object();
    for (size_t i = 0; i < after[l].size(); ++i) {
      const float old = l < before.size() && i < before[l].size() ? before[l][i] : 0.0f;
      if (old != after[l][i]) changed[std::to_string(i)] = {old, after[l][i]};
    }
    if (!changed.empty()) layers[std::to_string(l)] = std::move(changed);
  }
  return layers;
}

// The change as the epochs table and command_json record it.
json ChangeJson(const KnobChange& change, const std::vector<std::vector<float>>& before,
                const std::vector<std::vector<uint32_t>>& placed) {
  if (policies::IsVectorKnob(change.knob)) {
    return json({{change.knob, VectorChangesJson(before, change.vectors)}});
  }
  if (policies::IsPlacementKnob(change.knob)) {
    return json({{change.knob, PlacementChangesJson(placed, change.placements)}});
  }
  return json({{change.knob, change.value}});
}

}  // namespace moe::controller
