// Operator levers end to end: a real moectld with its Unix control socket, a
// real moe-engine over loopback ZeroMQ, `moectl` pulling every lever, and the
// effect read back from what the controller sent (the decisions table) and
// from the audit rows. Also: a user outside the socket's group is refused,
// one inside is served, and levers survive a daemon restart.

#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support/daemon_config.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace moe {
namespace {

using moe::testing::Subprocess;
using moe::testing::TempDir;
using nlohmann::json;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

std::string Config(const std::string& db, const std::string& telemetry, const std::string& commands,
                   const std::string& socket, const std::string& group) {
  moe::testing::DaemonConfig c;
  c.db = db;
  c.telemetry = telemetry;
  c.commands = commands;
  c.progress_interval = "0s";
  c.tables = fmt::format(R"(
[control]
socket = "{}"
group = "{}"
mode = "0660"

[policies]
order = ["capacity"]

[policies.bias]
enabled = false

[policies.replication]
enabled = false
)",
                         socket, group);
  return moe::testing::DaemonToml(c);
}

struct Run {
  int rc = -1;
  std::string out;
};

// Runs `moectl` with `args` (prefixed by `prefix`, e.g. setpriv) to the end.
Run Moectl(const TempDir& dir, std::vector<std::string> args,
           std::vector<std::string> prefix = {}) {
  static int n = 0;
  std::vector<std::string> argv = std::move(prefix);
  argv.push_back(MOECTL_BIN);
  argv.insert(argv.end(), args.begin(), args.end());
  Subprocess cli(argv, dir.File(fmt::format("moectl-{}.log", n++)));
  std::optional<int> rc = cli.Wait(seconds(30));
  return {rc.value_or(-1), cli.Log()};
}

json Json(const Run& run) {
  const size_t start = run.out.find_first_of("[{");
  if (start == std::string::npos) return nullptr;
  return json::parse(run.out.substr(start), nullptr, /*allow_exceptions=*/false);
}

// Polls `done` every 200 ms for up to `limit`.
bool Eventually(const std::function<bool()>& done, seconds limit) {
  const auto deadline = SteadyClock::now() + limit;
  do {
    if (done()) return true;
    std::this_thread::sleep_for(milliseconds(200));
  } while (SteadyClock::now() < deadline);
  return false;
}

class Loop {
 public:
  explicit Loop(const std::string& group = "")
      : telemetry_(moe::testing::FreeLoopbackEndpoint()),
        commands_(moe::testing::FreeLoopbackEndpoint()) {
    // Others may enter the directory: the socket's own mode decides.
    chmod(dir.path().c_str(), 0755);
    socket = dir.File("control.sock");
    db = dir.File("moectl.db");
    config = dir.Write("controller.toml", Config(db, telemetry_, commands_, socket, group));
    StartDaemon();
  }

  void StartDaemon() {
    daemon = std::make_unique<Subprocess>(std::vector<std::string>{MOECTLD_BIN, "--config", config},
                                          dir.File(fmt::format("moectld-{}.log", ++daemon_runs_)));
    REQUIRE(Eventually([&] { return access(socket.c_str(), F_OK) == 0; }, seconds(15)));
  }

  void StopDaemon() {
    REQUIRE(daemon->Signal(SIGTERM));
    std::optional<int> rc = daemon->Wait(seconds(20));
    REQUIRE(rc.has_value());
    CHECK(*rc == 0);
    CHECK(access(socket.c_str(), F_OK) != 0);  // the socket file is removed at exit
  }

  void StartEngine() {
    // The shift scenario drops tokens at a low capacity factor: the capacity
    // policy wants to raise it.
    engine = std::make_unique<Subprocess>(
        std::vector<std::string>{
            MOE_ENGINE_BIN, "--config", std::string(MOE_SOURCE_DIR) + "/configs/engine.toml",
            "--scenario", std::string(MOE_SOURCE_DIR) + "/configs/scenarios/shift.toml",
            "--engine-id", "L1", "--telemetry", telemetry_, "--commands", commands_, "--steps",
            "30000", "--step-interval-ms", "10", "--log-level", "warn"},
        dir.File("engine.log"));
  }

  ~Loop() {
    if (engine) {
      engine->Signal(SIGTERM);
      engine->Wait(seconds(15));
    }
  }

  std::vector<std::string> Db() const { return {"--db", db, "--format", "json"}; }
  json Decisions() {
    std::vector<std::string> args = {"decisions", "--limit", "0"};
    for (const std::string& a : Db())
      args.push_back(a);
    return Json(Moectl(dir, args));
  }
  json Levers() {
    std::vector<std::string> args = {"levers"};
    for (const std::string& a : Db())
      args.push_back(a);
    return Json(Moectl(dir, args));
  }
  json Status() {
    Run run = Moectl(dir, {"status", "--socket", socket, "--format", "json"});
    return run.rc == 0 ? Json(run) : json(nullptr);
  }
  Run Lever(std::vector<std::string> args) {
    args.insert(args.end(), {"--socket", socket});
    return Moectl(dir, args);
  }

