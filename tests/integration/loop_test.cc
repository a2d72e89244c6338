// The whole loop with real processes: moe-engine and moectld talk over ZeroMQ
// on loopback; the controller writes a real SQLite file; the test reads it back
// through the same read-only Reader the CLI uses.

#include <signal.h>

#include <fmt/format.h>
#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "moe/storage/reader.h"
#include "moe/telemetry/transport.h"
#include "support/daemon_config.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace moe {
namespace {

using moe::testing::Subprocess;
using moe::testing::TempDir;
using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;
using std::chrono::seconds;

constexpr int kExitConfig = 78;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A controller config tuned to decide quickly on a short run.
std::string ControllerToml(const std::string& db, const std::string& telemetry,
                           const std::string& commands) {
  moe::testing::DaemonConfig c;
  c.db = db;
  c.telemetry = telemetry;
  c.commands = commands;
  c.log_level = "debug";
  c.tables = R"(
[policies.learning]
min_steps = 4
)";
  return moe::testing::DaemonToml(c);
}

struct Endpoints {
  std::string telemetry = moe::testing::FreeLoopbackEndpoint();
  std::string commands = moe::testing::FreeLoopbackEndpoint();
};

std::vector<std::string> EngineArgs(const Endpoints& ep, const std::string& engine_id, int steps) {
  return {MOE_ENGINE_BIN,
          "--config",
          std::string(MOE_SOURCE_DIR) + "/configs/engine.toml",
          "--scenario",
          std::string(MOE_SOURCE_DIR) + "/configs/scenarios/shift.toml",
          "--engine-id",
          engine_id,
          "--telemetry",
          ep.telemetry,
          "--commands",
          ep.commands,
          "--steps",
          std::to_string(steps),
          "--step-interval-ms",
          "15",
          "--log-level",
          "info"};
}

// Starts moectld with a NOTIFY_SOCKET of the test's own and waits for READY=1.
std::unique_ptr<Subprocess> StartDaemon(const TempDir& dir, const std::string& config,
                                        moe::testing::NotifySocket* notify) {
  auto daemon = std::make_unique<Subprocess>(
      std::vector<std::string>{MOECTLD_BIN, "--config", config}, dir.File("moectld.log"),
      std::vector<std::string>{"NOTIFY_SOCKET=" + notify->path()});
  bool ready = notify->WaitFor("READY=1", seconds(15));
  INFO(daemon->Log());
  REQUIRE(ready);
  return daemon;
}

void StopDaemon(Subprocess* daemon) {
  REQUIRE(daemon->Signal(SIGTERM));
  std::optional<int> status = daemon->Wait(seconds(15));
  INFO(daemon->Log());
  REQUIRE(status.has_value());
  CHECK(*status == 0);
}

// One daemon run's files: a temporary directory, free loopback endpoints, the
// database path, the controller config, and the test's own NOTIFY_SOCKET.
struct DaemonRun {
  TempDir dir;
  Endpoints ep;
  std::string db = dir.File("moectl.db");
  std::string base_toml = ControllerToml(db, ep.telemetry, ep.commands);
  std::string config = dir.File("controller.toml");
  moe::testing::NotifySocket notify{dir.File("notify.sock")};

  // Writes the config (base plus `extra` TOML) and starts moectld on it.
  std::unique_ptr<Subprocess> Start(const std::string& extra = "") {
    dir.Write("controller.toml", base_toml + extra);
    return StartDaemon(dir, config, &notify);
  }
};

