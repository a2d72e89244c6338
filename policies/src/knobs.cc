#include "moe/policies/knobs.h"

#include <fmt/format.h>

#include <fmt/ranges.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <string>
#include <type_traits>

#include "moe/policies/guard.h"

namespace moe::policies {
namespace {

using telemetry::KnobSet;

template <typename T>
double ToDouble(T v) {
  if constexpr (std::is_enum_v<T>) {
    return static_cast<double>(static_cast<std::underlying_type_t<T>>(v));
  } else {
    return static_cast<double>(v);
  }
}

template <typename T>
T FromDouble(double v) {
  if constexpr (std::is_enum_v<T>) {
    return static_cast<T>(static_cast<std::underlying_type_t<T>>(std::llround(v)));
  } else if constexpr (std::is_integral_v<T>) {
    return static_cast<T>(std::llround(std::max(0.0, v)));
  } else {
    return static_cast<T>(v);
  }
}

template <auto Field>
std::optional<double> GetField(const KnobSet& set) {
  const auto& field = set.*Field;
  if (!field) return std::nullopt;
  return ToDouble(*field);
}

template <auto Field>
void SetField(KnobSet* set, double v) {
  using T = typename std::remove_reference_t<decltype(set->*Field)>::value_type;
  set->*Field = FromDouble<T>(v);
}

template <auto Field>
void ClearField(KnobSet* set) {
  (set->*Field).reset();
}

template <auto Member>
double GetValue(const KnobValues& values) {
  return ToDouble(values.*Member);
}

template <auto Member>
void SetValue(KnobValues* values, double v) {
  using T = std::remove_reference_t<decltype(values->*Member)>;
  values->*Member = FromDouble<T>(v);
}

// A scalar row: the KnobSet field and the KnobValues member of the same knob.
template <auto Field, auto Member>
KnobSpec Scalar(std::string_view name, KnobKind kind, KnobLimits GuardParams::*limits,
                std::string_view meaning, std::vector<std::string_view> enum_names = {}) {
  KnobSpec spec;
  spec.name = name;
  spec.kind = kind;
  spec.meaning = meaning;
  spec.enum_names = std::move(enum_names);
  spec.pinnable = true;
  spec.limits = limits;
  spec.get = &GetField<Field>;
  spec.set = &SetField<Field>;
  spec.clear = &ClearField<Field>;
  spec.value = &GetValue<Member>;
  spec.set_value = &SetValue<Member>;
  return spec;
}

std::vector<KnobSpec> MakeTable() {
  std::vector<KnobSpec> rows;
  rows.push_back(Scalar<&KnobSet::top_k, &KnobValues::top_k>(
      knob::kTopK, KnobKind::kInteger, &GuardParams::top_k,
      "experts per token (the upper bound with dynamic K)"));
  rows.push_back(Scalar<&KnobSet::top_p, &KnobValues::top_p>(
      knob::kTopP, KnobKind::kReal, &GuardParams::top_p,
      "dynamic K: the gate mass each token covers, (0, 1]; 0 = off"));
  rows.push_back(Scalar<&KnobSet::k_min, &KnobValues::k_min>(
      knob::kKMin, KnobKind::kInteger, &GuardParams::k_min, "dynamic K: fewest experts per token"));
  rows.push_back(Scalar<&KnobSet::capacity_factor, &KnobValues::capacity_factor>(
      knob::kCapacityFactor, KnobKind::kReal, &GuardParams::capacity_factor,
      "capacity = ceil(cf * tokens * top_k / experts); 0 = unlimited"));
  rows.push_back(Scalar<&KnobSet::overflow_policy, &KnobValues::overflow_policy>(
      knob::kOverflowPolicy, KnobKind::kEnum, &GuardParams::overflow_policy,
      "what a token-slot over its expert's capacity gets", {"drop", "reroute", "replica"}));
  rows.push_back(Scalar<&KnobSet::noise_std, &KnobValues::noise_std>(
      knob::kNoiseStd, KnobKind::kReal, &GuardParams::noise_std,
      "std of the Gaussian noise on selection scores; 0 = off"));
  rows.push_back(Scalar<&KnobSet::shortlist, &KnobValues::shortlist>(
      knob::kShortlist, KnobKind::kInteger, &GuardParams::shortlist,
      "two-stage routing: candidates per token (>= top_k); 0 = off"));
  rows.push_back(Scalar<&KnobSet::availability_weight, &KnobValues::availability_weight>(
      knob::kAvailabilityWeight, KnobKind::kReal, &GuardParams::availability_weight,
      "two-stage routing: weight of an expert's remaining capacity, [0, 1]"));
  KnobSpec bias;
  bias.name = knob::kExpertBias;
  bias.kind = KnobKind::kVector;
  bias.meaning = "selection bias per expert per layer (a pin sets every element)";
  bias.pinnable = true;
  bias.limits = &GuardParams::expert_bias;
  bias.vector = &KnobSet::expert_bias;
  bias.vectors = &KnobValues::expert_bias;
  rows.push_back(std::move(bias));
  KnobSpec placement;
  placement.name = knob::kPhy2log;
  placement.kind = KnobKind::kPlacement;
  placement.meaning = "the logical expert of every physical slot per layer";
  placement.placement = &KnobSet::phy2log;
  placement.placements = &KnobValues::phy2log;
  rows.push_back(std::move(placement));
  rows.push_back(Scalar<&KnobSet::capacity_scope, &KnobValues::capacity_scope>(
      knob::kCapacityScope, KnobKind::kEnum, &GuardParams::capacity_scope,
      "what the capacity is of: one logical expert, or each replica slot", {"expert", "slot"}));
  return rows;
}

}  // namespace

std::string_view KnobKindName(KnobKind kind) {
  switch (kind) {
    case KnobKind::kInteger:
      return "integer";
    case KnobKind::kReal:
      return "real";
    case KnobKind::kEnum:
      return "enum";
    case KnobKind::kVector:
      return "vector";
    case KnobKind::kPlacement:
      return "placement";
  }
  return "real";
}

bool KnobSpec::Present(const KnobSet& set) const {
  if (scalar()) return get(set).has_value();
  if (kind == KnobKind::kVector) return (set.*vector).has_value();
  return (set.*placement).has_value();
}

void KnobSpec::Clear(KnobSet* set) const {
  if (scalar()) {
    clear(set);
  } else if (kind == KnobKind::kVector) {
    (set->*vector).reset();
  } else {
    (set->*placement).reset();
  }
}

std::string KnobSpec::Format(double v) const {
  if (kind == KnobKind::kEnum) {
    const double i = std::round(v);
    if (i >= 0 && i < static_cast<double>(enum_names.size()) && i == v) {
      return std::string(enum_names[static_cast<size_t>(i)]);
    }
    return fmt::format("{}", v);
  }
  if (kind == KnobKind::kInteger && v == std::round(v)) {
    return fmt::format("{}", static_cast<int64_t>(v));
  }
  return fmt::format("{:.6g}", v);
}

Result<double> KnobSpec::Parse(std::string_view text) const {
  if (kind == KnobKind::kEnum) {
    for (size_t i = 0; i < enum_names.size(); ++i) {
      if (enum_names[i] == text) return static_cast<double>(i);
    }
  }
  double v = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || ptr != end || text.empty() || !std::isfinite(v)) {
    if (kind == KnobKind::kEnum) {
      return Status::InvalidArgument(
          fmt::format("{}: expected one of {}, got '{}'", name, fmt::join(enum_names, ", "), text));
    }
    return Status::InvalidArgument(
        fmt::format("{}: expected a finite number, got '{}'", name, text));
  }
  if (kind == KnobKind::kEnum &&
      (v != std::round(v) || v < 0 || v >= static_cast<double>(enum_names.size()))) {
    return Status::InvalidArgument(
        fmt::format("{}: expected one of {}, got '{}'", name, fmt::join(enum_names, ", "), text));
  }
  return v;
}