  TempDir dir;
  std::string socket, db, config;
  std::unique_ptr<Subprocess> daemon;
  std::unique_ptr<Subprocess> engine;

 private:
  std::string telemetry_, commands_;
  int daemon_runs_ = 0;
};

// The decisions after id `after` that satisfy `pred`.
std::vector<json> Since(const json& decisions, int64_t after,
                        const std::function<bool(const json&)>& pred) {
  std::vector<json> out;
  if (!decisions.is_array()) return out;
  for (const json& d : decisions) {
    if (d["id"].get<int64_t>() > after && pred(d)) out.push_back(d);
  }
  return out;
}

int64_t LastId(const json& decisions) {
  return decisions.is_array() && !decisions.empty() ? decisions.back()["id"].get<int64_t>() : 0;
}

bool Sent(const json& d) {
  const std::string s = d["status"];
  return s == "sent" || s == "acked" || s == "measured" || s == "failed";
}

TEST_CASE("every lever changes what the controller sends and leaves an audit row",
          "[integration][levers]") {
  Loop loop;
  loop.StartEngine();
  INFO("daemon log:\n" << loop.daemon->Log());
  REQUIRE(Eventually(
      [&] {
        json s = loop.Status();
        return s.is_array() && s.size() == 1 && s[0]["liveness"] == "live" &&
               s[0]["steps"].get<int64_t>() > 20;
      },
      seconds(20)));

  // A bad lever: refused with a clear message, and audited as refused.
  Run bad = loop.Lever({"pin", "--engine", "L1", "capacity_factor=99", "--reason", "too much"});
  CHECK(bad.rc == 2);
  CHECK(bad.out.find("outside the guard's bounds") != std::string::npos);
  Run unknown = loop.Lever({"pause", "--engine", "nope", "--reason", "x"});
  CHECK(unknown.rc == 2);
  CHECK(unknown.out.find("known engines: L1") != std::string::npos);
  Run no_reason = loop.Lever({"pause", "--engine", "L1"});
  CHECK(no_reason.rc == 2);

  // pin: the value is sent as an operator decision; while it holds, the
  // capacity policy (which wants more than 1.0 on this load) is rejected.
  Run pin = loop.Lever(
      {"pin", "--engine", "L1", "capacity_factor=1.0", "--for", "10m", "--reason", "incident 7"});
  INFO(pin.out);
  REQUIRE(pin.rc == 0);
  int64_t pin_decision = 0;
  REQUIRE(Eventually(
      [&] {
        auto ops = Since(loop.Decisions(), 0, [](const json& d) {
          return d["policy"] == "operator" && d["knob"] == "capacity_factor" &&
                 (d["status"] == "acked" || d["status"] == "measured");
        });
        if (ops.empty()) return false;
        pin_decision = ops.back()["id"];
        return ops.back()["command"]["capacity_factor"] == 1.0;
      },
      seconds(20)));
  REQUIRE(Eventually(
      [&] {
        json s = loop.Status();
        return s.is_array() && s[0]["knobs"]["capacity_factor"] == 1.0 &&
               s[0]["pins"].size() == 1 && s[0]["pins"][0]["value"] == 1.0;
      },
      seconds(10)));
  REQUIRE(Eventually(
      [&] {
        return !Since(loop.Decisions(), pin_decision, [](const json& d) {
                  return d["policy"] == "capacity" && d["status"] == "rejected" &&
                         d["verdict_reason"].get<std::string>().find("pinned") != std::string::npos;
                }).empty();
      },
      seconds(20)));
  CHECK(Since(loop.Decisions(), pin_decision, [](const json& d) {
          return d["policy"] == "capacity" && Sent(d);
        }).empty());

  // pause: nothing new is decided; resume: decisions come again.
  REQUIRE(loop.Lever({"pause", "--engine", "L1", "--reason", "maintenance"}).rc == 0);
  std::this_thread::sleep_for(milliseconds(500));  // a tick in progress may still land
  const int64_t paused_at = LastId(loop.Decisions());
  std::this_thread::sleep_for(seconds(3));  // 15 cadence ticks
  CHECK(Since(loop.Decisions(), paused_at, [](const json&) { return true; }).empty());
  CHECK(loop.Status()[0]["paused"] == true);
  REQUIRE(loop.Lever({"resume", "--engine", "L1", "--reason", "done"}).rc == 0);

  // mode advisory: a pin is refused; unpinned, the capacity policy's raise is
  // recorded as advisory and nothing is sent.
  REQUIRE(loop.Lever({"mode", "--engine", "L1", "advisory", "--reason", "shadow"}).rc == 0);
  Run advisory_pin =
      loop.Lever({"pin", "--engine", "L1", "top_k=2", "--reason", "should be refused"});
  CHECK(advisory_pin.rc == 1);
  CHECK(advisory_pin.out.find("is advisory") != std::string::npos);
  REQUIRE(loop.Lever({"unpin", "--engine", "L1", "capacity_factor", "--reason", "over"}).rc == 0);
  const int64_t advisory_at = LastId(loop.Decisions());
  REQUIRE(Eventually(
      [&] {
        return !Since(loop.Decisions(), advisory_at, [](const json& d) {
                  return d["policy"] == "capacity" && d["status"] == "advisory";
                }).empty();
      },
      seconds(20)));
  CHECK(Since(loop.Decisions(), advisory_at, Sent).empty());

  // mode active: the raise is sent.
  REQUIRE(loop.Lever({"mode", "--engine", "L1", "active", "--reason", "trust it"}).rc == 0);
  const int64_t active_at = LastId(loop.Decisions());
  REQUIRE(Eventually(
      [&] {
        return !Since(loop.Decisions(), active_at, [](const json& d) {
                  return d["policy"] == "capacity" && Sent(d);
                }).empty();
      },
      seconds(20)));

  // The audit: every lever, in order, with who and why.
  json levers = loop.Levers();
  REQUIRE(levers.is_array());
  std::vector<std::string> seen;
  for (const json& a : levers) {
    seen.push_back(a["action"].get<std::string>() + ":" +
                   (a["result"] == "done" ? "done" : "refused"));
    CHECK(a["who"].get<std::string>().find(fmt::format("uid {}", getuid())) != std::string::npos);
    CHECK_FALSE(a["reason"].get<std::string>().empty());
  }
  CHECK(seen == std::vector<std::string>{"pin:refused", "pin:done", "pause:done", "resume:done",
                                         "mode:done", "pin:refused", "unpin:done", "mode:done"});
  CHECK(levers[1]["reason"] == "incident 7");
  CHECK(levers[1]["knob"] == "capacity_factor");
  CHECK(levers[1]["value"] == 1.0);
  CHECK(levers[1]["until"].is_string());

  // Levers survive a restart of the daemon: pause again, restart, still paused.
  REQUIRE(loop.Lever({"pause", "--engine", "L1", "--reason", "across a restart"}).rc == 0);
  loop.StopDaemon();
  loop.StartDaemon();
  REQUIRE(Eventually(
      [&] {
        json s = loop.Status();
        return s.is_array() && s.size() == 1 && s[0]["liveness"] == "live";
      },
      seconds(20)));
  CHECK(loop.Status()[0]["paused"] == true);
  loop.StopDaemon();
}

