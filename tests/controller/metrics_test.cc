// /metrics and /healthz from the inside: the controller's snapshot after real
// messages over loopback ZeroMQ (FakeClock), the [metrics] config keys, the
// health verdict, and the HTTP server over real loopback HTTP.

#include <httplib.h>
#include <catch2/catch.hpp>

#include <thread>

#include "controller_config.h"
#include "metrics_server.h"
#include "moe/controller/controller.h"
#include "moe/telemetry/transport.h"
#include "support/fake_clock.h"
#include "support/temp_dir.h"

namespace moe::controller {
namespace {

using std::chrono::milliseconds;
constexpr int64_t kMs = 1'000'000;

// Polls until `done` or about 10 s of socket waits.
void PollUntil(Controller& c, const std::function<bool()>& done) {
  for (int i = 0; i < 1000 && !done(); ++i)
    REQUIRE(c.Poll(milliseconds(10)).ok());
  REQUIRE(done());
}

const EngineMetrics* Find(const MetricsSnapshot& s, const std::string& id) {
  for (const EngineMetrics& e : s.engines) {
    if (e.engine_id == id) return &e;
  }
  return nullptr;
}

TEST_CASE("The snapshot counts steps, drops, decisions and the latency of each engine",
          "[metrics]") {
  moe::testing::TempDir dir;
  moe::testing::FakeClock clock;
  ControllerOptions o;
  o.telemetry_endpoint = "tcp://127.0.0.1:*";
  o.command_endpoint = "tcp://127.0.0.1:*";
  o.db_path = dir.File("moectl.db");
  o.cadence_ms = 100;
  o.outcome_steps = 4;
  o.window_steps = 32;
  o.progress_interval_ms = 0;
  o.capacity.min_steps = 4;
  o.guard.min_steps_in_epoch = 4;
  o.bias_enabled = false;
  o.replication_enabled = false;
  o.db_flush_interval_ms = 20;
  auto controller = Controller::Create(o, &clock);
  REQUIRE(controller.ok());
  Controller& c = **controller;

  telemetry::EngineLinkOptions link;
  link.engine_id = "e1";
  link.telemetry_endpoint = c.telemetry_endpoint();
  link.command_endpoint = c.command_endpoint();
  telemetry::Hello hello;
  hello.engine_id = "e1";
  hello.backend = "cpu";
  hello.num_layers = 2;
  hello.num_experts = 4;
  hello.knobs.top_k = 2;
  hello.knobs.capacity_factor = 1.0;
  auto engine = telemetry::EngineLink::Connect(link, hello);
  REQUIRE(engine.ok());
  PollUntil(c, [&] { return c.stats().engines == 1 && c.stats().messages >= 2; });

  // Before any step: the engine is listed, its counters are zero.
  MetricsSnapshot before = c.metrics(false);
  REQUIRE(before.engines.size() == 1);
  CHECK(before.engines[0].steps == 0);
  CHECK(before.engines[0].knobs.at("capacity_factor") == 1.0);
  CHECK(before.engines[0].knobs.at("top_k") == 2);

  // 8 steps: 1000 token-slots per layer, 100 dropped, 3 ms critical path.
  for (int i = 0; i < 8; ++i) {
    clock.Advance(10 * kMs);
    telemetry::StepRecord r;
    r.engine_id = "e1";
    r.step = static_cast<uint64_t>(i + 1);
    r.timestamp_ns = clock.NowNanos();
    r.step_us = 3000;
    for (uint32_t layer = 0; layer < 2; ++layer) {
      telemetry::LayerRecord l;
      l.layer = layer;
      l.num_tokens = 500;
      l.num_token_slots = 1000;
      l.dropped = 100;
      l.overflowed = 100;
      l.expert_tokens = {400, 200, 200, 200};
      l.timing.total_us = 1500;
      r.layers.push_back(l);
    }
    REQUIRE((*engine)->Publish(r).ok());
  }
  PollUntil(c, [&] { return c.stats().steps >= 8; });
  clock.Advance(o.cadence_ms * kMs);
  PollUntil(c, [&] { return c.stats().decisions >= 1; });

  MetricsSnapshot s = c.metrics(true);
  const EngineMetrics* e = Find(s, "e1");
  REQUIRE(e != nullptr);
  CHECK(e->steps == 8);
  CHECK(e->token_slots == 16000);
  CHECK(e->dropped_token_slots == 1600);
  CHECK(e->drop_ratio == Approx(0.1));
  CHECK(e->max_over_mean == Approx(1.6));
  CHECK(e->critical_path.count() == 8);
  CHECK(e->critical_path.sum() == Approx(8 * 0.003));
  // 3 ms falls in the bucket that ends at 50 us * 2.5^5 = 4.88 ms and in every later one.
  const std::vector<uint64_t> cumulative = e->critical_path.CumulativeCounts();
  const std::vector<double>& bounds = e->critical_path.upper_bounds();
  for (size_t i = 0; i < bounds.size(); ++i) {
    CHECK(cumulative[i] == (bounds[i] >= 0.003 ? 8u : 0u));
  }
  // The capacity policy raised capacity_factor under a new epoch.
  CHECK(e->decisions.at({"capacity", "accepted"}) == 1);
  CHECK(e->decision_in_flight);
  CHECK(s.commands_sent == 1);
  REQUIRE(e->layers.size() == 2);
  CHECK(e->layers[1].drop_ratio == Approx(0.1));
  CHECK(e->layers[1].latency_seconds == Approx(0.0015));
  CHECK(c.metrics(false).engines[0].layers.empty());

  Result<std::string> text = RenderMetrics(s, true, 0.1);
  REQUIRE(text.ok());
  CHECK(text->find("moectl_steps_total{engine=\"e1\"} 8\n") != std::string::npos);
  CHECK(text->find("moectl_dropped_token_slots_total{engine=\"e1\"} 1600\n") != std::string::npos);
  CHECK(text->find("moectl_decisions_total{engine=\"e1\",policy=\"capacity\",verdict=\"accepted\"} "
                   "1\n") != std::string::npos);
  CHECK(text->find("moectl_knob_value{engine=\"e1\",knob=\"capacity_factor\"} 1\n") !=
        std::string::npos);
  CHECK(text->find("moectl_step_critical_path_seconds_count{engine=\"e1\"} 8\n") !=
        std::string::npos);
  const std::string layer_series = "moectl_layer_drop_ratio{engine=\"e1\",layer=\"1\"} ";
  const size_t at = text->find(layer_series);
  REQUIRE(at != std::string::npos);
  CHECK(std::stod(text->substr(at + layer_series.size())) == Approx(0.1));
  CHECK(text->find("moectl_db_writable 1\n") != std::string::npos);
  CHECK(text->find("moectl_db_lost_writes_total{reason=\"abandoned_at_close\"} 0\n") !=
        std::string::npos);
  CHECK(text->find("moectl_db_checkpoints_total ") != std::string::npos);
  CHECK(RenderMetrics(s, false, 0.1)->find("moectl_layer_") == std::string::npos);
  REQUIRE(c.Shutdown().ok());
}

TEST_CASE("[metrics] keys are read and checked", "[metrics][config]") {
  moe::testing::TempDir dir;
  auto ok = LoadControllerConfig(dir.Write(
      "c.toml",
      "[metrics]\nlisten = \"127.0.0.1:9464\"\nper_layer = true\nloop_timeout = \"3s\"\n"));
  INFO(ok.status().ToString());
  REQUIRE(ok.ok());
  CHECK(ok->metrics.listen == "127.0.0.1:9464");
  CHECK(ok->metrics.per_layer);
  CHECK(ok->metrics.loop_timeout_ms == 3000);
  auto off = LoadControllerConfig(dir.Write("off.toml", "[metrics]\nlisten = \"\"\n"));
  REQUIRE(off.ok());
  CHECK(off->metrics.listen.empty());

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"listen = \"9464\"", "host:port"},
      {"listen = \"localhost:http\"", "[1, 65535]"},
      {"listen = \"127.0.0.1:70000\"", "[1, 65535]"},
      {"listen = \"::1:9464\"", "brackets"},
      {"listen = \":9464\"", "host is missing"},
      {"listen = 9464", "listen"},
      {"loop_timeout = \"1ms\"", "loop_timeout"},
      {"per_layer = \"yes\"", "per_layer"},
      {"listn = \"127.0.0.1:9464\"", "listn"},
  };
  for (const auto& [line, expected] : bad) {
    auto refused = LoadControllerConfig(dir.Write("bad.toml", "[metrics]\n" + line + "\n"));
    INFO(line);
    REQUIRE_FALSE(refused.ok());
    INFO(refused.status().message());
    CHECK(refused.status().message().find(expected) != std::string::npos);
    CHECK(refused.status().message().find("bad.toml:2:") != std::string::npos);
  }
  CHECK(CheckListenAddress("[::1]:9464").ok());
  CHECK(CheckListenAddress("metrics.example:9464").ok());
}

