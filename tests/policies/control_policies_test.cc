#include <catch2/catch.hpp>

#include "moe/policies/capacity_policy.h"
#include "moe/policies/guard.h"
#include "moe/policies/replication_policy.h"
#include "moe/policies/reward.h"

namespace moe::policies {
namespace {

constexpr int64_t kMs = 1'000'000;

// A proposal of a scalar knob for every layer.
Proposal Scalar(std::string policy, std::string knob, double current, double value) {
  Proposal p;
  p.policy = std::move(policy);
  p.knob = std::move(knob);
  p.current = current;
  p.value = value;
  p.reason = "test";
  return p;
}

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
  Proposal p = Scalar("capacity", "capacity_factor", 1.0, 2.4);
  Verdict v = Judge(p, s, g, &state);
  CHECK(v.kind == VerdictKind::kClamped);
  CHECK(v.value == Approx(1.5));  // max_change 0.5

  GuardState fresh;
  Proposal low = Scalar("capacity", "capacity_factor", 0.6, 0.2);
  Verdict vl = Judge(low, s, g, &fresh);
  CHECK(vl.kind == VerdictKind::kClamped);
  CHECK(vl.value == Approx(0.5));  // lower bound
}

TEST_CASE("Guard passes unlimited capacity only where allowed, in one step either way",
          "[guard][unlimited]") {
  GuardParams g;  // max_change 0.5, bounds [0.5, 4]
  EngineSnapshot s = Snapshot(0.3, 1.0);
  GuardState state;
  Verdict refused = Judge(Scalar("counterfactual", "capacity_factor", 1.0, 0.0), s, g, &state);
  CHECK(refused.kind == VerdictKind::kRejected);
  CHECK(refused.reason.find("unlimited = false") != std::string::npos);
  CHECK(state.last_change_ns.empty());  // a refusal starts no cooldown

  g.unlimited_capacity = true;
  Verdict up = Judge(Scalar("counterfactual", "capacity_factor", 1.0, 0.0), s, g, &state);
  CHECK(up.kind == VerdictKind::kAccepted);  // not clamped to 1.5 by max_change
  CHECK(up.value == 0);
  CHECK(up.reason.find("dropless") != std::string::npos);
  CHECK(state.last_change_ns.count("capacity_factor") == 1);

  // Back down: any value within the bounds, max_change does not apply from
  // unlimited; the bounds do.
  GuardState fresh;
  Verdict down = Judge(Scalar("counterfactual", "capacity_factor", 0.0, 3.0), s, g, &fresh);
  CHECK(down.kind == VerdictKind::kAccepted);
  CHECK(down.value == 3.0);
  GuardState other;
  Verdict over = Judge(Scalar("counterfactual", "capacity_factor", 0.0, 9.0), s, g, &other);
  CHECK(over.kind == VerdictKind::kClamped);
  CHECK(over.value == 4.0);
  GuardState again;
  Verdict same = Judge(Scalar("counterfactual", "capacity_factor", 0.0, 0.0), s, g, &again);
  CHECK(same.kind == VerdictKind::kRejected);
  CHECK(same.reason.find("unlimited already") != std::string::npos);
}

TEST_CASE("Guard lets a capacity raise past the cooldown while the epoch drops", "[guard]") {
  GuardParams g;
  g.urgent_drop_rate = 0.02;
  g.unlimited_capacity = true;
  GuardState state;
  EngineSnapshot s = Snapshot(0.3, 1.0);  // dropping 30%
  REQUIRE(Judge(Scalar("counterfactual", "capacity_factor", 1.0, 1.5), s, g, &state).kind ==
          VerdictKind::kAccepted);
  s.now_ns += 100 * kMs;  // well within the 3 s cooldown
  s.last_telemetry_ns = s.now_ns;
  s.knobs.capacity_factor = 1.5;
  CHECK(Judge(Scalar("counterfactual", "capacity_factor", 1.5, 2.0), s, g, &state).kind ==
        VerdictKind::kAccepted);
  CHECK(Judge(Scalar("counterfactual", "capacity_factor", 2.0, 0.0), s, g, &state).kind ==
        VerdictKind::kAccepted);  // to unlimited: a raise too
  // Lowering it, another knob, or a raise while drops are below the rate:
  // the cooldown holds.
  Verdict lower = Judge(Scalar("counterfactual", "capacity_factor", 2.0, 1.5), s, g, &state);
  CHECK(lower.reason.find("cooldown") != std::string::npos);
  GuardState k_state;
  REQUIRE(Judge(Scalar("adaptive_k", "top_k", 2, 3), s, g, &k_state).kind ==
          VerdictKind::kAccepted);
  CHECK(Judge(Scalar("adaptive_k", "top_k", 3, 4), s, g, &k_state).reason.find("cooldown") !=
        std::string::npos);
  s.drop_rate = 0.01;
  Verdict calm = Judge(Scalar("counterfactual", "capacity_factor", 2.0, 2.5), s, g, &state);
  CHECK(calm.reason.find("cooldown") != std::string::npos);
  g.urgent_drop_rate = 0;  // off
  s.drop_rate = 0.5;
  CHECK(Judge(Scalar("counterfactual", "capacity_factor", 2.0, 2.5), s, g, &state)
            .reason.find("cooldown") != std::string::npos);
  g.urgent_drop_rate = 1.5;
  CHECK_FALSE(Validate(g).ok());
}

TEST_CASE("Guard enforces cooldown, hysteresis, staleness and epoch maturity", "[guard]") {
  GuardParams g;
  GuardState state;
  EngineSnapshot s = Snapshot(0.3, 1.0);
  Proposal p = Scalar("capacity", "capacity_factor", 1.0, 1.2);
  REQUIRE(Judge(p, s, g, &state).kind == VerdictKind::kAccepted);

  s.now_ns += 1000 * kMs;
  s.last_telemetry_ns = s.now_ns;
  Verdict cooled = Judge(p, s, g, &state);
  CHECK(cooled.kind == VerdictKind::kRejected);
  CHECK(cooled.reason.find("cooldown") != std::string::npos);

  s.now_ns += 5000 * kMs;
  s.last_telemetry_ns = s.now_ns;
  Proposal tiny = Scalar("capacity", "capacity_factor", 1.0, 1.01);
  CHECK(Judge(tiny, s, g, &state).reason.find("hysteresis") != std::string::npos);

  EngineSnapshot stale = s;
  stale.last_telemetry_ns = s.now_ns - 10'000 * kMs;
  CHECK(Judge(p, stale, g, &state).reason.find("stale") != std::string::npos);

  EngineSnapshot young = s;
  young.steps_in_epoch = 1;
  CHECK(Judge(p, young, g, &state).reason.find("frozen") != std::string::npos);

  Proposal unknown = Scalar("x", "warp_drive", 0, 1);
  CHECK(Judge(unknown, s, g, &state).kind == VerdictKind::kRejected);
}

TEST_CASE("Reward penalises latency over SLO, drops and quality; rollback threshold", "[reward]") {
  RewardParams r;
  OutcomeFigures good;
  good.steps = 100;
  good.step_us = 10'000;
  good.max_over_mean = 1.1;
  good.quality_error = 0.0;
  good.capacity_factor = 1.0;
  OutcomeFigures dropping = good;
  dropping.drop_rate = 0.1;
  OutcomeFigures slow = good;
  slow.step_us = 2 * r.slo_us;
  CHECK(Reward(good, r) > Reward(dropping, r));
  CHECK(Reward(good, r) > Reward(slow, r));
  CHECK(Reward(slow, r) == Approx(-1.0 - r.capacity_weight));
  // With per-layer timing the latency is the critical path, not the wall
  // time of devices run one after another.
  OutcomeFigures parallel = slow;
  parallel.critical_path_us = r.slo_us / 2;
  CHECK(Reward(parallel, r) == Approx(Reward(good, r)));
  parallel.critical_path_us = 3 * r.slo_us;
  CHECK(Reward(parallel, r) == Approx(-2.0 - r.capacity_weight));

  GuardParams g;
  CHECK(ShouldRollBack(-1.0, -1.5, g));
  CHECK_FALSE(ShouldRollBack(-1.0, -1.1, g));
  CHECK_FALSE(ShouldRollBack(-0.02, -0.03, g));  // below the absolute margin
}

TEST_CASE("Guard clamps a bias vector element by element and audits the change", "[guard][bias]") {
  GuardParams g;
  g.expert_bias = {-0.1, 0.1, 0.01, 0.001};
  GuardState state;
  EngineSnapshot snap = Snapshot(0.0, 1.0);
  Proposal p;
  p.policy = "bias";
  p.knob = "expert_bias";
  p.current_vectors = {{0.0f, 0.095f}, {}};  // layer 1: none in force (zeros)
  p.vectors = {{-0.05f, 0.2f}, {0.004f, 0.0f}};
  Verdict v = Judge(p, snap, g, &state);
  CHECK(v.kind == VerdictKind::kClamped);
  REQUIRE(v.vectors.size() == 2);
  CHECK(v.vectors[0][0] == Approx(-0.01));  // max change
  CHECK(v.vectors[0][1] == Approx(0.1));    // bound
  CHECK(v.vectors[1][0] == Approx(0.004));  // within both
  CHECK(state.last_change_ns.count("expert_bias") == 1);

  GuardState fresh;
  p.vectors = {{0.0005f, 0.095f}, {0.0f, 0.0f}};  // below min_change everywhere
  CHECK(Judge(p, snap, g, &fresh).reason.find("hysteresis") != std::string::npos);
  p.vectors = {{0.0f, 0.0f}};  // one layer short
  CHECK(Judge(p, snap, g, &fresh).kind == VerdictKind::kRejected);
}

TEST_CASE("Guard checks a placement: valid, within the move budget, a real change",
          "[guard][replication]") {
  GuardParams g;
  g.max_slot_moves = 2;
  g.placement_cooldown_ms = 30'000;
  EngineSnapshot snap = Snapshot(0.0, 1.0);
  snap.num_experts = 4;
  snap.num_replicas = 6;
  Proposal p;
  p.policy = "replication";
  p.knob = "phy2log";
  p.current_placements = {{0, 1, 2, 3, 0, 1}};
  p.placements = {{0, 1, 2, 3, 0, 0}};  // one slot: expert 1's second replica -> expert 0
  GuardState state;
  Verdict v = Judge(p, snap, g, &state);
  CHECK(v.kind == VerdictKind::kAccepted);
  CHECK(v.placements == p.placements);

  // The placement cooldown is longer than the general one.
  snap.now_ns += 10'000 * kMs;
  snap.last_telemetry_ns += 10'000 * kMs;
  Verdict soon = Judge(p, snap, g, &state);
  CHECK(soon.kind == VerdictKind::kRejected);
  CHECK(soon.reason.find("cooldown") != std::string::npos);

  GuardState fresh;
  p.placements = {{0, 0, 2, 3, 0, 0}};  // expert 1 has no replica left
  CHECK(Judge(p, snap, g, &fresh).reason.find("without a replica") != std::string::npos);
  p.placements = {{3, 2, 1, 0, 0, 1}};  // 4 slots change, budget 2
  CHECK(Judge(p, snap, g, &fresh).reason.find("budget") != std::string::npos);
  p.placements = {{0, 1, 2, 9, 0, 1}};  // no such expert
  CHECK(Judge(p, snap, g, &fresh).reason.find("expert 9") != std::string::npos);
  p.placements = {{0, 1, 2, 3, 0}};  // a slot short
  CHECK(Judge(p, snap, g, &fresh).kind == VerdictKind::kRejected);
  p.placements = p.current_placements;  // nothing moves
  CHECK(Judge(p, snap, g, &fresh).reason.find("does not change") != std::string::npos);
  CHECK(fresh.last_change_ns.empty());  // rejections leave no cooldown behind
}

}  // namespace
}  // namespace moe::policies