TEST_CASE("Engine and controller close the loop over loopback", "[integration]") {
  DaemonRun run;
  auto daemon = run.Start();

  Subprocess engine(EngineArgs(run.ep, "itest-engine", 400), run.dir.File("engine.log"));
  std::optional<int> engine_status = engine.Wait(seconds(90));
  INFO("engine log:\n" << engine.Log());
  INFO("daemon log:\n" << daemon->Log());
  REQUIRE(engine_status.has_value());
  REQUIRE(*engine_status == 0);
  StopDaemon(daemon.get());

  auto reader = storage::Reader::Open(run.db);
  REQUIRE(reader.ok());
  storage::HistoryQuery hq;
  hq.engine_id = "itest-engine";
  hq.limit = 100000;
  auto history = (*reader)->History(hq);
  REQUIRE(history.ok());
  REQUIRE_FALSE(history->empty());  // telemetry is stored

  storage::DecisionQuery dq;
  dq.engine_id = "itest-engine";
  auto decisions = (*reader)->Decisions(dq);
  REQUIRE(decisions.ok());
  const storage::DecisionRow* applied = nullptr;
  for (const storage::DecisionRow& d : *decisions) {
    if (d.knob == "capacity_factor" && d.acked_ns && d.ack_error.empty() && d.epoch) {
      applied = &d;
      break;
    }
  }
  REQUIRE(applied != nullptr);  // a decision changed capacity_factor and was acked
  CHECK(applied->applied_at_step.has_value());
  CHECK((applied->status == "acked" || applied->status == "measured"));
  uint64_t later_epoch_rows = 0;
  for (const storage::StepRow& row : *history) {
    if (row.epoch >= *applied->epoch) ++later_epoch_rows;
  }
  CHECK(later_epoch_rows > 0);  // later telemetry carries the new epoch

  // The operator's view of the same run, through the CLI.
  Subprocess decisions_cli({MOECTL_BIN, "decisions", "--db", run.db, "--format", "json"},
                           run.dir.File("decisions.json"));
  REQUIRE(decisions_cli.Wait(seconds(30)) == std::optional<int>(0));
  std::string decisions_json = decisions_cli.Log();
  INFO(decisions_json.substr(0, 2000));
  CHECK(decisions_json.find("\"acked_epoch\": " + std::to_string(*applied->epoch)) !=
        std::string::npos);
  CHECK(decisions_json.find("\"outcome\": {") != std::string::npos);
  Subprocess history_cli({MOECTL_BIN, "history", "--db", run.db, "--format", "csv", "--layer", "0"},
                         run.dir.File("history.csv"));
  REQUIRE(history_cli.Wait(seconds(30)) == std::optional<int>(0));
  std::string csv = history_cli.Log();
  CHECK(csv.rfind("time,engine,step,epoch,layer,", 0) == 0);
  CHECK(std::count(csv.begin(), csv.end(), '\n') > 10);
  Subprocess plot_cli({MOECTL_BIN, "history", "--db", run.db, "--plot", "drop_rate"},
                      run.dir.File("plot.txt"));
  REQUIRE(plot_cli.Wait(seconds(30)) == std::optional<int>(0));
  CHECK(plot_cli.Log().find("new epoch") != std::string::npos);
  // The learner took every mature epoch, also with the learning policy off.
  Subprocess learning_cli({MOECTL_BIN, "learning", "--db", run.db, "--format", "csv"},
                          run.dir.File("learning.csv"));
  REQUIRE(learning_cli.Wait(seconds(30)) == std::optional<int>(0));
  const std::string learnt = learning_cli.Log();
  INFO(learnt);
  CHECK(learnt.rfind("engine,knob,regime,value,samples,mean_reward,last_epoch,best", 0) == 0);
  CHECK(learnt.find(",capacity_factor,\"imbalance ") != std::string::npos);
  CHECK(learnt.find(",*") != std::string::npos);

  bool measured = false;
  for (const storage::DecisionRow& d : *decisions) {
    if (d.status == "measured") {
      measured = true;
      CHECK(d.reward_after.has_value());
      CHECK(d.outcome_json.find("\"after\"") != std::string::npos);
    }
  }
  CHECK(measured);
}

