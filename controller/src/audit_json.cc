#include "audit_json.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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

namespace {

// A JSON number as nlohmann::json dumps a double: the shortest text that
// reads back to it, with ".0" on a whole number; null when not finite.
void PutNumber(fmt::memory_buffer& out, double v) {
  if (!std::isfinite(v)) {
    fmt::format_to(std::back_inserter(out), "null");
    return;
  }
  const size_t begin = out.size();
  fmt::format_to(std::back_inserter(out), "{}", v);
  const std::string_view text(out.data() + begin, out.size() - begin);
  if (text.find_first_of(".e") == std::string_view::npos) {
    fmt::format_to(std::back_inserter(out), ".0");
  }
}

void PutField(fmt::memory_buffer& out, std::string_view key, double v) {
  fmt::format_to(std::back_inserter(out), ",\"{}\":", key);
  PutNumber(out, v);
}

}  // namespace

std::string SnapshotJsonText(const policies::EngineSnapshot& s, const std::string& regime) {
  fmt::memory_buffer out;
  auto put = std::back_inserter(out);
  // Keys in nlohmann::json's (sorted) order, so the text reads as before.
  fmt::format_to(put, "{{");
  if (s.demand_max_over_mean) {
    fmt::format_to(put, "\"demand_max_over_mean\":");
    PutNumber(out, *s.demand_max_over_mean);
    fmt::format_to(put, ",");
  }
  fmt::format_to(put, "\"drop_rate\":");
  PutNumber(out, s.drop_rate);
  fmt::format_to(put, ",\"epoch\":{},\"knobs\":{},\"layers\":[", s.epoch,
                 KnobsJson(s.knobs).dump());
  for (size_t i = 0; i < s.layers.size(); ++i) {
    const policies::LayerEstimate& l = s.layers[i];
    fmt::format_to(put, "{}{{\"drop_rate\":", i == 0 ? "" : ",");
    PutNumber(out, l.drop_rate);
    fmt::format_to(put, ",\"layer\":{}", l.layer);
    PutField(out, "layer_us", l.layer_us);
    PutField(out, "max_over_mean", l.max_over_mean);
    PutField(out, "overflow_rate", l.overflow_rate);
    fmt::format_to(put, "}}");
  }
  fmt::format_to(put, "]");
  PutField(out, "max_over_mean", s.max_over_mean);
  PutField(out, "overflow_rate", s.overflow_rate);
  if (s.quality_error) PutField(out, "quality_error", *s.quality_error);
  fmt::format_to(put, ",\"regime\":{}", json(regime).dump());
  PutField(out, "step_us", s.step_us);
  fmt::format_to(put, ",\"steps_in_epoch\":{},\"telemetry_age_ms\":{}", s.steps_in_epoch,
                 (s.now_ns - s.last_telemetry_ns) / kNanosPerMilli);
  PutField(out, "tokens_per_step", s.tokens_per_step);
  fmt::format_to(put, "}}");
  return fmt::to_string(out);
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

namespace {

// `indices` in the order nlohmann::json keeps their decimal strings as keys.
void SortAsKeys(std::vector<std::pair<std::string, size_t>>* indices) {
  std::sort(indices->begin(), indices->end());
}

}  // namespace

std::string PlacementChangesText(const std::vector<std::vector<uint32_t>>& before,
                                 const std::vector<std::vector<uint32_t>>& after) {
  std::vector<std::pair<std::string, size_t>> layers;
  for (size_t l = 0; l < after.size(); ++l) {
    const bool changed = l >= before.size() || before[l].size() < after[l].size() ||
                         !std::equal(after[l].begin(), after[l].end(), before[l].begin());
    if (changed && !after[l].empty()) layers.emplace_back(std::to_string(l), l);
  }
  SortAsKeys(&layers);
  std::string out = "{";
  std::vector<std::pair<std::string, size_t>> slots;
  for (const auto& [layer_key, l] : layers) {
    slots.clear();
    for (size_t s = 0; s < after[l].size(); ++s) {
      const bool known = l < before.size() && s < before[l].size();
      if (!known || before[l][s] != after[l][s]) slots.emplace_back(std::to_string(s), s);
    }
    SortAsKeys(&slots);
    if (out.size() > 1) out += ',';
    fmt::format_to(std::back_inserter(out), "\"{}\":{{", layer_key);
    for (size_t i = 0; i < slots.size(); ++i) {
      const size_t s = slots[i].second;
      const bool known = l < before.size() && s < before[l].size();
      if (known) {
        fmt::format_to(std::back_inserter(out), "{}\"{}\":[{},{}]", i > 0 ? "," : "",
                       slots[i].first, before[l][s], after[l][s]);
      } else {
        fmt::format_to(std::back_inserter(out), "{}\"{}\":[null,{}]", i > 0 ? "," : "",
                       slots[i].first, after[l][s]);
      }
    }
    out += '}';
  }
  out += '}';
  return out;
}

std::string DumpWithMember(const json& object, const std::string& key,
                           std::string_view member_text) {
  std::string out = "{";
  bool placed = false;
  auto add = [&out](const std::string& k, std::string_view text) {
    if (out.size() > 1) out += ',';
    out += json(k).dump();
    out += ':';
    out += text;
  };
  for (auto it = object.begin(); it != object.end(); ++it) {
    if (!placed && key < it.key()) {
      add(key, member_text);
      placed = true;
    }
    add(it.key(), it.value().dump());
  }
  if (!placed) add(key, member_text);
  out += '}';
  return out;
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
