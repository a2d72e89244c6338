// Crash loop (issue 10, item 6): while moe-engine processes stream flat out,
// moectld is killed with SIGKILL at seeded random points and restarted, many
// times. After each kill: the file is whole (PRAGMA integrity_check), every
// row committed before the kill is still there with the same values, no
// (engine, epoch) was commanded twice, and after the restart no decision of
// the killed run is left "sent" or "acked". The engines never stop serving.

#include <signal.h>

#include <fmt/format.h>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <random>
#include <regex>
#include <set>
#include <thread>

#include "reliability/daemon_harness.h"
#include "reliability/reliability_result.h"

namespace moe {
namespace {

using moe::testing::Committed;
using moe::testing::CountLost;
using moe::testing::DaemonFixture;
using moe::testing::MaxStep;
using moe::testing::QueryInt;
using moe::testing::QueryRows;
using moe::testing::ReadCommitted;
using moe::testing::RepeatedEpochs;
using moe::testing::SqlRow;
using moe::testing::Subprocess;
using std::chrono::milliseconds;
using std::chrono::seconds;

uint64_t SeedFromEnv() {
  const char* seed = std::getenv("MOE_RELIABILITY_SEED");
  return seed != nullptr ? std::strtoull(seed, nullptr, 10) : 20261202;
}

void RunCrashLoop(int num_kills, const std::string& test_name) {
  constexpr int kNumEngines = 2;
  constexpr double kRssBoundMb = 256;
  const uint64_t seed = SeedFromEnv();
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> run_ms(150, 1500);

  DaemonFixture fixture;
  const std::string& db = fixture.db();
  std::string log;
  std::unique_ptr<Subprocess> daemon = fixture.Start(&log);
  INFO(log);
  REQUIRE(daemon != nullptr);
  const double rss_before = moe::testing::RssMiB(daemon->pid());
  double rss_max = rss_before;

  std::vector<std::unique_ptr<Subprocess>> engines;
  std::vector<std::string> engine_ids;
  for (int i = 0; i < kNumEngines; ++i) {
    engine_ids.push_back(fmt::format("crash-engine-{}", i));
    engines.push_back(
        std::make_unique<Subprocess>(moe::testing::EngineArgs(fixture, engine_ids.back(), 0),
                                     fixture.dir().File(engine_ids.back() + ".log")));
  }
  for (const std::string& id : engine_ids) {
    INFO(id);
    REQUIRE(moe::testing::WaitUntil([&] { return MaxStep(db, id) > 0; }, seconds(20)));
  }

  uint64_t committed_lost = 0, decisions_checked = 0, closed_unknown = 0, in_flight_at_kill = 0;
  uint64_t steps_checked = 0, db_lost = 0;
  bool engines_serving = true, daemon_serving = true;
  std::vector<std::string> problems;
  for (int kill = 0; kill < num_kills; ++kill) {
    INFO("kill " << kill << " (seed " << seed << ")");
    std::this_thread::sleep_for(milliseconds(run_ms(rng)));
    rss_max = std::max(rss_max, moe::testing::RssMiB(daemon->pid()));
    std::string metrics;
    REQUIRE(moe::testing::WaitUntil(
        [&] {
          auto [status, body] = moe::testing::HttpGet(fixture.metrics_port(), "/metrics");
          metrics = body;
          return status == 200;
        },
        seconds(5)));
    const double refused = moe::testing::DbRefusedOrLost(metrics);
    REQUIRE(refused >= 0);
    db_lost += static_cast<uint64_t>(refused);
    const Committed before = ReadCommitted(db);
    REQUIRE(daemon->Signal(SIGKILL));
    REQUIRE(daemon->Wait(seconds(10)) == std::optional<int>(128 + SIGKILL));

    // The file as the kill left it: whole, nothing committed lost.
    REQUIRE(moe::testing::IntegrityCheck(db) == "ok");
    std::vector<std::string> what;
    const uint64_t lost = CountLost(db, before, &what);
    for (const std::string& w : what)
      problems.push_back(fmt::format("kill {}: {}", kill, w));
    committed_lost += lost;
    CHECK(lost == 0);
    decisions_checked += before.decisions.size();
    for (const auto& [engine, s] : before.steps)
      steps_checked += static_cast<uint64_t>(s.count);
    const int64_t last_decision = QueryInt(db, "SELECT COALESCE(MAX(id), 0) FROM decisions", 0);
    const std::string in_flight_sql =
        fmt::format("SELECT COUNT(*) FROM decisions WHERE status IN ('sent', 'acked') AND id <= {}",
                    last_decision);
    const int64_t in_flight = QueryInt(db, in_flight_sql, 0);
    in_flight_at_kill += static_cast<uint64_t>(in_flight);
    const int64_t unknown_before =
        QueryInt(db, "SELECT COUNT(*) FROM decisions WHERE status = 'unknown'", 0);
    std::map<std::string, int64_t> steps_at_kill;
    for (const std::string& id : engine_ids)
      steps_at_kill[id] = MaxStep(db, id);

    // The engines keep serving while no daemon runs.
    for (auto& e : engines)
      engines_serving = engines_serving && e->running();

    daemon = fixture.Start(&log);
    INFO(log);
    REQUIRE(daemon != nullptr);
    // Settled: nothing of the killed run left in flight, every engine's
    // steps stored again past where they were, no epoch commanded twice.
    const bool settled =
        moe::testing::WaitUntil([&] { return QueryInt(db, in_flight_sql, 1) == 0; }, seconds(10));
    CHECK(settled);
    if (!settled) problems.push_back(fmt::format("kill {}: decisions left in flight", kill));
    closed_unknown += static_cast<uint64_t>(std::max<int64_t>(
        0, QueryInt(db, "SELECT COUNT(*) FROM decisions WHERE status = 'unknown'", 0) -
               unknown_before));
    for (const std::string& id : engine_ids) {
      INFO(id);
      const bool grew =
          moe::testing::WaitUntil([&] { return MaxStep(db, id) > steps_at_kill[id]; }, seconds(20));
      CHECK(grew);
      engines_serving = engines_serving && grew;
    }
    const std::vector<std::string> repeated = RepeatedEpochs(db);
    CHECK(repeated.empty());
    for (const std::string& r : repeated)
      problems.push_back(fmt::format("kill {}: epoch commanded twice: {}", kill, r));
    daemon_serving = daemon_serving && daemon->running();
  }
  for (auto& e : engines) {
    engines_serving = engines_serving && e->running();
    e->Signal(SIGTERM);
  }
  for (auto& e : engines) {
    std::optional<int> rc = e->Wait(seconds(15));
    CHECK(rc == std::optional<int>(0));
    INFO(e->Log());
  }
  // The engines' own view: every epoch they accepted came once, in order.
  uint64_t epochs_accepted = 0;
  for (auto& e : engines) {
    const std::string engine_log = e->Log();
    const std::regex accepted("command epoch ([0-9]+) accepted");
    uint64_t last = 0;
    for (auto it = std::sregex_iterator(engine_log.begin(), engine_log.end(), accepted);
         it != std::sregex_iterator(); ++it) {
      const uint64_t epoch = std::stoull((*it)[1].str());
      if (epoch <= last) {
        problems.push_back(fmt::format("an engine accepted epoch {} after {}", epoch, last));
      }
      last = std::max(last, epoch);
      ++epochs_accepted;
    }
  }
  CHECK(epochs_accepted > 0);
  rss_max = std::max(rss_max, moe::testing::RssMiB(daemon->pid()));
  REQUIRE(daemon->Signal(SIGTERM));
  CHECK(daemon->Wait(seconds(20)) == std::optional<int>(0));
  CHECK(moe::testing::IntegrityCheck(db) == "ok");
  CHECK(RepeatedEpochs(db).empty());
  const int64_t decisions = QueryInt(db, "SELECT COUNT(*) FROM decisions", 0);
  const int64_t commanded =
      QueryInt(db, "SELECT COUNT(*) FROM decisions WHERE sent_ns IS NOT NULL", 0);
  const int64_t steps = QueryInt(db, "SELECT COUNT(*) FROM steps", 0);
  CHECK(engines_serving);
  CHECK(db_lost == 0);
  CHECK(rss_max <= kRssBoundMb);
  for (const std::string& p : problems)
    UNSCOPED_INFO(p);
  CHECK(problems.empty());

  moe::testing::ReliabilityResult result;
  result.attack = fmt::format("crash loop: SIGKILL of moectld under load, {} kills", num_kills);
  result.test = "tests/reliability/crash_loop_test.cc: " + test_name;
  result.tries = static_cast<uint64_t>(num_kills);
  result.refused = db_lost;
  result.committed_lost = committed_lost;
  result.daemon_serving = daemon_serving;
  result.engine_serving = engines_serving;
  result.rss_mb_before = rss_before;
  result.rss_mb_max = rss_max;
  result.rss_bound_mb = kRssBoundMb;
  result.notes = fmt::format(
      "{} moe-engine processes flat out; kill after 150-1500 ms of each run (seed {}); checked "
      "after each kill: integrity_check ok, {} committed step rows and {} decision rows (all "
      "non-null fields) and every epochs row still there; {} decisions in flight at a kill, all "
      "closed as unknown on restart ({} closed); no (engine, epoch) commanded twice ({} commands "
      "in {} decisions, {} steps stored) and the engines accepted {} epochs, each once and in "
      "order; refused = writes the store refused or lost "
      "(moectl_db_rejected_rows_total + moectl_db_lost_writes_total), summed over the runs",
      kNumEngines, seed, steps_checked, decisions_checked, in_flight_at_kill, closed_unknown,
      commanded, decisions, steps, epochs_accepted);
  if (!problems.empty()) result.notes += "; PROBLEMS: " + problems.front();
  result.figures = {{"seed", seed},
                    {"decisions", decisions},
                    {"commands_sent", commanded},
                    {"in_flight_at_kill", in_flight_at_kill},
                    {"closed_unknown", closed_unknown},
                    {"steps_stored", steps},
                    {"epochs_accepted_by_engines", epochs_accepted}};
  CHECK(result.Write());
}

TEST_CASE("moectld killed at random points under load loses nothing committed", "[crash]") {
  RunCrashLoop(10, "moectld killed at random points under load loses nothing committed");
}

TEST_CASE("moectld killed 50 times under load loses nothing committed", "[crash][slow]") {
  RunCrashLoop(50, "moectld killed 50 times under load loses nothing committed");
}

}  // namespace
}  // namespace moe