TEST_CASE("Malformed telemetry is counted and the daemon keeps storing", "[integration]") {
  DaemonRun run;
  auto daemon = run.Start();

  {
    zmq::context_t context;
    zmq::socket_t push(context, zmq::socket_type::push);
    push.set(zmq::sockopt::linger, 1000);
    push.connect(run.ep.telemetry);
    const std::string garbage[] = {"", "not protobuf at all", std::string(64, '\xff'),
                                   std::string("\x0a\x05hello", 7)};
    for (const std::string& bytes : garbage) {
      push.send(zmq::buffer(bytes), zmq::send_flags::none);
    }
  }
  Subprocess engine(EngineArgs(run.ep, "after-garbage", 60), run.dir.File("engine.log"));
  std::optional<int> engine_status = engine.Wait(seconds(60));
  INFO("engine log:\n" << engine.Log());
  REQUIRE(engine_status == std::optional<int>(0));
  // systemd's view (`systemctl status`) reports the malformed messages too.
  std::optional<std::string> status;
  for (int i = 0; i < 3 && !(status && status->find(", 0 malformed") == std::string::npos); ++i) {
    status = run.notify.WaitForPrefix("STATUS=", seconds(7));
  }
  REQUIRE(status.has_value());
  INFO(*status);
  CHECK(status->find(" malformed") != std::string::npos);
  CHECK(status->find(", 0 malformed") == std::string::npos);
  CHECK(status->find(", db refused 0, db lost 0") != std::string::npos);
  CHECK(daemon->running());
  StopDaemon(daemon.get());
  CHECK(daemon->Log().find("malformed") != std::string::npos);

  auto reader = storage::Reader::Open(run.db);
  REQUIRE(reader.ok());
  storage::HistoryQuery hq;
  hq.engine_id = "after-garbage";
  auto history = (*reader)->History(hq);
  REQUIRE(history.ok());
  CHECK_FALSE(history->empty());
}

TEST_CASE("The engine keeps serving while the controller restarts; nothing stored is lost",
          "[integration]") {
  DaemonRun run;
  auto daemon = run.Start();
  Subprocess engine(EngineArgs(run.ep, "steady-engine", 700), run.dir.File("engine.log"));

  auto stored_steps = [&] {
    auto reader = storage::Reader::Open(run.db);
    REQUIRE(reader.ok());
    storage::HistoryQuery q;
    q.engine_id = "steady-engine";
    q.layer = 0;
    q.limit = 0;
    auto rows = (*reader)->History(q);
    REQUIRE(rows.ok());
    return rows->size();
  };
  auto decisions = [&] {
    auto reader = storage::Reader::Open(run.db);
    REQUIRE(reader.ok());
    auto rows = (*reader)->Decisions({});
    REQUIRE(rows.ok());
    return *rows;
  };

  // Until the first run has stored some steps (a loaded machine starts slowly).
  const auto deadline = SteadyClock::now() + seconds(30);
  while (stored_steps() < 20 && SteadyClock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(200));
  StopDaemon(daemon.get());
  size_t steps_first_run = stored_steps();
  std::vector<storage::DecisionRow> first_decisions = decisions();
  REQUIRE(steps_first_run > 0);

  std::this_thread::sleep_for(seconds(1));  // the engine serves with no controller
  CHECK(engine.running());
  daemon = StartDaemon(run.dir, run.config, &run.notify);
  std::optional<int> engine_status = engine.Wait(seconds(90));
  INFO("engine log:\n" << engine.Log());
  REQUIRE(engine_status == std::optional<int>(0));
  StopDaemon(daemon.get());

  CHECK(stored_steps() > steps_first_run);  // the second run stored more
  std::vector<storage::DecisionRow> all_decisions = decisions();
  REQUIRE(all_decisions.size() >= first_decisions.size());
  for (size_t i = 0; i < first_decisions.size(); ++i) {
    CHECK(all_decisions[i].id == first_decisions[i].id);  // committed decisions stay
  }
  std::set<int64_t> ids;
  for (const storage::DecisionRow& d : all_decisions)
    ids.insert(d.id);
  CHECK(ids.size() == all_decisions.size());  // ids continue, never reused
  // The restarted controller learnt the settings in force from the engine's
  // re-sent Hello: its first proposal starts from a value the first run
  // commanded (an ack may have been lost with the first daemon, so any of them).
  auto value_of = [](const std::string& json, const std::string& key) {
    size_t at = json.find("\"" + key + "\":");
    return at == std::string::npos ? -1.0 : std::stod(json.substr(at + key.size() + 3));
  };
  // (Capacity decisions; the per-layer bias a Hello carries is checked in
  // tests/controller.)
  std::set<double> commanded;
  for (const storage::DecisionRow& d : first_decisions) {
    if (d.epoch && d.knob == "capacity_factor") {
      commanded.insert(value_of(d.command_json, "capacity_factor"));
    }
  }
  REQUIRE_FALSE(commanded.empty());
  auto after =
      std::find_if(all_decisions.begin() + static_cast<std::ptrdiff_t>(first_decisions.size()),
                   all_decisions.end(),
                   [](const storage::DecisionRow& d) { return d.knob == "capacity_factor"; });
  REQUIRE(after != all_decisions.end());
  INFO(after->proposal_json);
  CHECK(commanded.count(value_of(after->proposal_json, "current")) == 1);
}

