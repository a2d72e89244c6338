// The controller against an engine played by the test: real ZeroMQ sockets on
// loopback and a real SQLite file, with a FakeClock so cadences, cooldowns,
// staleness and ack timeouts run on the test's schedule.

#include <sqlite3.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>

#include "controller_harness.h"
#include "moe/controller/controller.h"
#include "moe/storage/reader.h"
#include "moe/telemetry/transport.h"

namespace moe::controller {
namespace {

TEST_CASE("High drop rate raises capacity; the outcome is measured under the new epoch",
          "[controller]") {
  Harness h;
  h.Steps(8, 0, 0.10);
  std::vector<telemetry::Command> commands = h.Tick();
  REQUIRE(commands.size() == 1);
  const telemetry::Command& cmd = commands[0];
  CHECK(cmd.engine_id == "e1");
  CHECK(cmd.epoch == 1);
  REQUIRE(cmd.knobs.capacity_factor.has_value());
  CHECK(*cmd.knobs.capacity_factor > 1.0);
  CHECK(*cmd.knobs.capacity_factor <= 1.5);  // the guard's max change

  h.Ack(cmd, true);
  CHECK(h.Tick().empty());  // nothing new while the decision is being measured
  h.Steps(4, 1, 0.0);

  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 1);
  const storage::DecisionRow& d = rows[0];
  CHECK(d.status == "measured");
  CHECK(d.verdict == "accepted");
  CHECK(d.epoch == std::optional<uint64_t>(1));
  CHECK(d.acked_ns.has_value());
  REQUIRE(d.reward_before.has_value());
  REQUIRE(d.reward_after.has_value());
  CHECK(*d.reward_after > *d.reward_before);  // fewer drops
  CHECK(d.inputs_json.find("\"drop_rate\":0.1") != std::string::npos);
}

TEST_CASE("No decision while the database refuses writes, and the loop does not stall",
          "[controller][storage]") {
  Harness h;
  // Another connection holds the write lock: every write of the daemon fails.
  sqlite3* lock = nullptr;
  REQUIRE(sqlite3_open(h.options().db_path.c_str(), &lock) == SQLITE_OK);
  REQUIRE(sqlite3_exec(lock, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 400 && !h.controller().metrics(false).db_failing; ++i)
    REQUIRE(h.controller().Poll(milliseconds(10)).ok());
  REQUIRE(h.controller().metrics(false).db_failing);
  // Steps that drop would make the capacity policy act: it is held.
  h.Steps(8, 0, 0.10);
  const auto tick = std::chrono::steady_clock::now();
  CHECK(h.Tick().empty());
  // The store's own busy wait (2 s) is not spent on the loop.
  CHECK(std::chrono::steady_clock::now() - tick < std::chrono::seconds(1));
  CHECK(h.controller().stats().decisions == 0);
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));

  // Released: the queued writes commit and the decision is made and sent.
  REQUIRE(sqlite3_exec(lock, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(lock);
  for (int i = 0; i < 1000 && h.controller().metrics(false).db_failing; ++i)
    REQUIRE(h.controller().Poll(milliseconds(10)).ok());
  REQUIRE_FALSE(h.controller().metrics(false).db_failing);
  h.Steps(8, 0, 0.10);
  const std::vector<telemetry::Command> commands = h.Tick();
  REQUIRE(commands.size() == 1);
  CHECK(commands[0].knobs.capacity_factor.has_value());
  const std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].status == "sent");
}

TEST_CASE("A step that drops runs the pipeline at once, not a cadence later", "[controller]") {
  for (double react : {0.05, 0.0}) {
    INFO("react_drop_rate=" << react);
    Harness h([&](ControllerOptions& o) {
      o.cadence_ms = 60'000;  // the cadence never comes within the test
      o.react_drop_rate = react;
      o.react_min_interval_ms = 0;
    });
    h.Steps(8, 0, 0.0);  // no drops: nothing to react to
    CHECK(h.Received().empty());
    h.Steps(8, 0, 0.30);
    std::vector<telemetry::Command> commands = h.Received();
    if (react > 0) {
      REQUIRE(commands.size() == 1);
      REQUIRE(commands[0].knobs.capacity_factor.has_value());
      CHECK(*commands[0].knobs.capacity_factor > 1.0);
      // One change in flight: more dropping steps send nothing new.
      h.Steps(2, 0, 0.30);
      CHECK(h.Received().empty());
    } else {
      CHECK(commands.empty());  // off: only the cadence runs the pipeline
    }
  }
}

