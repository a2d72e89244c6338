// Load (issue 10, item 6): 8 engines at a fixed offered rate into one real
// moectld. Each engine is controller_bench's ingest engine (a SyntheticEngine
// of DeepSeek-V3's shape, 61 layers x 256 experts, on its own thread, over
// real ZeroMQ on loopback). Nothing may be lost: every step sent is stored,
// no engine drops telemetry, the store refuses nothing. The rates held are
// reported (docs/reliability.md), not asserted: the machine is shared.

#include <signal.h>

#include <fmt/format.h>
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <thread>

#include "ingest_engine.h"
#include "reliability/daemon_harness.h"
#include "reliability/reliability_result.h"

namespace moe {
namespace {

using moe::testing::DaemonFixture;
using moe::testing::HttpGet;
using moe::testing::Subprocess;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

double EnvOr(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtod(v, nullptr) : fallback;
}

void RunLoad(int num_engines, double rate, double run_seconds, const std::string& test_name) {
  constexpr double kRssBoundMb = 512;
  const bench::ModelShape shape;  // 61 x 256, top-8, 288 slots
  DaemonFixture fixture(moe::testing::DaemonOptions{.extra_toml = "", .log_level = "warn"});
  std::string log;
  std::unique_ptr<Subprocess> daemon = fixture.Start(&log);
  INFO(log);
  REQUIRE(daemon != nullptr);
  const double rss_before = moe::testing::RssMiB(daemon->pid());
  double rss_max = rss_before;

  const auto start = SteadyClock::now() + milliseconds(500);  // links connect first
  std::atomic<bool> close{false};
  std::atomic<int> finished{0};
  std::vector<bench::IngestEngineResult> results(static_cast<size_t>(num_engines));
  std::vector<std::thread> engines;
  for (int i = 0; i < num_engines; ++i) {
    engines.emplace_back(bench::RunIngestEngine, fmt::format("load-engine-{}", i), shape, 100 + i,
                         fixture.telemetry(), fixture.commands(), rate / num_engines, run_seconds,
                         start, &finished, &close, &results[static_cast<size_t>(i)]);
  }
  const uint64_t expected =
      static_cast<uint64_t>(num_engines) * static_cast<uint64_t>(rate / num_engines * run_seconds);

  // Until every step is stored, or no more come for 20 s once the engines
  // finished (a daemon slower than the offered rate works off its queues:
  // a backlog is not a loss), or 4 times the run and a minute more.
  double max_queue = 0;
  int64_t stored = 0, last_stored = -1;
  SteadyClock::time_point stored_at{}, finished_at{}, progress_at = SteadyClock::now();
  const auto give_up = start + seconds(static_cast<int>(4 * run_seconds) + 60);
  while (SteadyClock::now() < give_up) {
    std::this_thread::sleep_for(milliseconds(100));
    rss_max = std::max(rss_max, moe::testing::RssMiB(daemon->pid()));
    auto [status, metrics] = HttpGet(fixture.metrics_port(), "/metrics");
    if (status == 200) {
      max_queue = std::max(max_queue, moe::testing::MetricValue(metrics, "moectl_db_queue_depth"));
    }
    stored = moe::testing::QueryInt(fixture.db(), "SELECT COUNT(*) FROM steps", 0);
    if (stored != last_stored) {
      last_stored = stored;
      progress_at = SteadyClock::now();
    }
    if (finished.load() == num_engines && finished_at == SteadyClock::time_point{}) {
      finished_at = SteadyClock::now();
    }
    if (stored >= static_cast<int64_t>(expected)) {
      stored_at = SteadyClock::now();
      break;
    }
    if (finished_at != SteadyClock::time_point{} && SteadyClock::now() - progress_at > seconds(20))
      break;
  }
  std::this_thread::sleep_for(milliseconds(1500));  // the loop publishes its latest figures
  const std::string metrics = HttpGet(fixture.metrics_port(), "/metrics").second;
  const double refused = moe::testing::DbRefusedOrLost(metrics);
  const double received = moe::testing::MetricSum(metrics, "moectl_steps_total");
  const bool daemon_serving = daemon->running();
  close = true;
  for (std::thread& t : engines)
    t.join();
  uint64_t sent = 0, dropped = 0, commands = 0;
  bool engines_ok = true;
  for (const bench::IngestEngineResult& r : results) {
    INFO(r.status.ToString());
    CHECK(r.status.ok());
    engines_ok = engines_ok && r.status.ok();
    sent += r.sent;
    dropped += r.dropped;
    commands += r.commands;
  }
  // Every refusal reason, max_engines included; the family is there with no
  // sample while nothing was refused.
  REQUIRE(metrics.find("# TYPE moectl_messages_refused_total counter") != std::string::npos);
  const double messages_refused =
      std::max(0.0, moe::testing::MetricSum(metrics, "moectl_messages_refused_total"));
  const double malformed = moe::testing::MetricSum(metrics, "moectl_malformed_messages_total");
  CHECK(messages_refused == 0);
  CHECK(malformed == 0);
  const std::string daemon_log = daemon->Log();
  INFO("daemon log (end):\n"
       << daemon_log.substr(daemon_log.size() - std::min<size_t>(daemon_log.size(), 4000)));
  REQUIRE(daemon->Signal(SIGTERM));
  CHECK(daemon->Wait(seconds(60)) == std::optional<int>(0));
  stored = moe::testing::QueryInt(fixture.db(), "SELECT COUNT(*) FROM steps", 0);
  const int64_t per_engine_min = moe::testing::QueryInt(
      fixture.db(), "SELECT MIN(n) FROM (SELECT COUNT(*) AS n FROM steps GROUP BY engine_id)", 0);

  CHECK(sent == expected);
  CHECK(stored == static_cast<int64_t>(sent));  // nothing lost
  CHECK(dropped == 0);
  CHECK(refused == 0);
  CHECK(per_engine_min == static_cast<int64_t>(expected / num_engines));
  CHECK(daemon_serving);
  CHECK(rss_max <= kRssBoundMb);
  CHECK(moe::testing::IntegrityCheck(fixture.db()) == "ok");

  const double stored_s = stored_at == SteadyClock::time_point{}
                              ? 0
                              : std::chrono::duration<double>(stored_at - start).count();
  const double steps_per_s = stored_s > 0 ? static_cast<double>(stored) / stored_s : 0;
  const double tail_s =
      stored_at != SteadyClock::time_point{} && finished_at != SteadyClock::time_point{}
          ? std::chrono::duration<double>(stored_at - finished_at).count()
          : 0;
  moe::testing::ReliabilityResult result;
  result.attack = fmt::format("load: {} engines at {:.0f} steps/s into one moectld for {:.0f} s",
                              num_engines, rate, run_seconds);
  result.test = "tests/reliability/load_test.cc: " + test_name;
  result.tries = sent;
  result.refused = static_cast<uint64_t>(std::max(0.0, refused));
  result.committed_lost = sent - std::min<uint64_t>(sent, static_cast<uint64_t>(stored));
  result.daemon_serving = daemon_serving;
  result.engine_serving = engines_ok;
  result.rss_mb_before = rss_before;
  result.rss_mb_max = rss_max;
  result.rss_bound_mb = kRssBoundMb;
  result.notes = fmt::format(
      "{} x {} (top-{}) synthetic engines (bench/ingest_engine.cc); tries = steps sent; {} sent, "
      "{} received, {} stored, {} dropped by engines; held {:.0f} steps/s and {:.0f} layer rows/s "
      "from the first step until the last was stored ({:.2f} of the offered rate; the store "
      "finished {:.1f} s after the engines); queue peak {:.0f} writes",
      shape.num_layers, shape.num_experts, shape.top_k, sent, received, stored, dropped,
      steps_per_s, steps_per_s * shape.num_layers, steps_per_s / rate, tail_s, max_queue);
  result.figures = {{"engines", num_engines},
                    {"offered_steps_per_s", rate},
                    {"seconds", run_seconds},
                    {"steps_sent", sent},
                    {"steps_received", received},
                    {"steps_stored", stored},
                    {"stored_steps_per_s", steps_per_s},
                    {"stored_layer_rows_per_s", steps_per_s * shape.num_layers},
                    {"store_tail_s", tail_s},
                    {"max_queue", max_queue},
                    {"engine_drops", dropped},
                    {"commands_applied", commands}};
  CHECK(result.Write());
}

TEST_CASE("8 engines at a fixed rate into one moectld: every step stored", "[load]") {
  RunLoad(8, EnvOr("MOE_RELIABILITY_LOAD_RATE", 400), EnvOr("MOE_RELIABILITY_LOAD_SECONDS", 10),
          "8 engines at a fixed rate into one moectld: every step stored");
}

TEST_CASE("8 engines at 400 steps/s into one moectld for 60 s: every step stored", "[load][slow]") {
  RunLoad(8, 400, 60, "8 engines at 400 steps/s into one moectld for 60 s: every step stored");
}

}  // namespace
}  // namespace moe