namespace moe::policies {
namespace {

TEST_CASE("CooldownLeftMs is the cooldown Judge applies", "[guard]") {
  GuardParams params;
  params.cooldown_ms = 3000;
  params.placement_cooldown_ms = 30'000;
  GuardState state;
  constexpr int64_t kMs = 1'000'000;
  CHECK(CooldownLeftMs("capacity_factor", 0, params, state) == 0);  // never changed
  state.last_change_ns["capacity_factor"] = 10'000 * kMs;
  state.last_change_ns["phy2log"] = 10'000 * kMs;
  CHECK(CooldownLeftMs("capacity_factor", 11'000 * kMs, params, state) == 2000);
  CHECK(CooldownLeftMs("capacity_factor", 13'000 * kMs, params, state) == 0);
  CHECK(CooldownLeftMs("phy2log", 13'000 * kMs, params, state) == 27'000);
  CHECK(CooldownLeftMs("phy2log", 40'000 * kMs, params, state) == 0);
}

TEST_CASE("the replication policy's time budget must be positive", "[replication]") {
  ReplicationPolicyParams p;
  CHECK(Validate(p).ok());
  p.time_budget_ms = 0;
  CHECK_THAT(Validate(p).message(), Catch::Contains("time_budget_ms"));
}

}  // namespace
}  // namespace moe::policies