TEST_CASE("The guard's cooldown and epoch maturity are audited as rejections", "[controller]") {
  Harness h([](ControllerOptions& o) { o.guard.cooldown_ms = 10'000; });
  h.Steps(8, 0, 0.10);
  auto first = h.Tick();
  REQUIRE(first.size() == 1);
  h.Ack(first[0], true);
  h.Steps(4, 1, 0.10);  // measured: still dropping
  h.Steps(4, 1, 0.10);
  CHECK(h.Tick().empty());  // cooldown: rejected, recorded
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 2);
  CHECK(rows[1].verdict == "rejected");
  CHECK(rows[1].status == "rejected");
  CHECK(rows[1].verdict_reason.find("cooldown") != std::string::npos);
  CHECK_FALSE(rows[1].epoch.has_value());
}

TEST_CASE("Stale telemetry freezes changes", "[controller]") {
  Harness h;
  h.Steps(8, 0, 0.10);
  h.clock().Advance(10'000 * kMs);
  CHECK(h.Tick().empty());
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].verdict == "rejected");
  CHECK(rows[0].verdict_reason.find("stale") != std::string::npos);
}

TEST_CASE("A refused command and a missing ack are recorded as failed", "[controller]") {
  Harness h;
  h.Steps(8, 0, 0.10);
  auto first = h.Tick();
  REQUIRE(first.size() == 1);
  h.Ack(first[0], false, "capacity_factor out of range for this engine");

  h.clock().Advance(1000 * kMs);
  h.Steps(8, 0, 0.10);
  auto second = h.Tick();
  REQUIRE(second.size() == 1);
  CHECK(second[0].epoch == 2);    // epochs never repeat
  h.clock().Advance(2000 * kMs);  // past ack_timeout, no ack
  REQUIRE(h.controller().Poll(milliseconds(0)).ok());
  CHECK(h.controller().stats().failed_commands == 2);

  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() >= 2);  // the pipeline may already have decided again
  CHECK(rows[0].status == "failed");
  CHECK(rows[0].ack_error == "capacity_factor out of range for this engine");
  CHECK(rows[1].status == "failed");
  CHECK(rows[1].ack_error.find("no ack within") != std::string::npos);
}

TEST_CASE("A late ack after the timeout still counts: the engine did apply it", "[controller]") {
  Harness h;
  h.Steps(8, 0, 0.10);
  auto sent = h.Tick();
  REQUIRE(sent.size() == 1);
  h.clock().Advance(2000 * kMs);  // past ack_timeout
  REQUIRE(h.controller().Poll(milliseconds(0)).ok());
  CHECK(h.controller().stats().failed_commands == 1);
  h.Ack(sent[0], true);
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE_FALSE(rows.empty());
  CHECK(rows[0].status == "acked");
  CHECK(rows[0].ack_error.empty());
}

TEST_CASE("A joint decision is sent as one command and rolled back as a whole",
          "[controller][joint]") {
  Harness h([](ControllerOptions& o) {
    o.policy_order = {"capacity", "bias"};
    o.joint_changes = true;
    o.bias_enabled = true;  // the harness's loads are skewed: bias has a proposal too
    o.capacity.target_high = 0.02;
    o.reward.drop_weight = 10;
  });
  h.Steps(8, 0, 0.05);
  auto first = h.Tick();
  REQUIRE(first.size() == 1);
  const telemetry::Command& joint = first[0];
  REQUIRE(joint.knobs.capacity_factor.has_value());
  CHECK(*joint.knobs.capacity_factor > 1.0);
  auto has_bias = [](const telemetry::Command& c, bool nonzero) {
    bool any = c.knobs.expert_bias.has_value();
    for (const telemetry::LayerKnobs& lk : c.layer_knobs) {
      if (!lk.knobs.expert_bias) continue;
      any = true;
      const bool zero = std::all_of(lk.knobs.expert_bias->begin(), lk.knobs.expert_bias->end(),
                                    [](float b) { return b == 0.0f; });
      if (nonzero == zero) return false;
    }
    return any;
  };
  CHECK(has_bias(joint, /*nonzero=*/true));
  CHECK(joint.reason.find("with bias: expert_bias") != std::string::npos);
  h.Ack(joint, true);
  h.Steps(4, joint.epoch, 0.40);  // much worse under the joint epoch
  auto rollback = h.Tick();
  REQUIRE(rollback.size() == 1);  // one command undoes both knobs
  REQUIRE(rollback[0].knobs.capacity_factor.has_value());
  CHECK(*rollback[0].knobs.capacity_factor == Approx(1.0));
  CHECK(has_bias(rollback[0], /*nonzero=*/false));  // every bias back to zero
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 2);  // one row per decision, the companion under "with"
  CHECK(rows[0].proposal_json.find("\"with\"") != std::string::npos);
  CHECK(rows[0].command_json.find("expert_bias") != std::string::npos);
  CHECK(rows[1].policy == "guard-rollback");
  CHECK(rows[1].proposal_json.find("restoring expert_bias") != std::string::npos);
}