TEST_CASE("With CURVE only allow-listed engines get through", "[integration]") {
  auto controller_keys = telemetry::GenerateCurveKeys();
  auto good_keys = telemetry::GenerateCurveKeys();
  auto bad_keys = telemetry::GenerateCurveKeys();
  REQUIRE(controller_keys.ok());
  REQUIRE(good_keys.ok());
  REQUIRE(bad_keys.ok());
  DaemonRun run;
  std::string engine_toml = ReadFile(std::string(MOE_SOURCE_DIR) + "/configs/engine.toml");
  auto engine_config = [&](const std::string& name, const telemetry::CurveKeys& keys) {
    return run.dir.Write(
        name,
        engine_toml + fmt::format("\n[telemetry.curve]\npublic_key = \"{}\"\n"
                                  "secret_key = \"{}\"\n"
                                  "controller_public_key = \"{}\"\n",
                                  keys.public_key, keys.secret_key, controller_keys->public_key));
  };
  auto daemon = run.Start(
      fmt::format("\n[transport.curve]\npublic_key = \"{}\"\nsecret_key = "
                  "\"{}\"\n[transport.curve.engines]\ntrusted = \"{}\"\n",
                  controller_keys->public_key, controller_keys->secret_key, good_keys->public_key));

  std::vector<std::string> good_args = EngineArgs(run.ep, "trusted", 80);
  good_args[2] = engine_config("good.toml", *good_keys);
  std::vector<std::string> bad_args = EngineArgs(run.ep, "intruder", 80);
  bad_args[2] = engine_config("bad.toml", *bad_keys);
  Subprocess good(good_args, run.dir.File("good.log"));
  Subprocess bad(bad_args, run.dir.File("bad.log"));
  INFO("trusted engine log:\n" << good.Log());
  REQUIRE(good.Wait(seconds(60)) == std::optional<int>(0));
  REQUIRE(bad.Wait(seconds(60)) == std::optional<int>(0));  // serves on, unheard
  StopDaemon(daemon.get());

  auto reader = storage::Reader::Open(run.db);
  REQUIRE(reader.ok());
  auto engines = (*reader)->Engines();
  REQUIRE(engines.ok());
  std::set<std::string> seen;
  for (const storage::EngineRow& e : *engines)
    seen.insert(e.engine_id);
  CHECK(seen.count("trusted") == 1);
  CHECK(seen.count("intruder") == 0);
}

TEST_CASE("A bad config at start exits 78 and names file, line and key", "[integration]") {
  TempDir dir;
  std::string config =
      dir.Write("bad.toml", "cadence = \"1s\"\n[storage]\npath = \"x.db\"\nbatch_rowz = 10\n");
  Subprocess daemon({MOECTLD_BIN, "--config", config}, dir.File("moectld.log"));
  std::optional<int> status = daemon.Wait(seconds(10));
  REQUIRE(status.has_value());
  CHECK(*status == kExitConfig);
  std::string log = daemon.Log();
  INFO(log);
  CHECK(log.find(config + ":4:1: storage.batch_rowz: unknown key") != std::string::npos);
}

TEST_CASE("SIGHUP with an invalid config keeps the running one", "[integration]") {
  DaemonRun run;
  auto daemon = run.Start();
  const std::string good = run.base_toml;

  run.dir.Write("controller.toml", good + "\n[policies.reward]\nslo_us = -5\n");
  REQUIRE(daemon->Signal(SIGHUP));
  bool ready_again = run.notify.WaitFor("READY=1", seconds(10));
  CHECK(ready_again);
  CHECK(daemon->running());

  run.dir.Write("controller.toml", good);
  REQUIRE(daemon->Signal(SIGHUP));
  CHECK(run.notify.WaitFor("READY=1", seconds(10)));
  StopDaemon(daemon.get());
  std::string log = daemon->Log();
  INFO(log);
  CHECK(log.find("reload refused, keeping the running configuration") != std::string::npos);
  CHECK(log.find("policies.reward.slo_us") != std::string::npos);
  CHECK(log.find("configuration reloaded") != std::string::npos);
}

