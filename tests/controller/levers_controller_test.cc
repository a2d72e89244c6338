// Operator levers, engine liveness, folded rejections and epochs across
// restarts, against an engine played by the test (real ZeroMQ on loopback,
// a real SQLite file, a FakeClock).

#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "controller_harness.h"

namespace moe::controller {
namespace {

Lever Make(LeverAction action, const std::string& engine = "e1") {
  Lever lever;
  lever.action = action;
  lever.engine_id = engine;
  lever.caller = {1000, 4242, "alice"};
  lever.reason = "incident 7";
  return lever;
}

Lever Pin(const std::string& knob, double value, int64_t duration_ms = 0) {
  Lever lever = Make(LeverAction::kPin);
  lever.knob = knob;
  lever.value = value;
  lever.duration_ms = duration_ms;
  return lever;
}

// Commands the engine has received so far, polling the controller meanwhile.
std::vector<telemetry::Command> Received(Harness& h) {
  std::vector<telemetry::Command> commands;
  for (int i = 0; i < 200 && commands.empty(); ++i) {
    auto got = h.engine().PollCommands();
    REQUIRE(got.ok());
    commands.insert(commands.end(), got->begin(), got->end());
    REQUIRE(h.controller().Poll(milliseconds(5)).ok());
  }
  return commands;
}

EngineStatus StatusOf(Harness& h, const std::string& engine = "e1") {
  for (const EngineStatus& s : h.controller().EngineStatuses()) {
    if (s.engine_id == engine) return s;
  }
  FAIL("no status for " << engine);
  return {};
}

TEST_CASE("A pin is sent at once, holds the knob against the policies, and lapses",
          "[controller][levers]") {
  Harness h;
  h.Steps(8, 0, 0.10);  // drops: the capacity policy wants more than 1.0
  Result<LeverOutcome> pinned = h.controller().Pull(Pin("capacity_factor", 1.25, 5000));
  INFO(pinned.status().ToString());
  REQUIRE(pinned.ok());
  REQUIRE(pinned->decision_id.has_value());
  std::vector<telemetry::Command> sent = Received(h);
  REQUIRE(sent.size() == 1);
  CHECK(*sent[0].knobs.capacity_factor == Approx(1.25));
  CHECK(sent[0].reason.find("operator lever 1") != std::string::npos);
  h.Ack(sent[0], true);
  h.Steps(8, sent[0].epoch, 0.10);  // still dropping, and the outcome is worse: no rollback
  for (int i = 0; i < 3; ++i)
    CHECK(h.Tick().empty());  // the capacity policy is rejected: pinned
  EngineStatus status = StatusOf(h);
  REQUIRE(status.pins.size() == 1);
  CHECK(status.pins[0].knob == "capacity_factor");
  CHECK(status.knobs.capacity_factor == Approx(1.25));

  // Lapsed: the policies may change it again.
  const int64_t lapsed_ns = h.clock().NowNanos();
  h.clock().Advance(6000 * kMs);
  h.Steps(8, sent[0].epoch, 0.10);
  std::vector<telemetry::Command> after = h.Tick();
  REQUIRE(after.size() == 1);
  CHECK(*after[0].knobs.capacity_factor > 1.25);
  CHECK(StatusOf(h).pins.empty());

  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() >= 3);
  CHECK(rows[0].policy == "operator");
  CHECK(rows[0].status == "measured");
  CHECK(rows[0].reward_after.has_value());
  // While it held, every capacity proposal was rejected as pinned; the three
  // ticks (and any run from the steps' own polls) fold into few rows.
  int pinned_rows = 0;
  uint64_t pinned_rejections = 0;
  for (const storage::DecisionRow& r : rows) {
    if (r.policy == "capacity" && r.status == "rejected" && r.created_ns < lapsed_ns) {
      CHECK(r.verdict_reason.find("pinned at 1.25 by operator lever 1 (alice") !=
            std::string::npos);
      ++pinned_rows;
      pinned_rejections += 1 + r.repeats;
    }
  }
  CHECK(pinned_rows >= 1);
  CHECK(pinned_rejections >= 3);
  CHECK(static_cast<uint64_t>(pinned_rows) < pinned_rejections);  // repeats were folded
  CHECK(rows.back().policy == "capacity");
  CHECK(rows.back().status == "sent");
}

// The knob table's other knobs: the Hello's values are in force, a pin of an
// enum or integer knob is sent as that one field, and the ack puts it in force.
TEST_CASE("Pins of enum and integer knobs travel as their own field",
          "[controller][levers][knobs]") {
  // No policy: every command is a pin's.
  Harness h([](ControllerOptions& o) { o.capacity_enabled = false; },
            [](telemetry::Hello& hello) {
              hello.knobs.shortlist = 0;
              hello.knobs.availability_weight = 0.25;
              hello.knobs.overflow_policy = telemetry::OverflowPolicy::kDrop;
              hello.knobs.capacity_scope = telemetry::CapacityScope::kExpert;
            });
  h.Steps(8, 0, 0.0);
  CHECK(StatusOf(h).knobs.availability_weight == 0.25);

  // Refused before anything is sent: a fraction of an integer or enum knob,
  // a knob that cannot be pinned (the placement), a value beyond the bounds.
  Result<LeverOutcome> half = h.controller().Pull(Pin("shortlist", 2.5));
  REQUIRE_FALSE(half.ok());
  CHECK(half.status().message() == "shortlist=2.5: must be a whole number");
  Result<LeverOutcome> placement = h.controller().Pull(Pin("phy2log", 1));
  REQUIRE_FALSE(placement.ok());
  CHECK(placement.status().message().find(
            "knob 'phy2log' cannot be pinned; pinnable knobs: "
            "top_k, top_p, k_min, capacity_factor, overflow_policy") != std::string::npos);
  Result<LeverOutcome> beyond = h.controller().Pull(Pin("overflow_policy", 3));
  REQUIRE_FALSE(beyond.ok());
  CHECK(beyond.status().message().find("outside the guard's bounds [0, 2]") != std::string::npos);

  Result<LeverOutcome> reroute = h.controller().Pull(Pin("overflow_policy", 1));
  INFO(reroute.status().ToString());
  REQUIRE(reroute.ok());
  std::vector<telemetry::Command> sent = Received(h);
  REQUIRE(sent.size() == 1);
  telemetry::KnobSet want;
  want.overflow_policy = telemetry::OverflowPolicy::kReroute;
  CHECK(sent[0].knobs == want);  // that field alone
  CHECK(sent[0].layer_knobs.empty());
  h.Ack(sent[0], true);
  h.Steps(8, sent[0].epoch, 0.0);
  EngineStatus status = StatusOf(h);
  CHECK(status.knobs.overflow_policy == telemetry::OverflowPolicy::kReroute);
  CHECK(status.knobs.availability_weight == 0.25);  // the others stay

  Result<LeverOutcome> shortlist = h.controller().Pull(Pin("shortlist", 3));
  REQUIRE(shortlist.ok());
  std::vector<telemetry::Command> second;
  for (int i = 0; i < 20 && second.empty(); ++i) {
    h.Steps(2, sent[0].epoch, 0.0);  // the first decision is measured, then the pin goes
    second = Received(h);
  }
  REQUIRE(second.size() == 1);
  CHECK(second[0].knobs.shortlist == 3u);
  CHECK_FALSE(second[0].knobs.overflow_policy.has_value());
  h.Ack(second[0], true);
  h.Steps(8, second[0].epoch, 0.0);
  CHECK(StatusOf(h).knobs.shortlist == 3u);
  CHECK(StatusOf(h).knobs.overflow_policy == telemetry::OverflowPolicy::kReroute);

  // The audit: the snapshot each decision was taken on lists every scalar
  // knob (an enum by name); the command records the wire value.
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 2);
  const nlohmann::json inputs = nlohmann::json::parse(rows[1].inputs_json);
  INFO(rows[1].inputs_json);
  const nlohmann::json& knobs = inputs["knobs"];
  CHECK(knobs["overflow_policy"] == "reroute");
  CHECK(knobs["capacity_scope"] == "expert");
  CHECK(knobs["shortlist"] == 0);
  CHECK(knobs["availability_weight"] == 0.25);
  CHECK(knobs.size() == 9);  // every scalar knob of the table
  CHECK(nlohmann::json::parse(rows[0].command_json)["overflow_policy"] == 1.0);
}