TEST_CASE("A change that lowers the reward is rolled back", "[controller]") {
  Harness h([](ControllerOptions& o) {
    o.capacity.target_high = 0.02;
    o.reward.drop_weight = 10;
  });
  h.Steps(8, 0, 0.05);
  auto first = h.Tick();
  REQUIRE(first.size() == 1);
  h.Ack(first[0], true);
  h.Steps(4, 1, 0.40);  // much worse under the new epoch
  auto rollback = h.Tick();
  REQUIRE(rollback.size() == 1);  // sent right after the measurement
  CHECK(rollback[0].epoch == 2);
  REQUIRE(rollback[0].knobs.capacity_factor.has_value());
  CHECK(*rollback[0].knobs.capacity_factor == Approx(1.0));
  CHECK(h.controller().stats().rollbacks == 1);
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 2);
  CHECK(rows[1].policy == "guard-rollback");
  CHECK(rows[1].proposal_json.find("lowered the reward") != std::string::npos);
}

TEST_CASE(
    "A capacity change is kept when its steps' own demand says the workload lowered the "
    "reward",
    "[controller][same-tokens]") {
  Harness h(
      [](ControllerOptions& o) {
        o.capacity.target_high = 0.02;
        o.reward.drop_weight = 10;
      },
      [](telemetry::Hello& hello) {
        hello.num_devices = 2;
        hello.num_replicas = 4;
      });
  // Per-device times that grow with the rows, so the controller fits its cost
  // model; the demand is the engine's, before capacity.
  int n = 0;
  auto with_demand = [&n](std::vector<uint32_t> demand) {
    return [&n, demand](telemetry::LayerRecord& l) {
      l.expert_demand = demand;
      const uint32_t a = 200 + 37 * (n % 7), b = 600 - 37 * (n % 7);
      ++n;
      l.device_tokens = {a, b};
      l.timing.device_expert_us = {20 + 0.5 * a, 20 + 0.5 * b};
    };
  };
  h.Steps(8, 0, 0.05, with_demand({400, 300, 200, 100}));
  auto first = h.Tick();
  REQUIRE(first.size() == 1);
  REQUIRE(first[0].knobs.capacity_factor.has_value());
  const double raised = *first[0].knobs.capacity_factor;
  REQUIRE(raised > 1.0);
  h.Ack(first[0], true);
  // The workload turns much more skewed right after the change: the measured
  // reward falls, but on these same steps capacity_factor 1 would have
  // dropped more.
  h.Steps(4, first[0].epoch, 0.40, with_demand({700, 200, 50, 50}));
  auto after = h.Tick();
  CHECK(h.controller().stats().rollbacks == 0);
  for (const telemetry::Command& c : after) {
    if (c.knobs.capacity_factor) CHECK(*c.knobs.capacity_factor != Approx(1.0));
  }
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE_FALSE(rows.empty());
  INFO(rows[0].outcome_json);
  CHECK(rows[0].outcome_json.find("\"kept\"") != std::string::npos);
  CHECK(rows[0].outcome_json.find("the workload moved") != std::string::npos);
  CHECK(rows[0].outcome_json.find("same_tokens") != std::string::npos);
  for (const storage::DecisionRow& r : rows)
    CHECK(r.policy != "guard-rollback");
}