// Advisory mode, end to end: the daemon decides and audits with predictions
// but the engine never gets a command (its epoch stays 0); after a reload to
// active, commands flow and the engine's epoch moves.
TEST_CASE("Advisory mode sends nothing and records predictions; a reload to active takes over",
          "[integration][advisory]") {
  DaemonRun run;
  // Capacity only: the knob every decision here predicts a reward for.
  const std::string policies =
      "\n[policies.bias]\nenabled = false\n[policies.replication]\nenabled = false\n";
  run.dir.Write("controller.toml", "mode = \"advisory\"\n" + run.base_toml + policies);
  auto daemon = StartDaemon(run.dir, run.config, &run.notify);
  Subprocess engine(EngineArgs(run.ep, "advisor", 800), run.dir.File("engine.log"));

  // Until a few advisory decisions are stored (bounded).
  auto read_decisions = [&] {
    std::vector<storage::DecisionRow> rows;
    auto reader = storage::Reader::Open(run.db);
    if (!reader.ok()) return rows;
    storage::DecisionQuery q;
    q.engine_id = "advisor";
    auto got = (*reader)->Decisions(q);
    if (got.ok()) rows = *got;
    return rows;
  };
  auto count_status = [](const std::vector<storage::DecisionRow>& rows, const std::string& s) {
    return std::count_if(rows.begin(), rows.end(),
                         [&](const storage::DecisionRow& d) { return d.status == s; });
  };
  std::vector<storage::DecisionRow> advisory_phase;
  for (int i = 0; i < 300 && count_status(advisory_phase, "advisory") < 2; ++i) {
    std::this_thread::sleep_for(milliseconds(100));
    advisory_phase = read_decisions();
  }
  INFO("daemon log:\n" << daemon->Log());
  REQUIRE(count_status(advisory_phase, "advisory") >= 2);
  for (const storage::DecisionRow& d : advisory_phase) {
    INFO(d.id << " " << d.status << " " << d.prediction_json);
    CHECK((d.status == "advisory" || d.status == "rejected"));  // nothing sent
    CHECK_FALSE(d.epoch.has_value());
    CHECK(d.prediction_json.find("\"basis\":\"demand counterfactual\"") != std::string::npos);
    CHECK(d.predicted_gain.has_value());
    if (d.status == "advisory") CHECK(d.command_json.find("capacity_factor") != std::string::npos);
  }
  {
    auto reader = storage::Reader::Open(run.db);
    REQUIRE(reader.ok());
    storage::HistoryQuery hq;
    hq.engine_id = "advisor";
    hq.limit = 100000;
    auto history = (*reader)->History(hq);
    REQUIRE(history.ok());
    REQUIRE_FALSE(history->empty());
    for (const storage::StepRow& row : *history)
      CHECK(row.epoch == history->front().epoch);  // the engine never applied anything
  }
  // The operator's view: what it would have done, with the predicted gain.
  Subprocess advisory_cli(
      {MOECTL_BIN, "decisions", "--db", run.db, "--status", "advisory", "--format", "json"},
      run.dir.File("advisory.json"));
  REQUIRE(advisory_cli.Wait(seconds(30)) == std::optional<int>(0));
  const std::string advisory_json = advisory_cli.Log();
  CHECK(advisory_json.find("\"status\": \"advisory\"") != std::string::npos);
  CHECK(advisory_json.find("\"predicted_gain\": ") != std::string::npos);
  CHECK(advisory_json.find("\"predicted_gain\": null") == std::string::npos);

  // A reload to active takes over.
  run.dir.Write("controller.toml", "mode = \"active\"\n" + run.base_toml + policies);
  REQUIRE(daemon->Signal(SIGHUP));
  REQUIRE(run.notify.WaitFor("READY=1", seconds(10)));
  std::optional<int> engine_status = engine.Wait(seconds(120));
  INFO("engine log:\n" << engine.Log());
  REQUIRE(engine_status == std::optional<int>(0));
  StopDaemon(daemon.get());
  CHECK(daemon->Log().find("mode advisory -> active") != std::string::npos);

  std::vector<storage::DecisionRow> all = read_decisions();
  const storage::DecisionRow* acked = nullptr;
  for (const storage::DecisionRow& d : all) {
    if (d.acked_ns && d.ack_error.empty() && d.epoch) acked = &d;
  }
  REQUIRE(acked != nullptr);  // commands flowed and the engine applied one
  CHECK(acked->prediction_json.find("\"basis\"") != std::string::npos);
  auto reader = storage::Reader::Open(run.db);
  REQUIRE(reader.ok());
  storage::HistoryQuery hq;
  hq.engine_id = "advisor";
  hq.limit = 100000;
  auto history = (*reader)->History(hq);
  REQUIRE(history.ok());
  CHECK(std::any_of(history->begin(), history->end(),
                    [](const storage::StepRow& row) { return row.epoch > 0; }));
}