TEST_CASE("Levers are checked, audited, and restored after a restart",
          "[controller][levers][restart]") {
  Harness h([](ControllerOptions& o) {
    o.telemetry_endpoint = moe::testing::FreeLoopbackEndpoint();
    o.command_endpoint = moe::testing::FreeLoopbackEndpoint();
  });
  h.Steps(8, 0, 0.10);
  // Refused, each with the fix in the message.
  Result<LeverOutcome> out_of_bounds = h.controller().Pull(Pin("capacity_factor", 99));
  CHECK(out_of_bounds.status().code() == StatusCode::kInvalidArgument);
  CHECK(out_of_bounds.status().message().find("outside the guard's bounds") != std::string::npos);
  CHECK(h.controller().Pull(Pin("phy2log", 1)).status().code() == StatusCode::kInvalidArgument);
  CHECK(h.controller().Pull(Pin("top_k", 1.5)).status().code() == StatusCode::kInvalidArgument);
  Lever no_reason = Make(LeverAction::kPause);
  no_reason.reason = "";
  CHECK(h.controller().Pull(no_reason).status().code() == StatusCode::kInvalidArgument);
  Result<LeverOutcome> unknown = h.controller().Pull(Make(LeverAction::kPause, "nobody"));
  CHECK(unknown.status().code() == StatusCode::kNotFound);
  CHECK(unknown.status().message().find("known engines: e1") != std::string::npos);
  Lever unpin = Make(LeverAction::kUnpin);
  unpin.knob = "top_k";
  CHECK(h.controller().Pull(unpin).status().code() == StatusCode::kFailedPrecondition);

  // Pause: nothing is decided; advisory: a pin is refused.
  REQUIRE(h.controller().Pull(Make(LeverAction::kPause)).ok());
  CHECK(h.Tick().empty());
  CHECK(StatusOf(h).paused);
  Lever advisory = Make(LeverAction::kMode);
  advisory.mode = ControlMode::kAdvisory;
  REQUIRE(h.controller().Pull(advisory).ok());
  CHECK(h.controller().Pull(Pin("capacity_factor", 2)).status().code() ==
        StatusCode::kFailedPrecondition);
  CHECK(StatusOf(h).mode == ControlMode::kAdvisory);
  CHECK(StatusOf(h).mode_from_operator);

  h.RestartController();
  h.Steps(8, 0, 0.10);
  EngineStatus restored = StatusOf(h);
  CHECK(restored.paused);
  CHECK(restored.mode == ControlMode::kAdvisory);
  CHECK(h.Tick().empty());  // still paused
  REQUIRE(h.controller().Pull(Make(LeverAction::kResume)).ok());
  CHECK(h.Tick().empty());  // advisory: decided, not sent
  CHECK(h.controller().stats().advisory == 1);

  REQUIRE(h.controller().Shutdown().ok());
  auto reader = storage::Reader::Open(h.options().db_path);
  REQUIRE(reader.ok());
  auto actions = (*reader)->OperatorActions("", 0);
  REQUIRE(actions.ok());
  std::vector<std::string> seen;
  for (const storage::OperatorActionRow& a : *actions) {
    seen.push_back(a.action + (a.result == "done" ? "" : " refused"));
    CHECK(a.who == "alice (uid 1000, pid 4242)");
    CHECK(a.reason ==
          (a.engine_id == "e1" && a.action == "pause" && a.result != "done" ? "" : "incident 7"));
  }
  // The unknown engine leaves no row: it names no engine of this controller.
  CHECK(seen == std::vector<std::string>{"pin refused", "pin refused", "pin refused",
                                         "pause refused", "unpin refused", "pause", "mode",
                                         "pin refused", "resume"});
}

