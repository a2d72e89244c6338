// Shared by the reliability tests: a real moectld on loopback with its own
// temporary directory, config, NOTIFY_SOCKET and metrics port, the moe-engine
// command line, and raw SQLite access to the daemon's file (read-only while
// the daemon writes, as an operator's sqlite3 would).

#ifndef MOE_TESTS_RELIABILITY_DAEMON_HARNESS_H_
#define MOE_TESTS_RELIABILITY_DAEMON_HARNESS_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace moe::testing {

// One row of a query: column name to value (std::nullopt for NULL), as text.
using SqlRow = std::map<std::string, std::optional<std::string>>;

// Runs `sql` on the file at `path` through a fresh connection (read-only when
// `read_only`; busy timeout 5 s) and returns its rows; std::nullopt and
// `*error` set when SQLite refuses.
std::optional<std::vector<SqlRow>> QueryRows(const std::string& path, const std::string& sql,
                                             bool read_only = true, std::string* error = nullptr);
// The first column of the first row as an integer (`fallback` if none or NULL).
int64_t QueryInt(const std::string& path, const std::string& sql, int64_t fallback = -1);
// `PRAGMA integrity_check` on a read-write connection (which also recovers a
// WAL left by a killed writer): "ok" when the file is whole.
std::string IntegrityCheck(const std::string& path);

// GET http://127.0.0.1:port/path: status and body (-1 when no answer).
std::pair<int, std::string> HttpGet(int port, const std::string& path);

// Polls `done` every 50 ms until it holds or `timeout` passes.
bool WaitUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout);

// The value of the sample whose line starts with `series` in Prometheus text,
// or -1 when absent.
double MetricValue(const std::string& text, const std::string& series);
// The sum of every sample of family `name` (any labels); -1 when it has none.
double MetricSum(const std::string& text, const std::string& name);
// Writes refused or lost by the daemon's store, from its /metrics text:
// moectl_db_rejected_rows_total plus every moectl_db_lost_writes_total
// sample; -1 when either family is absent.
double DbRefusedOrLost(const std::string& metrics_text);

struct DaemonOptions {
  std::string extra_toml;  // appended to the config (extra tables)
  std::string log_level = "info";
};

// A moectld on fixed loopback endpoints (kept across restarts, so engines
// reconnect), its database in a temporary directory.
class DaemonFixture {
 public:
  explicit DaemonFixture(DaemonOptions options = {});
  ~DaemonFixture();
  DaemonFixture(const DaemonFixture&) = delete;
  DaemonFixture& operator=(const DaemonFixture&) = delete;

  const TempDir& dir() const { return dir_; }
  const std::string& db() const { return db_; }
  const std::string& telemetry() const { return telemetry_; }
  const std::string& commands() const { return commands_; }
  int metrics_port() const { return metrics_port_; }

  // Starts moectld and waits up to 15 s for READY=1; nullptr if it did not
  // come (its log is then in `*log`). From then on a thread of the fixture
  // reads (and discards) what the daemon sends to its NOTIFY_SOCKET, as
  // systemd would: sd_notify blocks the daemon's loop once the socket's
  // queue is full.
  std::unique_ptr<Subprocess> Start(std::string* log = nullptr);

 private:
  DaemonOptions options_;
  TempDir dir_;
  std::string db_;
  std::string telemetry_;
  std::string commands_;
  int metrics_port_ = 0;
  std::string config_;
  void StopDraining();

  std::unique_ptr<NotifySocket> notify_;
  int starts_ = 0;
  std::thread drain_;
  std::atomic<bool> stop_drain_{false};
};

// moe-engine's command line: the demo model and the shift scenario, flat out
// (`step_interval_ms` 0) for `steps` steps (0: until stopped).
std::vector<std::string> EngineArgs(const DaemonFixture& daemon, const std::string& engine_id,
                                    uint64_t steps, int step_interval_ms = 0);

// What a read-only connection sees committed (taken just before an attack).
struct Committed {
  struct Steps {
    int64_t count = 0;     // rows with id <= max_id
    int64_t max_step = 0;  // of those
    int64_t max_id = 0;
  };
  std::map<std::string, Steps> steps;    // by engine
  std::map<int64_t, SqlRow> decisions;   // by id
  std::map<std::string, SqlRow> epochs;  // by "engine/epoch"
};
// Reads the steps per engine, every decision and every epochs row of `db`
// (read-only; a failed query fails the test).
Committed ReadCommitted(const std::string& db);
// The rows, or set values, of `before` missing or changed in `db` now (a
// decision's status and outcome may move on; a set value never goes back to
// NULL; its identity, command and epoch never change; epochs rows never
// change); each one is described in `*what`.
uint64_t CountLost(const std::string& db, const Committed& before, std::vector<std::string>* what);
// (engine, epoch) pairs commanded (sent) by more than one decision.
std::vector<std::string> RepeatedEpochs(const std::string& db);
// The highest step stored for `engine` (0 when none).
int64_t MaxStep(const std::string& db, const std::string& engine);

}  // namespace moe::testing

#endif  // MOE_TESTS_RELIABILITY_DAEMON_HARNESS_H_
