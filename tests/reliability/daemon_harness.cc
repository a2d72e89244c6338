#include "reliability/daemon_harness.h"

#include <sqlite3.h>

#include <fmt/format.h>
#include <httplib.h>

#include <catch2/catch.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "support/daemon_config.h"

namespace moe::testing {

std::optional<std::vector<SqlRow>> QueryRows(const std::string& path, const std::string& sql,
                                             bool read_only, std::string* error) {
  sqlite3* db = nullptr;
  const int flags = read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  auto fail = [&](const std::string& what) -> std::optional<std::vector<SqlRow>> {
    if (error) *error = what + ": " + (db ? sqlite3_errmsg(db) : "no connection");
    if (db) sqlite3_close(db);
    return std::nullopt;
  };
  if (sqlite3_open_v2(path.c_str(), &db, flags, nullptr) != SQLITE_OK) return fail("open");
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* stmt = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) return fail("prepare");
  std::vector<SqlRow> rows;
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    SqlRow row;
    for (int c = 0; c < sqlite3_column_count(stmt); ++c) {
      const unsigned char* text = sqlite3_column_text(stmt, c);
      row[sqlite3_column_name(stmt, c)] =
          text ? std::optional<std::string>(reinterpret_cast<const char*>(text)) : std::nullopt;
    }
    rows.push_back(std::move(row));
  }
  sqlite3_finalize(stmt);
  if (rc != SQLITE_DONE) return fail("step");
  sqlite3_close(db);
  return rows;
}

int64_t QueryInt(const std::string& path, const std::string& sql, int64_t fallback) {
  auto rows = QueryRows(path, sql);
  if (!rows || rows->empty() || rows->front().empty()) return fallback;
  const std::optional<std::string>& v = rows->front().begin()->second;
  return v ? std::stoll(*v) : fallback;
}

std::string IntegrityCheck(const std::string& path) {
  std::string error;
  auto rows = QueryRows(path, "PRAGMA integrity_check", false, &error);
  if (!rows) return error;
  std::string all;
  for (const SqlRow& row : *rows) {
    for (const auto& [name, value] : row)
      all += (all.empty() ? "" : "; ") + value.value_or("NULL");
  }
  return all;
}

std::pair<int, std::string> HttpGet(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(5, 0);
  auto res = client.Get(path.c_str());
  if (!res) return {-1, ""};
  return {res->status, res->body};
}

bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (done()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

double MetricValue(const std::string& text, const std::string& series) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(series + " ", 0) == 0) return std::stod(line.substr(series.size() + 1));
  }
  return -1;
}

double MetricSum(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  double sum = 0;
  bool any = false;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0 || line.rfind(name + "{", 0) == 0) {
      sum += std::stod(line.substr(line.rfind(' ') + 1));
      any = true;
    }
  }
  return any ? sum : -1;
}

double DbRefusedOrLost(const std::string& metrics_text) {
  const double rejected = MetricSum(metrics_text, "moectl_db_rejected_rows_total");
  const double lost = MetricSum(metrics_text, "moectl_db_lost_writes_total");
  if (rejected < 0 || lost < 0) return -1;
  return rejected + lost;
}

namespace {

int PortOf(const std::string& endpoint) {
  return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

// Decides quickly on a short run (as tests/integration/loop_test.cc), commits
// every 50 ms, and serves /metrics and /healthz on loopback.
std::string ControllerToml(const std::string& db, const std::string& telemetry,
                           const std::string& commands, int metrics_port,
                           const std::string& log_level) {
  DaemonConfig c;
  c.db = db;
  c.telemetry = telemetry;
  c.commands = commands;
  c.log_level = log_level;
  c.ack_timeout = "2s";
  c.tables = fmt::format(R"(
[metrics]
listen = "127.0.0.1:{}"
loop_timeout = "5s"

[policies.learning]
min_steps = 4
)",
                         metrics_port);
  return DaemonToml(c);
}

}  // namespace

DaemonFixture::DaemonFixture(DaemonOptions options)
    : options_(std::move(options)),
      db_(dir_.File("moectl.db")),
      telemetry_(FreeLoopbackEndpoint()),
      commands_(FreeLoopbackEndpoint()),
      metrics_port_(PortOf(FreeLoopbackEndpoint())) {
  config_ = dir_.Write("controller.toml", ControllerToml(db_, telemetry_, commands_, metrics_port_,
                                                         options_.log_level) +
                                              options_.extra_toml);
  notify_ = std::make_unique<NotifySocket>(dir_.File("notify.sock"));
}

DaemonFixture::~DaemonFixture() {
  StopDraining();
}

void DaemonFixture::StopDraining() {
  stop_drain_ = true;
  if (drain_.joinable()) drain_.join();
  stop_drain_ = false;
}

std::unique_ptr<Subprocess> DaemonFixture::Start(std::string* log) {
  StopDraining();
  ++starts_;
  auto daemon =
      std::make_unique<Subprocess>(std::vector<std::string>{MOECTLD_BIN, "--config", config_},
                                   dir_.File(fmt::format("moectld-{}.log", starts_)),
                                   std::vector<std::string>{"NOTIFY_SOCKET=" + notify_->path()});
  if (!notify_->WaitFor("READY=1", std::chrono::seconds(15))) {
    if (log) *log = daemon->Log();
    return nullptr;
  }
  drain_ = std::thread([this] {
    while (!stop_drain_.load()) {
      // No line starts with this: every datagram is read and dropped.
      notify_->WaitForPrefix("\x01", std::chrono::milliseconds(100));
    }
  });
  return daemon;
}

