// /metrics and /healthz of a live daemon: real moectld and moe-engine over
// loopback ZeroMQ, scraped over real loopback HTTP, the text checked by
// Debian's promtool, and the database locked from outside to make it refuse
// writes.

#include <signal.h>
#include <sqlite3.h>

#include <fmt/format.h>
#include <httplib.h>
#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "support/daemon_config.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace moe {
namespace {

using moe::testing::Subprocess;
using moe::testing::TempDir;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

int PortOf(const std::string& endpoint) {
  return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

std::string Config(const std::string& db, const std::string& telemetry, const std::string& commands,
                   int metrics_port) {
  moe::testing::DaemonConfig c;
  c.db = db;
  c.telemetry = telemetry;
  c.commands = commands;
  c.progress_interval = "2s";
  c.tables = fmt::format(R"(
[metrics]
listen = "127.0.0.1:{}"
loop_timeout = "5s"
)",
                         metrics_port);
  return moe::testing::DaemonToml(c);
}

// The value of the sample whose line starts with `series` (name and labels
// exactly as rendered), or -1 when absent.
double Value(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

// The sum of every sample of family `name` for engine `engine`.
double Sum(const std::string& text, const std::string& name, const std::string& engine) {
  std::istringstream in(text);
  std::string line;
  double sum = 0;
  const std::string prefix = name + "{engine=\"" + engine + "\"";
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) sum += std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

// GET `path`; status and body, or status -1 when no answer came.
std::pair<int, std::string> Get(httplib::Client& client, const std::string& path) {
  auto res = client.Get(path.c_str());
  if (!res) return {-1, ""};
  return {res->status, res->body};
}

// Polls /healthz until it answers `status`, for up to `limit`.
std::pair<int, std::string> AwaitHealth(httplib::Client& client, int status, seconds limit) {
  const auto deadline = SteadyClock::now() + limit;
  std::pair<int, std::string> got;
  do {
    got = Get(client, "/healthz");
    if (got.first == status) return got;
    std::this_thread::sleep_for(milliseconds(100));
  } while (SteadyClock::now() < deadline);
  return got;
}

TEST_CASE("A live daemon serves metrics that move and a health check that follows the database",
          "[integration][metrics]") {
  TempDir dir;
  const std::string telemetry = moe::testing::FreeLoopbackEndpoint();
  const std::string commands = moe::testing::FreeLoopbackEndpoint();
  const int port = PortOf(moe::testing::FreeLoopbackEndpoint());
  const std::string db = dir.File("moectl.db");
  const std::string config = dir.Write("controller.toml", Config(db, telemetry, commands, port));
  moe::testing::NotifySocket notify(dir.File("notify.sock"));
  Subprocess daemon({MOECTLD_BIN, "--config", config}, dir.File("moectld.log"),
                    {"NOTIFY_SOCKET=" + notify.path()});
  REQUIRE(notify.WaitFor("READY=1", seconds(15)));
  INFO("daemon log:\n" << daemon.Log());

  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  REQUIRE(AwaitHealth(client, 200, seconds(5)).first == 200);

  // The shift scenario overflows capacity at first: the capacity policy acts.
  Subprocess engine(
      {MOE_ENGINE_BIN, "--config", std::string(MOE_SOURCE_DIR) + "/configs/engine.toml",
       "--scenario", std::string(MOE_SOURCE_DIR) + "/configs/scenarios/shift.toml", "--engine-id",
       "m1", "--telemetry", telemetry, "--commands", commands, "--steps", "4000",
       "--step-interval-ms", "10", "--log-level", "warn"},
      dir.File("engine.log"));

  // Scrape every 250 ms for up to 30 s, until the drop figures and the
  // decisions have moved.
  std::set<double> drop_ratios;
  double first_dropped = -1, last_dropped = -1, first_decisions = -1, last_decisions = -1;
  std::string text;
  const auto deadline = SteadyClock::now() + seconds(30);
  while (SteadyClock::now() < deadline) {
    auto [status, body] = Get(client, "/metrics");
    REQUIRE(status == 200);
    text = body;
    const double steps = Value(text, "moectl_steps_total{engine=\"m1\"}");
    if (steps > 0) {
      drop_ratios.insert(Value(text, "moectl_drop_ratio{engine=\"m1\"}"));
      last_dropped = Value(text, "moectl_dropped_token_slots_total{engine=\"m1\"}");
      last_decisions = Sum(text, "moectl_decisions_total", "m1");
      if (first_dropped < 0) {
        first_dropped = last_dropped;
        first_decisions = last_decisions;
      }
    }
    if (drop_ratios.size() >= 3 && last_dropped > first_dropped &&
        last_decisions > first_decisions) {
      break;
    }
    std::this_thread::sleep_for(milliseconds(250));
  }
  INFO("last scrape:\n" << text);
  CHECK(drop_ratios.size() >= 3);           // the drop-rate gauge moves
  CHECK(last_dropped > first_dropped);      // and so does the drop counter
  CHECK(last_decisions > first_decisions);  // decisions are counted as they are made
  CHECK(Value(text, "moectl_epoch{engine=\"m1\"}") >= 1);
  CHECK(Value(text, "moectl_step_critical_path_seconds_count{engine=\"m1\"}") > 0);
  CHECK(text.find("moectl_decisions_total{engine=\"m1\",policy=\"capacity\",verdict=\"") !=
        std::string::npos);
  CHECK(text.find("moectl_layer_") == std::string::npos);  // per-layer series are off

  // Every series the Grafana dashboard asks for is one the daemon serves.
  {
    std::ifstream in(std::string(MOE_SOURCE_DIR) + "/deploy/grafana/moectl-engine.json");
    std::stringstream dashboard;
    dashboard << in.rdbuf();
    const std::string json = dashboard.str();
    REQUIRE_FALSE(json.empty());
    const std::regex series("moectl_[a-z_]+");
    int used = 0;
    for (auto it = std::sregex_iterator(json.begin(), json.end(), series);
         it != std::sregex_iterator(); ++it) {
      ++used;
      INFO("the dashboard uses " << it->str());
      CHECK(text.find("\n" + it->str()) != std::string::npos);
    }
    CHECK(used >= 15);
  }

#ifdef MOE_PROMTOOL
  {
    const std::string scrape = dir.Write("scrape.txt", text);
    Subprocess promtool({"/bin/sh", "-c", std::string(MOE_PROMTOOL) + " check metrics < " + scrape},
                        dir.File("promtool.log"));
    std::optional<int> rc = promtool.Wait(seconds(30));
    INFO("promtool:\n" << promtool.Log());
    REQUIRE(rc.has_value());
    CHECK(*rc == 0);
    CHECK(promtool.Log().empty());  // not even a lint warning
  }
#else
  WARN("promtool not installed (Debian package prometheus): exposition text not linted");
#endif

  // Another connection holds the write lock: the daemon's writes fail (busy),
  // /healthz turns 503 and says why; released, the writes commit and it is 200.
  REQUIRE(AwaitHealth(client, 200, seconds(5)).first == 200);
  sqlite3* lock = nullptr;
  REQUIRE(sqlite3_open(db.c_str(), &lock) == SQLITE_OK);
  sqlite3_busy_timeout(lock, 10'000);
  REQUIRE(sqlite3_exec(lock, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK);
  auto locked = AwaitHealth(client, 503, seconds(20));
  CHECK(locked.first == 503);
  CHECK(locked.second.find("database does not accept writes") != std::string::npos);
  CHECK(locked.second.find("locked") != std::string::npos);
  auto [metrics_status, locked_text] = Get(client, "/metrics");
  CHECK(metrics_status == 200);  // the figures are still served
  CHECK(Value(locked_text, "moectl_db_writable") == 0);
  CHECK(Value(locked_text, "moectl_db_write_errors_total") > 0);
  CHECK(Value(locked_text, "moectl_db_queue_depth") > 0);
  REQUIRE(sqlite3_exec(lock, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
  sqlite3_close(lock);
  auto recovered = AwaitHealth(client, 200, seconds(20));
  CHECK(recovered.first == 200);
  CHECK(recovered.second == "ok\n");
  CHECK(Value(Get(client, "/metrics").second, "moectl_db_writable") == 1);

  REQUIRE(engine.Signal(SIGTERM));
  engine.Wait(seconds(15));
  REQUIRE(daemon.Signal(SIGTERM));
  std::optional<int> status = daemon.Wait(seconds(20));
  REQUIRE(status.has_value());
  CHECK(*status == 0);
}

// systemd's watchdog protocol (sd_watchdog_enabled): with WATCHDOG_USEC set,
// the loop pings WATCHDOG=1 at half that interval; without it, never.
TEST_CASE("The loop pings systemd's watchdog when the unit asks for it", "[integration][metrics]") {
  TempDir dir;
  const std::string config = dir.Write(
      "controller.toml",
      fmt::format("[transport]\ntelemetry = \"{}\"\ncommands = \"{}\"\n[storage]\npath = \"{}\"\n",
                  moe::testing::FreeLoopbackEndpoint(), moe::testing::FreeLoopbackEndpoint(),
                  dir.File("moectl.db")));
  {
    moe::testing::NotifySocket notify(dir.File("watchdog.sock"));
    Subprocess daemon({MOECTLD_BIN, "--config", config}, dir.File("watchdog.log"),
                      {"NOTIFY_SOCKET=" + notify.path(), "WATCHDOG_USEC=400000"});
    REQUIRE(notify.WaitFor("READY=1", seconds(15)));
    int pings = 0;
    const auto start = SteadyClock::now();
    while (pings < 4 && SteadyClock::now() - start < seconds(5)) {
      if (notify.WaitFor("WATCHDOG=1", seconds(1))) ++pings;
    }
    INFO(daemon.Log());
    CHECK(pings == 4);
    // Four pings at 200 ms apart take about 0.8 s; well under the 5 s bound.
    CHECK(SteadyClock::now() - start < seconds(4));
    REQUIRE(daemon.Signal(SIGTERM));
    CHECK(daemon.Wait(seconds(15)) == std::optional<int>(0));
  }
  {
    moe::testing::NotifySocket notify(dir.File("plain.sock"));
    Subprocess daemon({MOECTLD_BIN, "--config", config}, dir.File("plain.log"),
                      {"NOTIFY_SOCKET=" + notify.path()});
    REQUIRE(notify.WaitFor("READY=1", seconds(15)));
    CHECK_FALSE(notify.WaitFor("WATCHDOG=1", milliseconds(1500)));
    REQUIRE(daemon.Signal(SIGTERM));
    CHECK(daemon.Wait(seconds(15)) == std::optional<int>(0));
  }
}

// A notify socket nobody reads (its queue holds net.unix.max_dgram_qlen
// datagrams, 10 by default) must not stop the loop: with pings every 50 ms the
// queue is full within a second, and the loop still answers and stops at once.
TEST_CASE("A notify socket nobody reads does not stall the loop", "[integration][metrics]") {
  TempDir dir;
  const int port = PortOf(moe::testing::FreeLoopbackEndpoint());
  const std::string config = dir.Write(
      "controller.toml", Config(dir.File("moectl.db"), moe::testing::FreeLoopbackEndpoint(),
                                moe::testing::FreeLoopbackEndpoint(), port));
  moe::testing::NotifySocket notify(dir.File("unread.sock"));  // never read below
  Subprocess daemon({MOECTLD_BIN, "--config", config}, dir.File("unread.log"),
                    {"NOTIFY_SOCKET=" + notify.path(), "WATCHDOG_USEC=100000"});
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  REQUIRE(AwaitHealth(client, 200, seconds(15)).first == 200);
  std::this_thread::sleep_for(seconds(3));  // about 60 pings: far past a full queue
  INFO(daemon.Log());
  auto [status, body] = Get(client, "/metrics");
  CHECK(status == 200);
  CHECK(Value(body, "moectl_loop_age_seconds") < 1.0);       // the loop still runs
  CHECK(daemon.Log().find("dropped") != std::string::npos);  // and says what it dropped
  REQUIRE(daemon.Signal(SIGTERM));
  CHECK(daemon.Wait(seconds(10)) == std::optional<int>(0));
}

TEST_CASE("A metrics address in use stops the daemon at start with a clear message",
          "[integration][metrics]") {
  TempDir dir;
  const int port = PortOf(moe::testing::FreeLoopbackEndpoint());
  httplib::Server squatter;
  REQUIRE(squatter.bind_to_port("127.0.0.1", port));
  const std::string config = dir.Write(
      "controller.toml", Config(dir.File("moectl.db"), moe::testing::FreeLoopbackEndpoint(),
                                moe::testing::FreeLoopbackEndpoint(), port));
  Subprocess daemon({MOECTLD_BIN, "--config", config}, dir.File("moectld.log"));
  std::optional<int> status = daemon.Wait(seconds(20));
  INFO(daemon.Log());
  REQUIRE(status.has_value());
  CHECK(*status == 1);
  CHECK(daemon.Log().find(fmt::format("cannot listen on 127.0.0.1:{}", port)) != std::string::npos);
}

}  // namespace
}  // namespace moe
