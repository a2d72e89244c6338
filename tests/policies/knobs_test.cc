// The knob table (policies/knobs.h): its invariants, and a round trip of
// every knob through its accessors.

#include "moe/policies/knobs.h"

#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <utility>

#include "moe/policies/guard.h"

namespace moe::policies {
namespace {

using telemetry::KnobSet;

// Converts to any std::optional<T> and to nothing else, so KnobSet{Any...}
// compiles exactly while there are no more initialisers than fields.
struct AnyOptional {
  template <typename T>
  operator std::optional<T>() const {  // NOLINT(google-explicit-constructor)
    return std::nullopt;
  }
};

template <typename T, typename... Args>
constexpr size_t CountFields(Args... args) {
  if constexpr (requires { T{args..., AnyOptional{}}; }) {
    return CountFields<T>(args..., AnyOptional{});
  } else {
    return sizeof...(Args);
  }
}

// A value of each knob unlike KnobValues' default, within the kind.
double Sample(const KnobSpec& spec, size_t i) {
  switch (spec.kind) {
    case KnobKind::kEnum:
      return static_cast<double>(spec.enum_names.size() - 1);
    case KnobKind::kInteger:
      return static_cast<double>(3 + i);
    default:
      return 0.125 * static_cast<double>(i + 1);
  }
}

TEST_CASE("knob table: one row per KnobSet field, unique names", "[knobs]") {
  STATIC_REQUIRE(CountFields<KnobSet>() == 11);
  CHECK(AllKnobs().size() == CountFields<KnobSet>());
  std::set<std::string_view> names;
  for (const KnobSpec& spec : AllKnobs()) {
    INFO(spec.name);
    CHECK(names.insert(spec.name).second);
    CHECK(FindKnob(spec.name) == &spec);
    CHECK(!spec.meaning.empty());
    CHECK(spec.scalar() == (spec.get != nullptr));
    CHECK(spec.scalar() == (spec.set != nullptr && spec.clear != nullptr && spec.value != nullptr &&
                            spec.set_value != nullptr));
    CHECK((spec.kind == KnobKind::kVector) == (spec.vector != nullptr && spec.vectors != nullptr));
    CHECK((spec.kind == KnobKind::kPlacement) ==
          (spec.placement != nullptr && spec.placements != nullptr));
    CHECK((spec.kind == KnobKind::kEnum) == !spec.enum_names.empty());
    // Every knob but the placement has guard limits; every one with limits
    // can be pinned.
    CHECK((spec.limits == nullptr) == (spec.kind == KnobKind::kPlacement));
    CHECK(spec.pinnable == (spec.limits != nullptr));
  }
  CHECK(FindKnob("no_such_knob") == nullptr);
  CHECK(KnobNames().find("capacity_scope") != std::string::npos);
}

TEST_CASE("knob table: each row writes its own KnobSet field and no other", "[knobs]") {
  KnobSet all;
  size_t i = 0;
  for (const KnobSpec& spec : AllKnobs()) {
    INFO(spec.name);
    KnobSet one;
    if (spec.scalar()) {
      spec.set(&one, Sample(spec, i));
      spec.set(&all, Sample(spec, i));
    } else if (spec.kind == KnobKind::kVector) {
      one.*spec.vector = std::vector<float>{0.5f};
      all.*spec.vector = std::vector<float>{0.5f};
    } else {
      one.*spec.placement = std::vector<uint32_t>{1, 0};
      all.*spec.placement = std::vector<uint32_t>{1, 0};
    }
    CHECK(!one.empty());
    for (const KnobSpec& other : AllKnobs())
      CHECK(other.Present(one) == (&other == &spec));
    spec.Clear(&one);
    CHECK(one.empty());
    ++i;
  }
  // Every field set: clearing each row's field in turn empties the set.
  for (const KnobSpec& spec : AllKnobs())
    spec.Clear(&all);
  CHECK(all.empty());
  CHECK(all == KnobSet{});
}

TEST_CASE("knob table: KnobSet -> KnobValues -> KnobSet round trip for every knob", "[knobs]") {
  constexpr uint32_t kLayers = 3;
  KnobSet sent;
  size_t i = 0;
  for (const KnobSpec& spec : AllKnobs()) {
    if (spec.scalar()) spec.set(&sent, Sample(spec, i));
    if (spec.kind == KnobKind::kVector) sent.*spec.vector = std::vector<float>{0.25f, -0.5f};
    if (spec.kind == KnobKind::kPlacement) sent.*spec.placement = std::vector<uint32_t>{1, 0};
    ++i;
  }
  KnobValues values;
  ApplyKnobSet(sent, kLayers, &values);
  KnobSet back;
  i = 0;
  for (const KnobSpec& spec : AllKnobs()) {
    INFO(spec.name);
    if (spec.scalar()) {
      CHECK(spec.value(values) == Sample(spec, i));
      CHECK(spec.value(values) != spec.value(KnobValues{}));  // the sample is no default
      spec.set(&back, spec.value(values));
    } else if (spec.kind == KnobKind::kVector) {
      REQUIRE((values.*spec.vectors).size() == kLayers);
      for (const auto& layer : values.*spec.vectors)
        CHECK(layer == *(sent.*spec.vector));
      back.*spec.vector = (values.*spec.vectors)[0];
    } else {
      REQUIRE((values.*spec.placements).size() == kLayers);
      back.*spec.placement = (values.*spec.placements)[kLayers - 1];
    }
    ++i;
  }
  CHECK(back == sent);

  // A Hello: engine-wide values, then a layer's different vectors.
  std::vector<telemetry::LayerKnobs> layers(1);
  layers[0].layer = 1;
  layers[0].knobs.expert_bias = std::vector<float>{1.0f, 2.0f};
  layers[0].knobs.phy2log = std::vector<uint32_t>{0, 1};
  layers.push_back({7, layers[0].knobs});  // beyond num_layers: ignored
  const KnobValues hello = KnobValuesOf(sent, layers, kLayers);
  CHECK(hello.expert_bias[0] == *sent.expert_bias);
  CHECK(hello.expert_bias[1] == std::vector<float>{1.0f, 2.0f});
  CHECK(hello.phy2log[1] == std::vector<uint32_t>{0, 1});
  CHECK(hello.phy2log[2] == *sent.phy2log);
  CHECK(hello.shortlist == values.shortlist);
  CHECK(hello.overflow_policy == telemetry::OverflowPolicy::kReplica);
  CHECK(hello.capacity_scope == telemetry::CapacityScope::kSlot);
  // An empty Hello keeps the defaults.
  const KnobValues bare = KnobValuesOf(KnobSet{}, {}, 2);
  CHECK(bare.top_k == KnobValues{}.top_k);
  CHECK(bare.expert_bias.size() == 2);
  CHECK(bare.expert_bias[0].empty());
}

TEST_CASE("knob table: enum names and numbers parse and format", "[knobs]") {
  const KnobSpec* overflow = FindKnob("overflow_policy");
  REQUIRE(overflow != nullptr);
  CHECK(overflow->Parse("reroute").value() == 1.0);
  CHECK(overflow->Parse("2").value() == 2.0);
  CHECK(overflow->Format(1) == "reroute");
  CHECK(overflow->Format(2) == "replica");
  Result<double> bad = overflow->Parse("spill");
  REQUIRE(!bad.ok());
  CHECK(bad.status().message() ==
        "overflow_policy: expected one of drop, reroute, replica, got 'spill'");
  CHECK(!overflow->Parse("3").ok());
  CHECK(!overflow->Parse("0.5").ok());

  const KnobSpec* scope = FindKnob("capacity_scope");
  REQUIRE(scope != nullptr);
  CHECK(scope->Parse("slot").value() == 1.0);
  KnobSet set;
  scope->set(&set, 1);
  CHECK(set.capacity_scope == telemetry::CapacityScope::kSlot);

  const KnobSpec* shortlist = FindKnob("shortlist");
  CHECK(shortlist->Format(8) == "8");
  CHECK(shortlist->Parse("8").value() == 8.0);
  CHECK(!shortlist->Parse("eight").ok());
  CHECK(!shortlist->Parse("").ok());
  CHECK(!FindKnob("top_p")->Parse("nan").ok());
  CHECK(FindKnob("top_p")->Parse("inf").status().message() ==
        "top_p: expected a finite number, got 'inf'");
  CHECK(FindKnob("capacity_factor")->Format(2.5) == "2.5");
}

TEST_CASE("knob table: the guard has limits for every scalar knob and judges them", "[knobs]") {
  GuardParams params;
  REQUIRE(Validate(params).ok());
  for (const KnobSpec& spec : AllKnobs()) {
    INFO(spec.name);
    if (spec.kind == KnobKind::kPlacement) {
      CHECK(LimitsFor(std::string(spec.name), params) == nullptr);
      continue;
    }
    const KnobLimits* limits = LimitsFor(std::string(spec.name), params);
    REQUIRE(limits == &(params.*spec.limits));
    CHECK(limits->min <= limits->max);
  }
  EngineSnapshot snapshot;
  snapshot.now_ns = 10'000'000'000;
  snapshot.last_telemetry_ns = snapshot.now_ns;
  snapshot.steps_in_epoch = 100;
  GuardState state;
  // An enum is rounded to a wire value and clamped to its limits.
  Proposal p;
  p.policy = "test";
  p.knob = "overflow_policy";
  p.current = 0;
  p.value = 1.4;
  Verdict v = Judge(p, snapshot, params, &state);
  CHECK(v.kind == VerdictKind::kClamped);
  CHECK(v.value == 1.0);
  p.knob = "shortlist";
  p.value = 100;
  v = Judge(p, snapshot, params, &state);
  CHECK(v.kind == VerdictKind::kClamped);
  CHECK(v.value == 64.0);
  p.knob = "availability_weight";
  p.value = 0.2;
  v = Judge(p, snapshot, params, &state);
  CHECK(v.kind == VerdictKind::kAccepted);
  CHECK(v.value == 0.2);
  // An enum's limits must lie within its names.
  params.capacity_scope.max = 2;
  Status bad = Validate(params);
  REQUIRE(!bad.ok());
  CHECK(bad.message().find("guard.capacity_scope") != std::string::npos);
}

}  // namespace
}  // namespace moe::policies
