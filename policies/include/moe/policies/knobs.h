// The knob table: every knob the engine has, one row each.
//
// A row names the knob, says what kind of value it holds, whether the
// controller may tune it and an operator pin it, where the guard keeps its
// limits, and how to read and write it in a telemetry::KnobSet (the wire's
// patch) and in KnobValues (the controller's settings in force). The guard,
// the policies, the controller's dispatch, the audit, the daemon's config and
// the CLI read this table instead of comparing knob names one by one; a new
// knob is a row here, a field in telemetry::KnobSet and the proto, and the
// engine's use of it (docs/knobs.md).
//
// Thread safety: the table is immutable after static initialisation; every
// function here is safe to call from any thread.

#ifndef MOE_POLICIES_KNOBS_H_
#define MOE_POLICIES_KNOBS_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/common/status.h"
#include "moe/telemetry/types.h"

namespace moe::policies {

// The knobs' names, as the wire, the audit, the TOML and the CLI spell them.
namespace knob {
inline constexpr std::string_view kTopK = "top_k";
inline constexpr std::string_view kTopP = "top_p";
inline constexpr std::string_view kKMin = "k_min";
inline constexpr std::string_view kCapacityFactor = "capacity_factor";
inline constexpr std::string_view kOverflowPolicy = "overflow_policy";
inline constexpr std::string_view kNoiseStd = "noise_std";
inline constexpr std::string_view kShortlist = "shortlist";
inline constexpr std::string_view kAvailabilityWeight = "availability_weight";
inline constexpr std::string_view kExpertBias = "expert_bias";
inline constexpr std::string_view kPhy2log = "phy2log";
inline constexpr std::string_view kCapacityScope = "capacity_scope";
}  // namespace knob

// Settings in force, every field present (unlike a KnobSet patch). Scalars
// are engine-wide; the vectors are per layer.
struct KnobValues {
  uint32_t top_k = 2;
  double top_p = 0;  // dynamic K off
  uint32_t k_min = 1;
  double capacity_factor = 0;  // 0 = unlimited
  telemetry::OverflowPolicy overflow_policy = telemetry::OverflowPolicy::kDrop;
  double noise_std = 0;
  uint32_t shortlist = 0;  // two-stage routing off
  double availability_weight = 0;
  // Selection bias in force per layer, [num_layers][num_experts]; empty (or
  // an empty layer) = all zero.
  std::vector<std::vector<float>> expert_bias;
  // Placement in force per layer, [num_layers][num_replicas]: the logical
  // expert of every physical slot; empty (or an empty layer) = the default,
  // slot s holds expert s % num_experts.
  std::vector<std::vector<uint32_t>> phy2log;
  // kExpert: the capacity is each logical expert's, split over its replicas;
  // kSlot: each replica's, so a replica adds room.
  telemetry::CapacityScope capacity_scope = telemetry::CapacityScope::kExpert;

  friend bool operator==(const KnobValues&, const KnobValues&) = default;
};

// Limits of one knob; for a vector knob (expert_bias) they apply to every
// element, and the hysteresis to the largest element change. An enum knob's
// limits are on its wire value (0, 1, ...).
struct KnobLimits {
  double min = 0;
  double max = 0;
  double max_change = 0;   // largest |new - current| in one decision
  double min_change = -1;  // smaller changes are rejected; < 0: GuardParams::hysteresis
};

struct GuardParams;  // guard.h

enum class KnobKind {
  kInteger,    // a count; proposals are rounded to whole numbers
  kReal,       // a real number
  kEnum,       // one of `enum_names`, carried as its wire value (0, 1, ...)
  kVector,     // one value per expert per layer (expert_bias)
  kPlacement,  // the logical expert of every physical slot per layer (phy2log)
};

std::string_view KnobKindName(KnobKind kind);  // "integer", "real", "enum", "vector", "placement"

// One row of the table. Scalar kinds (integer, real, enum) carry their value
// as a double (an enum as its wire value) through get/set/value/set_value;
// the vector and placement kinds through the member pointers.
struct KnobSpec {
  std::string_view name;
  KnobKind kind = KnobKind::kReal;
  std::string_view meaning;                   // one line, for help and docs
  std::vector<std::string_view> enum_names;   // kEnum: the name of wire value i
  bool pinnable = false;                      // `moectl pin` may hold it
  KnobLimits GuardParams::*limits = nullptr;  // the guard's limits; null: none (phy2log)

  // Scalars: read (absent = not in the patch) and write a KnobSet field, and
  // the value in force in KnobValues. Null for vector and placement kinds.
  std::optional<double> (*get)(const telemetry::KnobSet&) = nullptr;
  void (*set)(telemetry::KnobSet*, double) = nullptr;
  void (*clear)(telemetry::KnobSet*) = nullptr;
  double (*value)(const KnobValues&) = nullptr;
  void (*set_value)(KnobValues*, double) = nullptr;
  // kVector: the engine-wide (or one layer's) vector and the per-layer ones.
  std::optional<std::vector<float>> telemetry::KnobSet::*vector = nullptr;
  std::vector<std::vector<float>> KnobValues::*vectors = nullptr;
  // kPlacement: likewise.
  std::optional<std::vector<uint32_t>> telemetry::KnobSet::*placement = nullptr;
  std::vector<std::vector<uint32_t>> KnobValues::*placements = nullptr;

  bool scalar() const {
    return kind == KnobKind::kInteger || kind == KnobKind::kReal || kind == KnobKind::kEnum;
  }
  // Integer and enum knobs take whole values only.
  bool whole() const { return kind == KnobKind::kInteger || kind == KnobKind::kEnum; }
  // Whether `KnobSet` carries this knob.
  bool Present(const telemetry::KnobSet& set) const;
  // Removes this knob from `set`.
  void Clear(telemetry::KnobSet* set) const;
  // A scalar as the audit and the CLI show it: an enum's name, a whole
  // number without decimals, a real with up to 6 significant digits.
  std::string Format(double value) const;
  // A scalar from text: a number, or for an enum one of its names (or its
  // wire value). kInvalidArgument naming the knob otherwise.
  Result<double> Parse(std::string_view text) const;
};

// Every knob, in the order of telemetry::KnobSet's fields.
std::span<const KnobSpec> AllKnobs();

// The row named `name`, or null.
const KnobSpec* FindKnob(std::string_view name);

// The names of the knobs with `pred` true (every knob when null), joined by
// ", ": for error messages.
std::string KnobNames(bool (*pred)(const KnobSpec&) = nullptr);

// Writes every knob present in `set` into `values`: the scalars, and the
// vectors of every layer in [0, num_layers) (a vector knob's engine-wide
// value replaces each layer's).
void ApplyKnobSet(const telemetry::KnobSet& set, uint32_t num_layers, KnobValues* values);

// The settings in force that a Hello reports: its engine-wide knobs, then
// the layers' differences (vectors only: scalars are engine-wide here).
// Knobs the Hello lacks keep KnobValues' defaults.
KnobValues KnobValuesOf(const telemetry::KnobSet& all,
                        const std::vector<telemetry::LayerKnobs>& layers, uint32_t num_layers);

}  // namespace moe::policies

#endif  // MOE_POLICIES_KNOBS_H_