TEST_CASE("Expert bias: per-layer vectors sent, applied, audited and rolled back",
          "[controller][bias]") {
  // Layer 1 already carries a bias (per-layer knobs in the Hello).
  Harness h(
      [](ControllerOptions& o) {
        o.capacity_enabled = false;
        o.bias_enabled = true;
        o.reward.drop_weight = 10;
      },
      [](telemetry::Hello& hello) {
        telemetry::KnobSet layer1;
        layer1.expert_bias = std::vector<float>{0.01f, 0.0f, 0.0f, 0.0f};
        hello.layer_knobs.push_back({1, layer1});
      });
  // Loads 400, 300, 200, 100 per expert: mean 250, max over mean 1.6.
  h.Steps(8, 0, 0.01);
  auto first = h.Tick();
  REQUIRE(first.size() == 1);
  const telemetry::Command& command = first[0];
  CHECK_FALSE(command.knobs.expert_bias.has_value());  // per layer only
  REQUIRE(command.layer_knobs.size() == 2);
  const PolicyParamsCheck check{h.options().bias, h.options().guard.expert_bias};
  for (const telemetry::LayerKnobs& lk : command.layer_knobs) {
    INFO("layer " << lk.layer);
    REQUIRE(lk.knobs.expert_bias.has_value());
    const std::vector<float>& bias = *lk.knobs.expert_bias;
    REQUIRE(bias.size() == 4);
    const float base = lk.layer == 1 ? 0.01f : 0.0f;
    CHECK(bias[0] < base);  // the hottest expert is steered away from
    CHECK(bias[3] > 0.0f);  // the coldest one towards
    CHECK(std::abs(bias[0] - base) <= check.largest_step + 1e-7);
  }
  h.Ack(command, true);
  // Worse under the new epoch: the bias of both layers is restored.
  h.Steps(4, 1, 0.40);
  auto rollback = h.Tick();
  REQUIRE(rollback.size() == 1);
  REQUIRE(rollback[0].layer_knobs.size() == 2);
  for (const telemetry::LayerKnobs& lk : rollback[0].layer_knobs) {
    REQUIRE(lk.knobs.expert_bias.has_value());
    const std::vector<float> before =
        lk.layer == 1 ? std::vector<float>{0.01f, 0, 0, 0} : std::vector<float>{0, 0, 0, 0};
    CHECK(*lk.knobs.expert_bias == before);
  }
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].policy == "bias");
  CHECK(rows[0].knob == "expert_bias");
  // The audit names each changed element with its value before and after.
  CHECK(rows[0].proposal_json.find("\"changes\"") != std::string::npos);
  CHECK(rows[0].command_json.find("\"expert_bias\"") != std::string::npos);
  CHECK(rows[1].policy == "guard-rollback");
}

// The replication policy alone, on 2 devices x 3 slots for 4 experts.
void ReplicationOnly(ControllerOptions& o) {
  o.capacity_enabled = false;
  o.replication_enabled = true;
  o.reward.drop_weight = 10;
}
void TwoDevicesSixSlots(telemetry::Hello& hello) {
  hello.num_devices = 2;
  hello.num_replicas = 6;
}

TEST_CASE("Replication: a new placement per layer, sent, applied and rolled back",
          "[controller][replication]") {
  // 2 devices x 3 slots for 4 experts: 2 spare slots (default: experts 0, 1).
  Harness h(ReplicationOnly, TwoDevicesSixSlots);
  // Loads 400, 300, 200, 100: the default placement puts experts 0, 1, 2 on
  // device 0 (with half of 0's and 1's load) and 3, 0, 1 on device 1.
  h.Steps(8, 0, 0.01);
  auto first = h.Tick();
  REQUIRE(first.size() == 1);
  REQUIRE(first[0].layer_knobs.size() == 2);
  const std::vector<uint32_t> before = {0, 1, 2, 3, 0, 1};
  for (const telemetry::LayerKnobs& lk : first[0].layer_knobs) {
    REQUIRE(lk.knobs.phy2log.has_value());
    const std::vector<uint32_t>& p2l = *lk.knobs.phy2log;
    REQUIRE(p2l.size() == 6);
    for (uint32_t e = 0; e < 4; ++e)
      CHECK(std::count(p2l.begin(), p2l.end(), e) >= 1);  // every expert keeps a replica
    CHECK(p2l != before);
  }
  h.Ack(first[0], true);
  h.Steps(4, 1, 0.40);  // worse: the placement is restored
  auto rollback = h.Tick();
  REQUIRE(rollback.size() == 1);
  REQUIRE(rollback[0].layer_knobs.size() == 2);
  for (const telemetry::LayerKnobs& lk : rollback[0].layer_knobs) {
    REQUIRE(lk.knobs.phy2log.has_value());
    CHECK(*lk.knobs.phy2log == before);
  }
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].policy == "replication");
  CHECK(rows[0].knob == "phy2log");
  CHECK(rows[0].proposal_json.find("\"changes\"") != std::string::npos);
  CHECK(rows[0].command_json.find("\"phy2log\"") != std::string::npos);
  CHECK(rows[1].policy == "guard-rollback");
}

