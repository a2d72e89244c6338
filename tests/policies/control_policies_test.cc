#include <catch2/catch.hpp>

#include "moe/policies/capacity_policy.h"
#include "moe/policies/guard.h"
#include "moe/policies/reward.h"

namespace moe::policies {
namespace {

constexpr int64_t kMs = 1'000'000;

EngineSnapshot Snapshot(double drop_rate, double cf) {
  EngineSnapshot s;
  s.engine_id = "e1";
  s.now_ns = 100'000 * kMs;
  s.last_telemetry_ns = s.now_ns - 100 * kMs;
  s.epoch = 3;
  s.steps_in_epoch = 20;
  s.knobs.capacity_factor = cf;
  s.drop_rate = drop_rate;
  return s;
}

TEST_CASE("Capacity rises with the excess drop rate, falls below the band", "[capacity]") {
  CapacityPolicyParams p;
  REQUIRE(Validate(p).ok());
  auto up_small = ProposeCapacity(Snapshot(0.03, 1.0), p);
  auto up_big = ProposeCapacity(Snapshot(0.30, 1.0), p);
  REQUIRE(up_small);
  REQUIRE(up_big);
  CHECK(up_small->knob == "capacity_factor");
  CHECK(up_small->value > 1.0);
  CHECK(up_big->value > up_small->value);  // proportional to the excess
  CHECK(up_big->reason.find("above target band") != std::string::npos);

  auto down = ProposeCapacity(Snapshot(0.0, 1.5), p);
  REQUIRE(down);
  CHECK(down->value == Approx(1.45));

  CHECK_FALSE(ProposeCapacity(Snapshot(0.01, 1.5), p));  // inside the band
  CHECK_FALSE(ProposeCapacity(Snapshot(0.5, 0.0), p));   // unlimited capacity left alone
  EngineSnapshot young = Snapshot(0.5, 1.0);
  young.steps_in_epoch = 2;
  CHECK_FALSE(ProposeCapacity(young, p));  // too few steps to trust
}

TEST_CASE("Capacity parameters are validated", "[capacity]") {
  CapacityPolicyParams p;
  p.target_low = 0.05;
  p.target_high = 0.01;
  Status s = Validate(p);
  REQUIRE_FALSE(s.ok());
  CHECK(s.message().find("target_low") != std::string::npos);
}

TEST_CASE("Guard bounds, limits the step, and clamps", "[guard]") {
  GuardParams g;
  GuardState state;
  EngineSnapshot s = Snapshot(0.3, 1.0);
  Proposal p{"capacity", "capacity_factor", -1, 1.0, 2.4, "test"};
  Verdict v = Judge(p, s, g, &state);
  CHECK(v.kind == VerdictKind::kClamped);
  CHECK(v.value == Approx(1.5));  // max_change 0.5

  GuardState fresh;
  Proposal low{"capacity", "capacity_factor", -1, 0.6, 0.2, "test"};
  Verdict vl = Judge(low, s, g, &fresh);
  CHECK(vl.kind == VerdictKind::kClamped);
  CHECK(vl.value == Approx(0.5));  // lower bound
}

TEST_CASE("Guard enforces cooldown, hysteresis, staleness and epoch maturity", "[guard]") {
  GuardParams g;
  GuardState state;
  EngineSnapshot s = Snapshot(0.3, 1.0);
  Proposal p{"capacity", "capacity_factor", -1, 1.0, 1.2, "test"};
  REQUIRE(Judge(p, s, g, &state).kind == VerdictKind::kAccepted);

  s.now_ns += 1000 * kMs;
  s.last_telemetry_ns = s.now_ns;
  Verdict cooled = Judge(p, s, g, &state);
  CHECK(cooled.kind == VerdictKind::kRejected);
  CHECK(cooled.reason.find("cooldown") != std::string::npos);

  s.now_ns += 5000 * kMs;
  s.last_telemetry_ns = s.now_ns;
  Proposal tiny{"capacity", "capacity_factor", -1, 1.0, 1.01, "test"};
  CHECK(Judge(tiny, s, g, &state).reason.find("hysteresis") != std::string::npos);

  EngineSnapshot stale = s;
  stale.last_telemetry_ns = s.now_ns - 10'000 * kMs;
  CHECK(Judge(p, stale, g, &state).reason.find("stale") != std::string::npos);

  EngineSnapshot young = s;
  young.steps_in_epoch = 1;
  CHECK(Judge(p, young, g, &state).reason.find("frozen") != std::string::npos);

  Proposal unknown{"x", "warp_drive", -1, 0, 1, "test"};
  CHECK(Judge(unknown, s, g, &state).kind == VerdictKind::kRejected);
}

TEST_CASE("Reward penalises latency over SLO, drops and quality; rollback threshold", "[reward]") {
  RewardParams r;
  OutcomeFigures good{100, 0.0, 10'000, 1.1, 0.0, 1.0};
  OutcomeFigures dropping = good;
  dropping.drop_rate = 0.1;
  OutcomeFigures slow = good;
  slow.step_us = 2 * r.slo_us;
  CHECK(Reward(good, r) > Reward(dropping, r));
  CHECK(Reward(good, r) > Reward(slow, r));
  CHECK(Reward(slow, r) == Approx(-1.0 - r.capacity_weight));

  GuardParams g;
  CHECK(ShouldRollBack(-1.0, -1.5, g));
  CHECK_FALSE(ShouldRollBack(-1.0, -1.1, g));
  CHECK_FALSE(ShouldRollBack(-0.02, -0.03, g));  // below the absolute margin
}

}  // namespace
}  // namespace moe::policies