TEST_CASE("An engine silent for engine_expiry is gone: state evicted, decision closed, rows kept",
          "[controller][levers][liveness]") {
  Harness h([](ControllerOptions& o) {
    o.stale_after_ms = 1000;
    o.engine_expiry_ms = 3000;
  });
  h.Steps(8, 0, 0.10);
  std::vector<telemetry::Command> sent = h.Tick();
  REQUIRE(sent.size() == 1);  // in flight, never acked
  CHECK(StatusOf(h).liveness == "live");
  h.clock().Advance(1500 * kMs);
  REQUIRE(h.controller().Poll(milliseconds(0)).ok());
  CHECK(StatusOf(h).liveness == "stale");
  h.clock().Advance(2000 * kMs);
  REQUIRE(h.controller().Poll(milliseconds(0)).ok());
  EngineStatus gone = StatusOf(h);
  CHECK(gone.liveness == "gone");
  CHECK_FALSE(gone.in_flight.has_value());
  CHECK(h.controller().stats().engines == 0);
  CHECK(h.controller().stats().engines_gone == 1);
  CHECK(h.Tick().empty());  // no policy runs for it

  h.Steps(2, 0, 0.10);  // it speaks again
  CHECK(StatusOf(h).liveness == "live");
  CHECK(h.controller().stats().engines == 1);

  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].status == "unknown");
  CHECK(rows[0].ack_error.find("went silent") != std::string::npos);
  auto reader = storage::Reader::Open(h.options().db_path);
  REQUIRE(reader.ok());
  auto engines = (*reader)->Engines();
  REQUIRE(engines.ok());
  REQUIRE(engines->size() == 1);
  CHECK_FALSE((*engines)[0].gone_ns.has_value());  // cleared by its return
  auto history = (*reader)->History({});
  REQUIRE(history.ok());
  CHECK(history->size() == 2 * 10);  // 10 steps of 2 layers: nothing dropped
}

