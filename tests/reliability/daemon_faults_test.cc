// Storage faults at the daemon level (issue 10, item 6): a real moectld with a
// moe-engine streaming flat out, while
//   - another connection holds the database's write lock (BEGIN EXCLUSIVE),
//   - the disk is full: the daemon's file-size limit (RLIMIT_FSIZE, set on its
//     pid with prlimit, SIGXFSZ ignored) drops under the database's size, so
//     every write past it fails as on a full disk,
//   - another moectl database is renamed over the live file.
// Each time the daemon keeps running, keeps serving /metrics and (while the
// condition lasts) answers /healthz with 503 and why; afterwards it recovers,
// every row committed before is still there and every step the engine sent
// lands in the database.

#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <filesystem>
#include <functional>
#include <set>
#include <thread>

#include "moe/common/clock.h"
#include "moe/storage/store.h"
#include "reliability/daemon_harness.h"
#include "reliability/reliability_result.h"

namespace moe {
namespace {

using moe::testing::DaemonFixture;
using moe::testing::HttpGet;
using moe::testing::QueryInt;
using moe::testing::Subprocess;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr uint64_t kEngineSteps = 400;
constexpr double kRssBoundMb = 256;
constexpr auto kFaultLasts = seconds(8);  // the 503 shows after the 2 s busy timeout and a flush

// What happened while the fault lasted.
struct FaultSeen {
  bool health_503 = false;    // /healthz answered 503 at least once
  std::string health_reason;  // its body
  bool metrics_served = true;
  bool daemon_running = true;
  bool engine_running = true;
};

// Polls /healthz and /metrics for `lasts`, noting what they answer.
void Watch(const DaemonFixture& fixture, Subprocess* daemon, Subprocess* engine,
           SteadyClock::duration lasts, FaultSeen* seen, double* rss_max) {
  const auto until = SteadyClock::now() + lasts;
  while (SteadyClock::now() < until) {
    auto [status, body] = HttpGet(fixture.metrics_port(), "/healthz");
    if (status == 503 && !seen->health_503) {
      seen->health_503 = true;
      seen->health_reason = body;
    }
    seen->metrics_served =
        seen->metrics_served && HttpGet(fixture.metrics_port(), "/metrics").first == 200;
    seen->daemon_running = seen->daemon_running && daemon->running();
    // The engine may finish its steps meanwhile; it must not die.
    if (!engine->running())
      seen->engine_running = engine->Wait(milliseconds(0)) == std::optional<int>(0);
    *rss_max = std::max(*rss_max, moe::testing::RssMiB(daemon->pid()));
    std::this_thread::sleep_for(milliseconds(100));
  }
}

struct FaultCase {
  std::string attack;
  std::string test_name;
  // Creates the condition, lets it last (calling `watch`), and ends it.
  std::function<void(DaemonFixture&, Subprocess& daemon, const std::function<void()>& watch)>
      inflict;
  // Whether /healthz must turn 503 while it lasts.
  bool expect_503 = true;
  // Database files whose steps together must hold every step sent (the path
  // itself for an empty name or none); the first one must hold every row
  // committed before.
  std::vector<std::string> files;
  // Updates of decisions left in a replaced file cannot land in the new one
  // (counted as lost, reason unmatched_update): allowed, and only those.
  bool allow_unmatched_updates = false;
  std::string notes;
};

void RunFault(FaultCase c) {
  DaemonFixture fixture;
  const std::string& db = fixture.db();
  std::string log;
  std::unique_ptr<Subprocess> daemon = fixture.Start(&log);
  INFO(log);
  REQUIRE(daemon != nullptr);
  REQUIRE(moe::testing::WaitUntil(
      [&] { return HttpGet(fixture.metrics_port(), "/healthz").first == 200; }, seconds(10)));
  const double rss_before = moe::testing::RssMiB(daemon->pid());
  double rss_max = rss_before;

  const std::string engine_id = "fault-engine";
  Subprocess engine(moe::testing::EngineArgs(fixture, engine_id, kEngineSteps),
                    fixture.dir().File("engine.log"));
  REQUIRE(moe::testing::WaitUntil([&] { return moe::testing::MaxStep(db, engine_id) >= 40; },
                                  seconds(30)));
  const moe::testing::Committed before = moe::testing::ReadCommitted(db);

  FaultSeen seen;
  c.inflict(fixture, *daemon,
            [&] { Watch(fixture, daemon.get(), &engine, kFaultLasts, &seen, &rss_max); });
  INFO("during the fault /healthz said: " << seen.health_reason);
  if (c.expect_503) {
    CHECK(seen.health_503);
    CHECK(seen.health_reason.find("database does not accept writes") != std::string::npos);
  }
  CHECK(seen.metrics_served);
  CHECK(seen.daemon_running);
  CHECK(seen.engine_running);

  // Recovered: healthy again, the engine done, every step it sent stored.
  const bool healthy = moe::testing::WaitUntil(
      [&] { return HttpGet(fixture.metrics_port(), "/healthz").first == 200; }, seconds(30));
  CHECK(healthy);
  std::optional<int> engine_rc = engine.Wait(seconds(90));
  INFO("engine log:\n" << engine.Log());
  CHECK(engine_rc == std::optional<int>(0));
  if (c.files.empty()) c.files.push_back(db);
  for (std::string& f : c.files) {
    if (f.empty()) f = db;  // the file at the daemon's path
  }
  std::set<int64_t> stored;
  const bool all_stored = moe::testing::WaitUntil(
      [&] {
        stored.clear();
        for (const std::string& f : c.files) {
          auto rows = moe::testing::QueryRows(
              f, fmt::format("SELECT DISTINCT step FROM steps WHERE engine_id = '{}'", engine_id));
          if (!rows) return false;
          for (const moe::testing::SqlRow& r : *rows)
            stored.insert(std::stoll(*r.at("step")));
        }
        return stored.size() == kEngineSteps;
      },
      seconds(30));
  CHECK(all_stored);
  CHECK(stored.size() == kEngineSteps);
  std::string metrics = HttpGet(fixture.metrics_port(), "/metrics").second;
  const double refused = moe::testing::DbRefusedOrLost(metrics);
  const double write_errors = moe::testing::MetricValue(metrics, "moectl_db_write_errors_total");
  const double replaced = moe::testing::MetricValue(metrics, "moectl_db_file_replaced_total");
  const double unmatched = moe::testing::MetricValue(
      metrics, "moectl_db_lost_writes_total{reason=\"unmatched_update\"}");
  REQUIRE(refused >= 0);
  if (c.allow_unmatched_updates) {
    CHECK(refused == unmatched);
  } else {
    CHECK(refused == 0);
  }
  rss_max = std::max(rss_max, moe::testing::RssMiB(daemon->pid()));
  const bool daemon_serving =
      seen.daemon_running && seen.metrics_served && healthy && daemon->running();
  REQUIRE(daemon->Signal(SIGTERM));
  std::optional<int> daemon_rc = daemon->Wait(seconds(20));
  INFO("daemon log:\n" << daemon->Log());
  CHECK(daemon_rc == std::optional<int>(0));

  for (const std::string& f : c.files) {
    INFO(f);
    CHECK(moe::testing::IntegrityCheck(f) == "ok");
  }
  std::vector<std::string> what;
  const uint64_t lost = moe::testing::CountLost(c.files.front(), before, &what);
  for (const std::string& w : what)
    UNSCOPED_INFO(w);
  CHECK(lost == 0);
  CHECK(rss_max <= kRssBoundMb);

  moe::testing::ReliabilityResult result;
  result.attack = c.attack;
  result.test = "tests/reliability/daemon_faults_test.cc: " + c.test_name;
  result.tries = 1;
  result.refused = static_cast<uint64_t>(std::max(0.0, refused));
  result.committed_lost = lost;
  result.daemon_serving = daemon_serving;
  result.engine_serving = seen.engine_running && engine_rc == std::optional<int>(0);
  result.rss_mb_before = rss_before;
  result.rss_mb_max = rss_max;
  result.rss_bound_mb = kRssBoundMb;
  result.notes = fmt::format(
      "{}; /healthz during it: {}; afterwards {} of {} steps stored, {} write attempts failed "
      "(retried), file replaced {} times; {} committed step rows and {} decisions checked{}",
      c.notes,
      seen.health_503 ? "503 (" + seen.health_reason.substr(0, seen.health_reason.find('\n')) + ")"
                      : std::string("200 throughout"),
      stored.size(), kEngineSteps, write_errors, replaced,
      before.steps.count(engine_id) ? before.steps.at(engine_id).count : 0, before.decisions.size(),
      refused > 0 ? fmt::format("; refused = {} updates of decisions left in the old file "
                                "(counted as lost writes, reason unmatched_update)",
                                refused)
                  : std::string());
  result.figures = {{"write_errors", write_errors},
                    {"steps_stored", stored.size()},
                    {"steps_sent", kEngineSteps},
                    {"fault_seconds", std::chrono::duration<double>(kFaultLasts).count()}};
  CHECK(result.Write());
}

TEST_CASE("a database locked by another connection: the daemon waits, then stores everything",
          "[faults][locked]") {
  FaultCase c;
  c.attack = "locked database: another connection holds the write lock";
  c.test_name = "a database locked by another connection: the daemon waits, then stores everything";
  c.notes = "BEGIN EXCLUSIVE from another connection for 8 s (longer than the 2 s busy timeout)";
  c.inflict = [](DaemonFixture& fixture, Subprocess&, const std::function<void()>& watch) {
    sqlite3* lock = nullptr;
    REQUIRE(sqlite3_open(fixture.db().c_str(), &lock) == SQLITE_OK);
    sqlite3_busy_timeout(lock, 10'000);
    REQUIRE(sqlite3_exec(lock, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK);
    watch();
    CHECK(sqlite3_exec(lock, "ROLLBACK", nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(lock);
  };
  RunFault(std::move(c));
}

TEST_CASE("a full disk: the daemon keeps serving, then stores everything once there is room",
          "[faults][disk_full]") {
  // Ignored signals stay ignored across exec: the daemon gets EFBIG from a
  // write past its file-size limit instead of being killed by SIGXFSZ.
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction previous {};
  REQUIRE(sigaction(SIGXFSZ, &ignore, &previous) == 0);
  FaultCase c;
  c.attack = "disk full: no write may extend the database or its WAL";
  c.test_name = "a full disk: the daemon keeps serving, then stores everything once there is room";
  c.notes =
      "the daemon's RLIMIT_FSIZE set to 4 KiB for 8 s (prlimit on its pid; SIGXFSZ ignored), so "
      "every write past 4 KiB of any file fails (EFBIG) as on a full disk; SQLite's own "
      "max_page_count limit is per connection and cannot be set on the daemon's from outside";
  c.inflict = [](DaemonFixture&, Subprocess& daemon, const std::function<void()>& watch) {
    rlimit full{4096, RLIM_INFINITY};
    REQUIRE(prlimit(daemon.pid(), RLIMIT_FSIZE, &full, nullptr) == 0);
    watch();
    rlimit room{RLIM_INFINITY, RLIM_INFINITY};
    CHECK(prlimit(daemon.pid(), RLIMIT_FSIZE, &room, nullptr) == 0);
  };
  RunFault(std::move(c));
  sigaction(SIGXFSZ, &previous, nullptr);
}

TEST_CASE("a database renamed over the live one: the daemon reopens the path, nothing lost",
          "[faults][replaced]") {
  moe::testing::TempDir spare;
  const std::string other = spare.File("other.db");
  const std::string old_link = spare.File("old.db");
  {
    // The replacement: another (empty) moectl database.
    storage::StoreOptions o;
    o.path = other;
    auto store = storage::Store::Open(o, SystemClock());
    REQUIRE(store.ok());
    REQUIRE((*store)->Close().ok());
  }
  FaultCase c;
  c.attack = "database file replaced: another moectl database renamed over the live one";
  c.test_name = "a database renamed over the live one: the daemon reopens the path, nothing lost";
  c.notes = "`mv other.db moectl.db` while the engine streams; the old file kept by a hard link";
  c.expect_503 = false;  // the daemon reopens the path at once
  c.allow_unmatched_updates = true;
  c.files = {old_link, ""};
  c.inflict = [&](DaemonFixture& fixture, Subprocess&, const std::function<void()>& watch) {
    std::filesystem::create_hard_link(fixture.db(), old_link);
    std::filesystem::rename(other, fixture.db());
    watch();
    const std::string metrics = HttpGet(fixture.metrics_port(), "/metrics").second;
    CHECK(moe::testing::MetricValue(metrics, "moectl_db_file_replaced_total") == 1);
  };
  RunFault(std::move(c));
}

}  // namespace
}  // namespace moe