TEST_CASE("A placement is kept when the previous one would have done no better on its steps",
          "[controller][replication][same-tokens]") {
  Harness h(ReplicationOnly, TwoDevicesSixSlots);
  // The same skewed demand throughout, and per-device times that fit a cost
  // model; after the move the engine reports many drops (something else
  // went wrong), which the new placement did not cause.
  int n = 0;
  auto calibrated = [&n](telemetry::LayerRecord& l) {
    l.expert_demand = {400, 300, 200, 100};
    const uint32_t a = 300 + 41 * (n % 5), b = 700 - 41 * (n % 5);
    ++n;
    l.device_tokens = {a, b};
    l.timing.device_expert_us = {15 + 0.4 * a, 15 + 0.4 * b};
  };
  h.Steps(8, 0, 0.01, calibrated);
  auto first = h.Tick();
  REQUIRE(first.size() == 1);
  REQUIRE(first[0].layer_knobs.size() == 2);
  h.Ack(first[0], true);
  h.Steps(4, first[0].epoch, 0.40, calibrated);
  auto after = h.Tick();
  CHECK(after.empty());
  CHECK(h.controller().stats().rollbacks == 0);
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 1);
  INFO(rows[0].outcome_json);
  CHECK(rows[0].outcome_json.find("previous placement would have scored") != std::string::npos);
}

TEST_CASE("Learning explores each value of its knob, then keeps the best; a restart remembers",
          "[controller][learning]") {
  // The first controller's database outlives it here.
  moe::testing::TempDir keep;
  const std::string copy = keep.File("moectl.db");
  {
    Harness h(LearningOnly);
    h.Steps(8, 0, 0.10);  // cf 1.0: many drops
    auto explore = h.Tick();
    REQUIRE(explore.size() == 1);
    REQUIRE(explore[0].knobs.capacity_factor.has_value());
    CHECK(*explore[0].knobs.capacity_factor == Approx(1.5));  // nearest unexplored
    h.Ack(explore[0], true);
    h.Steps(8, 1, 0.01);  // cf 1.5: few drops
    auto next = h.Tick();
    REQUIRE(next.size() == 1);
    CHECK(*next[0].knobs.capacity_factor == Approx(2.0));  // the last unexplored
    h.Ack(next[0], true);
    h.Steps(8, 2, 0.05);  // cf 2.0: worse than 1.5
    auto exploit = h.Tick();
    REQUIRE(exploit.size() == 1);
    CHECK(*exploit[0].knobs.capacity_factor == Approx(1.5));  // the best measured
    h.Ack(exploit[0], true);
    h.Steps(8, 3, 0.01);
    CHECK(h.Tick().empty());  // at the best: nothing to do
    std::vector<storage::DecisionRow> rows = h.Decisions();
    REQUIRE(rows.size() == 3);
    CHECK(rows[0].policy == "learning");
    CHECK(rows[0].proposal_json.find("explore") != std::string::npos);
    CHECK(rows[2].proposal_json.find("exploit") != std::string::npos);
    CHECK(rows[0].inputs_json.find("\"regime\"") != std::string::npos);
    // Decisions() closed the store; copy the database with any WAL beside it.
    h.CopyDatabaseTo(copy);
  }
  // A new controller on that database: the measured decisions teach it, so an
  // engine at cf 1.0 in the same regime goes straight to 1.5.
  Harness again([&](ControllerOptions& o) {
    LearningOnly(o);
    o.db_path = copy;
  });
  again.Steps(8, 0, 0.10);
  auto first = again.Tick();
  REQUIRE(first.size() == 1);
  CHECK(*first[0].knobs.capacity_factor == Approx(1.5));
  std::vector<storage::DecisionRow> rows = again.Decisions();
  REQUIRE_FALSE(rows.empty());
  CHECK(rows.back().proposal_json.find("exploit") != std::string::npos);
}