std::span<const KnobSpec> AllKnobs() {
  static const std::vector<KnobSpec> table = MakeTable();
  return table;
}

const KnobSpec* FindKnob(std::string_view name) {
  for (const KnobSpec& spec : AllKnobs()) {
    if (spec.name == name) return &spec;
  }
  return nullptr;
}

std::string KnobNames(bool (*pred)(const KnobSpec&)) {
  std::string out;
  for (const KnobSpec& spec : AllKnobs()) {
    if (pred != nullptr && !pred(spec)) continue;
    if (!out.empty()) out += ", ";
    out += spec.name;
  }
  return out;
}

void ApplyKnobSet(const KnobSet& set, uint32_t num_layers, KnobValues* values) {
  for (const KnobSpec& spec : AllKnobs()) {
    if (spec.scalar()) {
      if (std::optional<double> v = spec.get(set)) spec.set_value(values, *v);
    } else if (spec.kind == KnobKind::kVector) {
      if (const auto& v = set.*spec.vector) (values->*spec.vectors).assign(num_layers, *v);
    } else if (const auto& p = set.*spec.placement) {
      (values->*spec.placements).assign(num_layers, *p);
    }
  }
}

KnobValues KnobValuesOf(const KnobSet& all, const std::vector<telemetry::LayerKnobs>& layers,
                        uint32_t num_layers) {
  KnobValues values;
  for (const KnobSpec& spec : AllKnobs()) {
    if (spec.kind == KnobKind::kVector) (values.*spec.vectors).assign(num_layers, {});
    if (spec.kind == KnobKind::kPlacement) (values.*spec.placements).assign(num_layers, {});
  }
  ApplyKnobSet(all, num_layers, &values);
  for (const telemetry::LayerKnobs& lk : layers) {
    if (lk.layer >= num_layers) continue;
    for (const KnobSpec& spec : AllKnobs()) {
      if (spec.kind == KnobKind::kVector && lk.knobs.*spec.vector) {
        (values.*spec.vectors)[lk.layer] = *(lk.knobs.*spec.vector);
      }
      if (spec.kind == KnobKind::kPlacement && lk.knobs.*spec.placement) {
        (values.*spec.placements)[lk.layer] = *(lk.knobs.*spec.placement);
      }
    }
  }
  return values;
}

}  // namespace moe::policies