// Every knob of the knob table that no policy proposes travels too: pinned
// by an operator, sent as a command, applied by a real moe-engine, acked, and
// shown by `moectl status` (an enum by its name).
TEST_CASE("pins reach every scalar knob of a real engine", "[integration][levers][knobs]") {
  Loop loop;
  loop.StartEngine();
  INFO("daemon log:\n" << loop.daemon->Log());
  REQUIRE(Eventually(
      [&] {
        json s = loop.Status();
        return s.is_array() && s.size() == 1 && s[0]["steps"].get<int64_t>() > 10;
      },
      seconds(20)));
  // The Hello's values: every scalar knob, the enums by name.
  json before = loop.Status()[0]["knobs"];
  CHECK(before["shortlist"] == 0);
  CHECK(before["overflow_policy"] == "drop");
  CHECK(before["capacity_scope"] == "expert");

  // Bad values are refused before anything is sent.
  Run spill = loop.Lever({"pin", "--engine", "L1", "overflow_policy=spill", "--reason", "x"});
  CHECK(spill.rc == 2);
  CHECK(spill.out.find("overflow_policy: expected one of drop, reroute, replica") !=
        std::string::npos);
  Run wide = loop.Lever({"pin", "--engine", "L1", "shortlist=100", "--reason", "x"});
  CHECK(wide.rc == 2);
  CHECK(wide.out.find("outside the guard's bounds") != std::string::npos);

  const std::vector<std::pair<std::string, std::string>> pins = {
      {"shortlist", "4"}, {"availability_weight", "0.5"}, {"top_p", "0.9"},
      {"k_min", "2"},     {"overflow_policy", "reroute"}, {"capacity_scope", "slot"}};
  for (const auto& [knob, value] : pins) {
    Run pin = loop.Lever(
        {"pin", "--engine", "L1", knob + "=" + value, "--for", "10m", "--reason", "knob table"});
    INFO(knob << ": " << pin.out);
    REQUIRE(pin.rc == 0);
  }
  // Each is sent as an operator decision and acked by the engine.
  const std::map<std::string, double> wire = {{"shortlist", 4},       {"availability_weight", 0.5},
                                              {"top_p", 0.9},         {"k_min", 2},
                                              {"overflow_policy", 1}, {"capacity_scope", 1}};
  REQUIRE(Eventually(
      [&] {
        std::map<std::string, bool> acked;
        for (const json& d : Since(loop.Decisions(), 0, [](const json& d) {
               return d["policy"] == "operator" &&
                      (d["status"] == "acked" || d["status"] == "measured");
             })) {
          const std::string knob = d["knob"];
          if (wire.count(knob) && d["command"][knob] == wire.at(knob)) acked[knob] = true;
        }
        return acked.size() == wire.size();
      },
      seconds(40)));
  json after;
  REQUIRE(Eventually(
      [&] {
        json s = loop.Status();
        if (!s.is_array()) return false;
        after = s[0]["knobs"];
        return after["shortlist"] == 4 && after["availability_weight"] == 0.5 &&
               after["top_p"] == 0.9 && after["k_min"] == 2 &&
               after["overflow_policy"] == "reroute" && after["capacity_scope"] == "slot";
      },
      seconds(10)));
  // `moectl explain` shows an enum change by its names.
  int64_t overflow_id = 0;
  for (const json& d : loop.Decisions()) {
    if (d["policy"] == "operator" && d["knob"] == "overflow_policy") overflow_id = d["id"];
  }
  REQUIRE(overflow_id > 0);
  Run explain = Moectl(
      loop.dir, {"explain", "--db", loop.db, "--format", "csv", std::to_string(overflow_id)});
  INFO(explain.out);
  CHECK(explain.rc == 0);
  CHECK(explain.out.find("overflow_policy,all,,drop,reroute,reroute\n") != std::string::npos);
  // The table view names them too.
  Run table = Moectl(loop.dir, {"status", "--socket", loop.socket});
  CHECK(table.rc == 0);
  CHECK(table.out.find("availability_weight") != std::string::npos);
  CHECK(table.out.find("reroute") != std::string::npos);
  CHECK(table.out.find("slot") != std::string::npos);

  // A value within the guard's bounds that the engine cannot run: the engine
  // refuses it and says why (shortlist must cover top_k).
  REQUIRE(loop.Lever({"unpin", "--engine", "L1", "shortlist", "--reason", "retry"}).rc == 0);
  REQUIRE(loop.Lever({"pin", "--engine", "L1", "shortlist=1", "--reason", "too few"}).rc == 0);
  json decisions;
  const bool refused = Eventually(
      [&] {
        decisions = loop.Decisions();
        return !Since(decisions, 0, [](const json& d) {
                  return d["knob"] == "shortlist" && d["status"] == "failed" &&
                         d["ack_error"].get<std::string>().find("shortlist") != std::string::npos;
                }).empty();
      },
      seconds(40));
  if (!refused) FAIL("no refused shortlist=1; decisions: " << decisions.dump(1));
  CHECK(loop.Status()[0]["knobs"]["shortlist"] == 4);
  loop.StopDaemon();
}