TEST_CASE("Policies are asked in order; the first the guard lets through is sent",
          "[controller][bias]") {
  Harness h([](ControllerOptions& o) {
    o.bias_enabled = true;
    o.policy_order = {"bias", "capacity"};
  });
  h.Steps(8, 0, 0.10);  // both want a change
  auto first = h.Tick();
  REQUIRE(first.size() == 1);
  CHECK(first[0].layer_knobs.size() == 2);  // the bias went first
  CHECK_FALSE(first[0].knobs.capacity_factor.has_value());
  h.Ack(first[0], true);
  h.Steps(8, 1, 0.10);
  // The bias is in its cooldown (500 ms): rejected and recorded; capacity,
  // next in order, goes.
  auto second = h.Tick();
  REQUIRE(second.size() == 1);
  CHECK(second[0].knobs.capacity_factor.has_value());
  std::vector<storage::DecisionRow> rows = h.Decisions();
  REQUIRE(rows.size() == 3);
  CHECK(rows[0].policy == "bias");
  CHECK(rows[1].policy == "bias");
  CHECK(rows[1].verdict == "rejected");
  CHECK(rows[1].verdict_reason.find("cooldown") != std::string::npos);
  CHECK(rows[2].policy == "capacity");
  CHECK(rows[2].status == "sent");
}

TEST_CASE("Reload takes new policy settings but refuses endpoint changes", "[controller]") {
  Harness h;
  ControllerOptions next = h.options();
  next.cadence_ms = 250;
  CHECK(h.controller().Reload(next).ok());
  next.db_path = "/elsewhere.db";
  Status refused = h.controller().Reload(next);
  CHECK(refused.code() == StatusCode::kFailedPrecondition);
  CHECK(refused.message().find("db_path") != std::string::npos);
  next = h.options();
  next.capacity.target_low = 0.5;  // above target_high
  CHECK(h.controller().Reload(next).code() == StatusCode::kInvalidArgument);
}

// Lockstep (the closed-loop benchmark's mode): the engine sends a step that
// awaits the controller and waits for its Sync. Returns the first step after
// which a command had arrived (0: none in 40 steps), the wall clock moving
// `wall_per_step_ns` per step; every Sync must come, after what it covers.
uint64_t FirstCommandInLockstep(int64_t step_clock_ms, int64_t wall_per_step_ns) {
  Harness h([&](ControllerOptions& o) { o.step_clock_ms = step_clock_ms; });
  for (int i = 0; i < 40; ++i) {
    h.clock().Advance(wall_per_step_ns);
    telemetry::StepRecord r = h.NextStep(0, 0.10);
    r.await_sync = true;
    REQUIRE(h.engine().Publish(r).ok());
    std::vector<telemetry::Command> got;
    for (int tries = 0; tries < 1000; ++tries) {
      REQUIRE(h.controller().Poll(milliseconds(5)).ok());
      auto polled = h.engine().PollCommands();
      REQUIRE(polled.ok());
      got.insert(got.end(), polled->begin(), polled->end());
      const auto synced = h.engine().synced_step();
      if (synced && *synced >= r.step) break;
    }
    REQUIRE(h.engine().synced_step() == r.step);
    if (!got.empty()) {
      // Decided on this step, so sent before its Sync.
      CHECK(*got[0].knobs.capacity_factor > 1.0);
      CHECK(h.controller().stats().syncs_failed == 0);
      return r.step;
    }
  }
  return 0;
}

TEST_CASE("On a step clock decisions land at the same step however fast the wall moves",
          "[controller]") {
  // cadence 100 ms on a 10 ms step clock: the pipeline runs every 10 steps.
  const uint64_t fast = FirstCommandInLockstep(10, 1 * kMs);
  const uint64_t slow = FirstCommandInLockstep(10, 3000 * kMs);
  CHECK(fast >= 4);  // the capacity policy's and the guard's min_steps
  CHECK(fast <= 12);
  CHECK(fast == slow);
  // On the wall clock the same steps are decided on by wall time: 1 ms apart
  // the cadence has not come after 40 steps; 3 s apart it comes at once.
  CHECK(FirstCommandInLockstep(0, 1 * kMs) == 0);
  CHECK(FirstCommandInLockstep(0, 3000 * kMs) < fast);
}