TEST_CASE("Health: ok only with a fresh snapshot and a database that takes writes", "[metrics]") {
  using std::chrono::seconds;
  CHECK_FALSE(CheckHealth(nullptr, seconds(0), seconds(5)).ok);
  MetricsSnapshot s;
  Health fresh = CheckHealth(&s, seconds(1), seconds(5));
  CHECK(fresh.ok);
  CHECK(fresh.reason == "ok");
  Health stale = CheckHealth(&s, seconds(7), seconds(5));
  CHECK_FALSE(stale.ok);
  CHECK(stale.reason.find("has not run for 7.0 s") != std::string::npos);
  s.db_failing = true;
  s.db_pending = 12;
  s.db_last_error = "database is locked";
  Health db = CheckHealth(&s, seconds(1), seconds(5));
  CHECK_FALSE(db.ok);
  CHECK(db.reason.find("database does not accept writes (12 pending): database is locked") !=
        std::string::npos);
}

// A port that was free a moment ago.
int FreePort() {
  const std::string endpoint = moe::testing::FreeLoopbackEndpoint();  // tcp://127.0.0.1:N
  return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

TEST_CASE("The server answers /metrics and /healthz over loopback HTTP", "[metrics][http]") {
  MetricsOptions o;
  const int port = FreePort();
  o.listen = "127.0.0.1:" + std::to_string(port);
  o.loop_timeout_ms = 300;
  auto server = MetricsServer::Start(o);
  INFO(server.status().ToString());
  REQUIRE(server.ok());
  CHECK((*server)->address() == o.listen);
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(5, 0);

  auto early = client.Get("/healthz");
  REQUIRE(early);
  CHECK(early->status == 503);
  CHECK(early->body.find("has not run yet") != std::string::npos);
  REQUIRE(client.Get("/metrics"));
  CHECK(client.Get("/metrics")->status == 503);

  MetricsSnapshot s;
  EngineMetrics e;
  e.engine_id = "e1";
  e.steps = 5;
  s.engines.push_back(e);
  (*server)->Publish(s);
  auto health = client.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  CHECK(health->body == "ok\n");
  auto metrics = client.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->status == 200);
  CHECK(metrics->get_header_value("Content-Type").find("version=0.0.4") != std::string::npos);
  CHECK(metrics->body.find("moectl_steps_total{engine=\"e1\"} 5\n") != std::string::npos);
  CHECK(metrics->body.find("moectl_loop_age_seconds ") != std::string::npos);
  CHECK(client.Get("/nothing-here")->status == 404);

  // The loop stops publishing: /healthz says so once loop_timeout has passed.
  std::this_thread::sleep_for(milliseconds(500));
  auto hung = client.Get("/healthz");
  REQUIRE(hung);
  CHECK(hung->status == 503);
  CHECK(hung->body.find("has not run for") != std::string::npos);
  (*server)->Publish(s);
  CHECK(client.Get("/healthz")->status == 200);

  // The same address again is in use; a bad one is refused before binding.
  auto second = MetricsServer::Start(o);
  REQUIRE_FALSE(second.ok());
  CHECK(second.status().code() == StatusCode::kUnavailable);
  MetricsOptions bad;
  bad.listen = "127.0.0.1";
  auto refused = MetricsServer::Start(bad);
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.status().code() == StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace moe::controller