TEST_CASE("At most max_engines are tracked; messages of more are dropped and counted",
          "[controller][levers][liveness]") {
  Harness h([](ControllerOptions& o) { o.max_engines = 1; });
  telemetry::EngineLinkOptions link;
  link.engine_id = "e2";
  link.telemetry_endpoint = h.controller().telemetry_endpoint();
  link.command_endpoint = h.controller().command_endpoint();
  telemetry::Hello hello = h.hello();
  hello.engine_id = "e2";
  auto second = telemetry::EngineLink::Connect(link, hello);
  REQUIRE(second.ok());
  h.PollUntil([&] { return h.controller().stats().engines_refused >= 2; });
  CHECK(h.controller().stats().engines == 1);
  CHECK(h.controller().EngineStatuses().size() == 1);
}

TEST_CASE("Epochs are never issued twice, across a controller restart",
          "[controller][levers][restart]") {
  Harness h([](ControllerOptions& o) {
    o.telemetry_endpoint = moe::testing::FreeLoopbackEndpoint();
    o.command_endpoint = moe::testing::FreeLoopbackEndpoint();
  });
  h.Steps(8, 0, 0.10);
  std::vector<telemetry::Command> first = h.Tick();
  REQUIRE(first.size() == 1);
  CHECK(first[0].epoch == 1);
  h.RestartController();  // epoch 1 was sent, never acked: the engine still runs epoch 0
  h.clock().Advance(1000 * kMs);
  h.Steps(8, 0, 0.10);
  std::vector<telemetry::Command> second = h.Tick();
  REQUIRE(second.size() == 1);
  CHECK(second[0].epoch == 2);
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].status == "unknown");  // in flight at the restart
  CHECK(rows[0].ack_error == "moectld restarted before the outcome was measured");
  CHECK(rows[1].status == "sent");
}

}  // namespace
}  // namespace moe::controller