TEST_CASE("A Sync waits for the engine's route, for up to ack_timeout", "[controller]") {
  Harness h([](ControllerOptions& o) { o.step_clock_ms = 10; });
  // An engine whose command channel is not up yet (it points nowhere): its
  // step that awaits the controller cannot be answered at once.
  const auto connect = [&](const std::string& id, const std::string& commands) {
    telemetry::EngineLinkOptions o;
    o.engine_id = id;
    o.telemetry_endpoint = h.controller().telemetry_endpoint();
    o.command_endpoint = commands;
    telemetry::Hello hello = h.hello();
    hello.engine_id = id;
    auto link = telemetry::EngineLink::Connect(o, hello);
    REQUIRE(link.ok());
    return std::move(*link);
  };
  const auto publish = [&](telemetry::EngineLink& link, const std::string& id) {
    telemetry::StepRecord r = h.NextStep(0, 0.0);
    r.engine_id = id;
    r.await_sync = true;
    REQUIRE(link.Publish(r).ok());
    return r.step;
  };
  auto early = connect("late", "tcp://127.0.0.1:1");
  const uint64_t step = publish(*early, "late");
  const uint64_t steps = h.controller().stats().steps;
  h.PollUntil([&] { return h.controller().stats().steps > steps; });
  for (int i = 0; i < 5; ++i)
    REQUIRE(h.controller().Poll(milliseconds(5)).ok());
  CHECK(h.controller().stats().syncs_failed == 0);  // still trying
  // Its command channel comes up (here: as a second connection of the id):
  // the Sync goes there.
  auto up = connect("late", h.controller().command_endpoint());
  for (int i = 0; i < 1000 && up->synced_step() != step; ++i) {
    REQUIRE(h.controller().Poll(milliseconds(5)).ok());
    REQUIRE(up->PollCommands().ok());
  }
  CHECK(up->synced_step() == step);
  CHECK(h.controller().stats().syncs_failed == 0);

  // One that never comes up: given up after ack_timeout, counted once.
  auto never = connect("never", "tcp://127.0.0.1:1");
  const uint64_t before = h.controller().stats().steps;
  publish(*never, "never");
  h.PollUntil([&] { return h.controller().stats().steps > before; });
  REQUIRE(h.controller().Poll(milliseconds(0)).ok());
  CHECK(h.controller().stats().syncs_failed == 0);
  h.clock().Advance((h.options().ack_timeout_ms + 1) * kMs);
  REQUIRE(h.controller().Poll(milliseconds(0)).ok());
  REQUIRE(h.controller().Poll(milliseconds(0)).ok());
  CHECK(h.controller().stats().syncs_failed == 1);
}

TEST_CASE("A step clock stands still between steps and cannot change on reload", "[controller]") {
  Harness h([](ControllerOptions& o) { o.step_clock_ms = 10; });
  // Five dropping steps (50 ms on the step clock), then an hour of wall time
  // without a step: the 100 ms cadence does not pass, nothing is sent (on
  // the wall clock the capacity policy would raise capacity now).
  h.Steps(5, 0, 0.10);
  h.clock().Advance(3'600'000 * kMs);
  REQUIRE(h.controller().Poll(milliseconds(0)).ok());
  CHECK(h.Received().empty());
  ControllerOptions next = h.options();
  next.step_clock_ms = 0;
  Status refused = h.controller().Reload(next);
  CHECK(refused.code() == StatusCode::kFailedPrecondition);
  CHECK(refused.message().find("step_clock") != std::string::npos);
  ControllerOptions bad;
  bad.step_clock_ms = -1;
  CHECK(Validate(bad).message().find("step_clock_ms") != std::string::npos);
}

TEST_CASE("Options are validated with the field named", "[controller]") {
  ControllerOptions o;
  o.command_endpoint = o.telemetry_endpoint;
  CHECK(Validate(o).message().find("command_endpoint") != std::string::npos);
  o = ControllerOptions();
  o.window_steps = 2;
  CHECK(Validate(o).message().find("window_steps") != std::string::npos);
  o = ControllerOptions();
  o.policy_order = {"capacity", "telepathy"};
  CHECK(Validate(o).message().find("unknown policy 'telepathy'") != std::string::npos);
  o.policy_order = {"bias", "bias"};
  CHECK(Validate(o).message().find("listed twice") != std::string::npos);
  o = ControllerOptions();
  o.eplb_enabled = true;
  o.window_steps = 32;
  o.eplb.period_steps = 40;  // the window never holds 40 steps of one placement
  CHECK(Validate(o).message().find("eplb.period_steps") != std::string::npos);
  CHECK(Validate(o).message().find("window_steps (32)") != std::string::npos);
  o.eplb.period_steps = 32;
  CHECK(Validate(o).ok());
}

}  // namespace
}  // namespace moe::controller