TEST_CASE("Joint settings: capacity and placement move in one command, one epoch",
          "[integration][joint]") {
  DaemonRun run;
  // The shift scenario drops at capacity 1: the counterfactual raises it, and
  // the replication policy, asked on the snapshot with the raise applied,
  // joins a placement to the same command.
  const std::string policies = R"(
[policies]
order = ["counterfactual", "replication"]
joint_changes = true
[policies.counterfactual]
enabled = true
min_steps = 1
[policies.replication]
enabled = true
min_steps = 1
min_gain = 0.01
)";
  // In lockstep on a step clock (docs/telemetry.md), with a fixed cost model
  // and no straggler measurement: the planner then has no wall-clock
  // deadline and every price is one of demand alone, so whether a placement
  // joins does not depend on how much CPU a loaded machine gave each device
  // (CI runs under load saw none join: once for the planner's deadline, once
  // for a noise "straggler" the measured model saw at 3.5x).
  run.base_toml = "step_clock = \"15ms\"\n" + run.base_toml;
  const std::string cost_model = R"(
[cost_model]
source = "fixed"
device_fixed_us = 150.0
device_per_row_us = 1.5
overhead_fixed_us = 800.0
stragglers = false
)";
  auto daemon = run.Start(cost_model + policies);
  std::vector<std::string> args = EngineArgs(run.ep, "joint", 160);
  args.push_back("--await-controller");
  Subprocess engine(args, run.dir.File("engine.log"));
  std::optional<int> engine_status = engine.Wait(seconds(120));
  INFO("engine log:\n" << engine.Log());
  REQUIRE(engine_status == std::optional<int>(0));
  StopDaemon(daemon.get());
  INFO("daemon log:\n" << daemon->Log());

  auto reader = storage::Reader::Open(run.db);
  REQUIRE(reader.ok());
  storage::DecisionQuery q;
  q.engine_id = "joint";
  auto decisions = (*reader)->Decisions(q);
  REQUIRE(decisions.ok());
  const storage::DecisionRow* joint = nullptr;
  for (const storage::DecisionRow& d : *decisions) {
    if (d.knob == "capacity_factor" && d.epoch && d.acked_ns && d.ack_error.empty() &&
        d.proposal_json.find("\"with\"") != std::string::npos) {
      joint = &d;
      break;
    }
  }
  REQUIRE(joint != nullptr);
  INFO(joint->proposal_json);
  CHECK(joint->policy == "counterfactual");
  CHECK(joint->proposal_json.find("\"knob\":\"phy2log\"") != std::string::npos);
  CHECK(joint->proposal_json.find("\"policy\":\"replication\"") != std::string::npos);
  // One command carried both: its audit and the applied epoch's row say so.
  CHECK(joint->command_json.find("capacity_factor") != std::string::npos);
  CHECK(joint->command_json.find("phy2log") != std::string::npos);
  auto epochs = (*reader)->Epochs("joint", {});
  REQUIRE(epochs.ok());
  const auto row = std::find_if(epochs->begin(), epochs->end(), [&](const storage::EpochRow& r) {
    return r.epoch == *joint->epoch;
  });
  REQUIRE(row != epochs->end());
  CHECK(row->decision_id == joint->id);
  CHECK(row->knobs_json.find("capacity_factor") != std::string::npos);
  CHECK(row->knobs_json.find("\"with\"") != std::string::npos);
  // The engine took both in one command (its reason names the companion).
  CHECK(engine.Log().find(fmt::format("command epoch {} accepted", *joint->epoch)) !=
        std::string::npos);
  CHECK(engine.Log().find("with replication: phy2log") != std::string::npos);
}

}  // namespace
}  // namespace moe