std::vector<std::string> EngineArgs(const DaemonFixture& daemon, const std::string& engine_id,
                                    uint64_t steps, int step_interval_ms) {
  return {MOE_ENGINE_BIN,
          "--config",
          std::string(MOE_SOURCE_DIR) + "/configs/engine.toml",
          "--scenario",
          std::string(MOE_SOURCE_DIR) + "/configs/scenarios/shift.toml",
          "--engine-id",
          engine_id,
          "--telemetry",
          daemon.telemetry(),
          "--commands",
          daemon.commands(),
          "--steps",
          std::to_string(steps),
          "--step-interval-ms",
          std::to_string(step_interval_ms),
          "--log-level",
          "info"};
}

namespace {

// Decision columns that never change once set (a later write may fill in a
// NULL one, never alter a set one); the others may move on (status, outcome,
// repeats) but a value once set never goes back to NULL.
const std::set<std::string> kFixedDecisionColumns = {
    "id",          "engine_id",     "created_ns",      "policy",         "layer",          "knob",
    "inputs_json", "proposal_json", "verdict",         "verdict_reason", "command_json",   "epoch",
    "sent_ns",     "acked_ns",      "applied_at_step", "predicted_gain", "prediction_json"};

std::string EpochKey(const SqlRow& row) {
  return row.at("engine_id").value_or("") + "/" + row.at("epoch").value_or("");
}

}  // namespace

Committed ReadCommitted(const std::string& db) {
  Committed c;
  auto steps =
      QueryRows(db,
                "SELECT engine_id, COUNT(*) AS n, MAX(step) AS max_step, MAX(id) AS max_id "
                "FROM steps GROUP BY engine_id");
  REQUIRE(steps.has_value());
  for (const SqlRow& r : *steps) {
    c.steps[*r.at("engine_id")] = {std::stoll(*r.at("n")), std::stoll(*r.at("max_step")),
                                   std::stoll(*r.at("max_id"))};
  }
  auto decisions = QueryRows(db, "SELECT * FROM decisions");
  REQUIRE(decisions.has_value());
  for (SqlRow& r : *decisions)
    c.decisions[std::stoll(*r.at("id"))] = std::move(r);
  auto epochs = QueryRows(db, "SELECT * FROM epochs");
  REQUIRE(epochs.has_value());
  for (SqlRow& r : *epochs)
    c.epochs[EpochKey(r)] = std::move(r);
  return c;
}

// Rows (or values) of `before` missing or changed in the file now; each is
// described in `*what`.
uint64_t CountLost(const std::string& db, const Committed& before, std::vector<std::string>* what) {
  uint64_t lost = 0;
  for (const auto& [engine, s] : before.steps) {
    auto now = QueryRows(db, fmt::format("SELECT COUNT(*) AS n, MAX(step) AS max_step FROM steps "
                                         "WHERE engine_id = '{}' AND id <= {}",
                                         engine, s.max_id));
    REQUIRE(now.has_value());
    const int64_t n = std::stoll(*now->front().at("n"));
    const int64_t max_step = std::stoll(now->front().at("max_step").value_or("0"));
    if (n != s.count || max_step != s.max_step) {
      lost += static_cast<uint64_t>(std::max<int64_t>(1, s.count - n));
      what->push_back(fmt::format("steps of {}: {} rows up to step {} before, {} up to {} after",
                                  engine, s.count, s.max_step, n, max_step));
    }
  }
  auto decisions = QueryRows(db, "SELECT * FROM decisions");
  REQUIRE(decisions.has_value());
  std::map<int64_t, SqlRow> after;
  for (SqlRow& r : *decisions)
    after[std::stoll(*r.at("id"))] = std::move(r);
  for (const auto& [id, row] : before.decisions) {
    auto it = after.find(id);
    if (it == after.end()) {
      ++lost;
      what->push_back(fmt::format("decision {} is gone", id));
      continue;
    }
    for (const auto& [column, value] : row) {
      if (!value) continue;
      const std::optional<std::string>& now = it->second[column];
      const bool fixed = kFixedDecisionColumns.count(column) > 0;
      if (!now || (fixed && *now != *value)) {
        ++lost;
        what->push_back(fmt::format("decision {} column {}: \"{}\" before, \"{}\" after", id,
                                    column, *value, now.value_or("NULL")));
      }
    }
  }
  auto epochs = QueryRows(db, "SELECT * FROM epochs");
  REQUIRE(epochs.has_value());
  std::map<std::string, SqlRow> epochs_after;
  for (SqlRow& r : *epochs)
    epochs_after[EpochKey(r)] = std::move(r);
  for (const auto& [key, row] : before.epochs) {
    auto it = epochs_after.find(key);
    if (it == epochs_after.end() || it->second != row) {
      ++lost;
      what->push_back(fmt::format("epoch {} is gone or was overwritten", key));
    }
  }
  return lost;
}

// (engine, epoch) pairs commanded by more than one decision.
std::vector<std::string> RepeatedEpochs(const std::string& db) {
  auto rows = QueryRows(db,
                        "SELECT engine_id, epoch, COUNT(*) AS n FROM decisions "
                        "WHERE sent_ns IS NOT NULL AND epoch IS NOT NULL "
                        "GROUP BY engine_id, epoch HAVING n > 1");
  REQUIRE(rows.has_value());
  std::vector<std::string> repeated;
  for (const SqlRow& r : *rows)
    repeated.push_back(
        fmt::format("{} epoch {} x{}", *r.at("engine_id"), *r.at("epoch"), *r.at("n")));
  return repeated;
}

int64_t MaxStep(const std::string& db, const std::string& engine) {
  return QueryInt(db, fmt::format("SELECT MAX(step) FROM steps WHERE engine_id = '{}'", engine), 0);
}

}  // namespace moe::testing