TEST_CASE("the control socket serves its group and refuses everyone else",
          "[integration][levers]") {
  if (getuid() != 0) {
    WARN("not root: cannot run moectl as another user; the refusal is not exercised");
    return;
  }
  // nobody (65534) and its primary group, whose name varies between systems.
  group* nogroup = getgrgid(65534);
  REQUIRE(nogroup != nullptr);
  const std::string setpriv = "/usr/bin/setpriv";  // util-linux
  if (access(setpriv.c_str(), X_OK) != 0) {
    WARN(setpriv << " is missing: the refusal is not exercised");
    return;
  }
  const std::vector<std::string> as_nobody = {setpriv, "--reuid=65534", "--regid=65534",
                                              "--clear-groups"};
  {
    Loop loop;  // the socket's group: root's
    Run refused = Moectl(loop.dir, {"status", "--socket", loop.socket}, as_nobody);
    INFO(refused.out);
    if (refused.rc == 126 || refused.rc == 127) {
      WARN("nobody cannot run " << MOECTL_BIN << " (its directories are private): skipped");
      return;
    }
    CHECK(refused.rc == 1);
    CHECK(refused.out.find("permission denied") != std::string::npos);
    Run pause =
        Moectl(loop.dir, {"pause", "--socket", loop.socket, "--engine", "x", "--reason", "hijack"},
               as_nobody);
    CHECK(pause.rc == 1);
    CHECK(pause.out.find("permission denied") != std::string::npos);
    loop.StopDaemon();
  }
  {
    Loop loop(nogroup->gr_name);  // nobody's group may
    Run served = Moectl(loop.dir, {"status", "--socket", loop.socket}, as_nobody);
    INFO(served.out);
    CHECK(served.rc == 0);
    loop.StopDaemon();
  }
}

}  // namespace
}  // namespace moe
