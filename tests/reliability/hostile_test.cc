// Hostile but well-formed messages against a live daemon (issue 10, item 6):
// a real moectld and a real moe-engine ("good") over loopback ZeroMQ, and a
// hostile peer played by the test with the telemetry library's encoder or raw
// ZeroMQ. For each attack: what was refused (the daemon's /metrics), whether
// the daemon kept serving the good engine (its steps keep being stored, the
// rows committed before are all still there), and the daemon's peak RSS
// (/proc/PID/status VmRSS, sampled every 10 ms) against a stated bound.
//
// The bounds are the daemon's RSS before the attack plus what the [limits]
// allow it to hold for one engine, with the default configuration: nothing
// for a refused Hello (no state is made from it); the window (window_mib = 64)
// plus the write queue's step records and the messages in flight for valid
// huge steps. The figures measured are in the JSON results.

#include <signal.h>
#include <sqlite3.h>
#include <unistd.h>

#include <fmt/format.h>
#include <httplib.h>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "moe/telemetry/codec.h"
#include "moe/telemetry/transport.h"
#include "moe_telemetry.pb.h"
#include "reliability/reliability_result.h"
#include "support/daemon_config.h"
#include "support/subprocess.h"
#include "support/temp_dir.h"

namespace moe {
namespace {

using moe::testing::ReliabilityResult;
using moe::testing::Subprocess;
using moe::testing::TempDir;
using std::chrono::milliseconds;
using std::chrono::seconds;
using SteadyClock = std::chrono::steady_clock;

constexpr const char* kFile = "tests/reliability/hostile_test.cc";

int PortOf(const std::string& endpoint) {
  return std::stoi(endpoint.substr(endpoint.rfind(':') + 1));
}

// The daemon's configuration: the shipped defaults for everything the attacks
// aim at ([limits], max_engines, the queue), short cadences for the test.
std::string HostileToml(const std::string& db, const std::string& telemetry,
                        const std::string& commands, int metrics_port) {
  moe::testing::DaemonConfig c;
  c.db = db;
  c.telemetry = telemetry;
  c.commands = commands;
  c.cadence = "300ms";
  c.window_steps = 64;
  c.progress_interval = "2s";
  c.tables = fmt::format(R"(
[metrics]
listen = "127.0.0.1:{}"
)",
                         metrics_port);
  return moe::testing::DaemonToml(c);
}

// Samples a process's VmRSS every 10 ms and keeps the largest.
class RssSampler {
 public:
  explicit RssSampler(pid_t pid) : pid_(pid), max_(moe::testing::RssMiB(pid)) {
    thread_ = std::thread([this] {
      while (!stop_.load()) {
        double now = moe::testing::RssMiB(pid_);
        double seen = max_.load();
        while (now > seen && !max_.compare_exchange_weak(seen, now)) {
        }
        std::this_thread::sleep_for(milliseconds(10));
      }
    });
  }
  ~RssSampler() { Stop(); }
  double Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return max_.load();
  }

 private:
  pid_t pid_;
  std::atomic<double> max_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// CPU seconds (user + system) the process has used.
double CpuSeconds(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  std::istringstream rest(text.substr(text.rfind(')') + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {  // fields 14 and 15: utime, stime
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// One SQL integer from the database (read-only; 0 when it cannot be read).
int64_t QueryInt(const std::string& db, const std::string& sql) {
  sqlite3* handle = nullptr;
  int64_t value = 0;
  if (sqlite3_open_v2(db.c_str(), &handle, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK) {
    sqlite3_busy_timeout(handle, 2000);
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(handle, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW) {
      value = sqlite3_column_int64(stmt, 0);
    }
    sqlite3_finalize(stmt);
  }
  sqlite3_close(handle);
  return value;
}

// The daemon, the good engine, and what the test reads of them.
class Rig {
 public:
  Rig()
      : telemetry_(moe::testing::FreeLoopbackEndpoint()),
        commands_(moe::testing::FreeLoopbackEndpoint()),
        port_(PortOf(moe::testing::FreeLoopbackEndpoint())),
        db_(dir_.File("moectl.db")),
        config_(dir_.Write("controller.toml", HostileToml(db_, telemetry_, commands_, port_))),
        notify_(dir_.File("notify.sock")) {
    StartDaemon();
    engine_ = std::make_unique<Subprocess>(
        std::vector<std::string>{
            MOE_ENGINE_BIN, "--config", std::string(MOE_SOURCE_DIR) + "/configs/engine.toml",
            "--scenario", std::string(MOE_SOURCE_DIR) + "/configs/scenarios/shift.toml",
            "--engine-id", "good", "--telemetry", telemetry_, "--commands", commands_, "--steps",
            "100000", "--step-interval-ms", "40", "--log-level", "info"},
        dir_.File("engine.log"));
    REQUIRE(AwaitGoodSteps(20, seconds(30)));
  }
  ~Rig() {
    if (engine_) {
      engine_->Signal(SIGTERM);
      engine_->Wait(seconds(10));
    }
    StopDaemon();
  }

  void StartDaemon() {
    daemon_ = std::make_unique<Subprocess>(
        std::vector<std::string>{MOECTLD_BIN, "--config", config_}, dir_.File("moectld.log"),
        std::vector<std::string>{"NOTIFY_SOCKET=" + notify_.path()});
    REQUIRE(notify_.WaitFor("READY=1", seconds(20)));
  }
  void StopDaemon() {
    if (!daemon_) return;
    daemon_->Signal(SIGTERM);
    daemon_->Wait(seconds(20));
    daemon_.reset();
  }

  pid_t daemon_pid() const { return daemon_->pid(); }
  bool daemon_running() const { return daemon_ && daemon_->running(); }
  bool engine_running() const { return engine_ && engine_->running(); }
  const std::string& telemetry() const { return telemetry_; }
  const std::string& commands() const { return commands_; }
  const std::string& db() const { return db_; }
  std::string daemon_log() const { return daemon_ ? daemon_->Log() : std::string(); }
  std::string engine_log() const { return engine_->Log(); }

  int64_t GoodSteps() const {
    return QueryInt(db_, "SELECT COUNT(*) FROM steps WHERE engine_id = 'good'");
  }
  int64_t LastStepId() const { return QueryInt(db_, "SELECT COALESCE(MAX(id), 0) FROM steps"); }
  // Waits until `more` good steps beyond the count now are stored.
  bool AwaitGoodSteps(int64_t more, seconds limit) const {
    const int64_t want = GoodSteps() + more;
    const auto deadline = SteadyClock::now() + limit;
    while (SteadyClock::now() < deadline) {
      if (GoodSteps() >= want) return true;
      std::this_thread::sleep_for(milliseconds(100));
    }
    return false;
  }

  // Samples of moectl_messages_refused_total by reason (absent: 0).
  double Refused(const std::string& reason) const {
    const std::string series = "moectl_messages_refused_total{reason=\"" + reason + "\"} ";
    const std::string text = Metrics();
    const size_t at = text.find(series);
    return at == std::string::npos ? 0 : std::stod(text.substr(at + series.size()));
  }
  double MetricValue(const std::string& series) const {
    const std::string text = Metrics();
    const size_t at = text.find("\n" + series + " ");
    return at == std::string::npos ? -1 : std::stod(text.substr(at + series.size() + 2));
  }
  // Polls until `done` (true) or `limit` (false).
  static bool Await(const std::function<bool()>& done, seconds limit) {
    const auto deadline = SteadyClock::now() + limit;
    while (SteadyClock::now() < deadline) {
      if (done()) return true;
      std::this_thread::sleep_for(milliseconds(100));
    }
    return done();
  }

 private:
  std::string Metrics() const {
    httplib::Client client("127.0.0.1", port_);
    client.set_connection_timeout(2, 0);
    client.set_read_timeout(10, 0);
    auto res = client.Get("/metrics");
    return res && res->status == 200 ? res->body : std::string();
  }

  TempDir dir_;
  std::string telemetry_;
  std::string commands_;
  int port_;
  std::string db_;
  std::string config_;
  moe::testing::NotifySocket notify_;
  std::unique_ptr<Subprocess> daemon_;
  std::unique_ptr<Subprocess> engine_;
};

// What every attack checks and reports once it has run.
struct Verdict {
  Rig& rig;
  int64_t steps_before = 0;
  int64_t last_id_before = 0;
  double rss_before = 0;

  explicit Verdict(Rig& r)
      : rig(r),
        steps_before(r.GoodSteps()),
        last_id_before(r.LastStepId()),
        rss_before(moe::testing::RssMiB(r.daemon_pid())) {}

  // The good engine's steps keep being stored; rows committed before the
  // attack all remain. Fills and writes the result.
  void Finish(ReliabilityResult result, double rss_max, double bound) {
    const bool serving = rig.AwaitGoodSteps(10, seconds(20));
    const int64_t kept =
        QueryInt(rig.db(), fmt::format("SELECT COUNT(*) FROM steps WHERE engine_id = 'good' AND "
                                       "id <= {}",
                                       last_id_before));
    result.committed_lost = static_cast<uint64_t>(std::max<int64_t>(0, steps_before - kept));
    result.daemon_serving = rig.daemon_running() && serving;
    result.engine_serving = rig.engine_running();
    result.rss_mb_before = rss_before;
    result.rss_mb_max = rss_max;
    result.rss_bound_mb = bound;
    INFO("daemon log:\n" << rig.daemon_log());
    INFO(result.ToJson().dump(2));
    CHECK(*result.committed_lost == 0);
    CHECK(serving);
    CHECK(rig.daemon_running());
    CHECK(rig.engine_running());
    CHECK(rss_max <= bound);
    CHECK(result.Write());
  }
};

// A hostile engine speaking through the telemetry library (its own id).
std::unique_ptr<telemetry::EngineLink> Hostile(const Rig& rig, const telemetry::Hello& hello) {
  telemetry::EngineLinkOptions o;
  o.engine_id = hello.engine_id;
  o.telemetry_endpoint = rig.telemetry();
  o.command_endpoint = rig.commands();
  o.linger = milliseconds(5000);
  o.send_queue = 100;
  auto link = telemetry::EngineLink::Connect(o, hello);
  REQUIRE(link.ok());
  return std::move(*link);
}

telemetry::Hello ShapeHello(const std::string& id, uint32_t layers, uint32_t experts,
                            uint32_t replicas = 0, uint32_t devices = 1) {
  telemetry::Hello h;
  h.engine_id = id;
  h.backend = "cpu";
  h.num_layers = layers;
  h.num_experts = experts;
  h.num_replicas = replicas;
  h.num_devices = devices;
  h.knobs.top_k = 2;
  h.knobs.capacity_factor = 1.0;
  return h;
}

// A step of `layers` layers matching the shape; counts of `value` each.
telemetry::StepRecord FullStep(const telemetry::Hello& h, uint32_t layers, uint32_t value,
                               uint64_t step) {
  telemetry::StepRecord r;
  r.engine_id = h.engine_id;
  r.step = step;
  r.timestamp_ns = 1'700'000'000'000'000'000 + static_cast<int64_t>(step);
  r.step_us = 1000;
  const uint32_t replicas = h.num_replicas > 0 ? h.num_replicas : h.num_experts;
  for (uint32_t l = 0; l < layers; ++l) {
    telemetry::LayerRecord layer;
    layer.layer = l;
    layer.num_tokens = 512;
    layer.num_token_slots = 1024;
    layer.expert_tokens.assign(h.num_experts, value);
    layer.expert_demand.assign(h.num_experts, value);
    layer.slot_tokens.assign(replicas, value);
    layer.device_tokens.assign(h.num_devices, value);
    layer.timing.device_expert_us.assign(h.num_devices, 1.5);
    layer.timing.total_us = 100;
    r.layers.push_back(std::move(layer));
  }
  return r;
}

// Publishes `n` copies of `step` (numbered); returns how many were queued.
uint64_t Flood(telemetry::EngineLink& link, telemetry::StepRecord step, int n) {
  uint64_t sent = 0;
  step.engine_id.clear();  // the link's own
  for (int i = 0; i < n; ++i) {
    step.step = static_cast<uint64_t>(i + 1);
    const uint64_t dropped = link.dropped();
    REQUIRE(link.Publish(step).ok());
    if (link.dropped() == dropped) ++sent;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return sent;
}

TEST_CASE("shape bomb: a Hello of 2^20 layers x 2^20 experts, then steps", "[hostile]") {
  Rig rig;
  Verdict v(rig);
  RssSampler rss(rig.daemon_pid());
  const telemetry::Hello bomb = ShapeHello("shape-bomb", 1u << 20, 1u << 20);
  auto link = Hostile(rig, bomb);
  const uint64_t steps = Flood(*link, FullStep(ShapeHello("x", 4, 1024), 4, 7, 1), 10);
  // Both Hellos (telemetry and command channel) and every step.
  const uint64_t tries = 2 + steps;
  CHECK(Rig::Await([&] { return rig.Refused("shape_budget") + rig.Refused("no_hello") >= tries; },
                   seconds(20)));
  const uint64_t refused =
      static_cast<uint64_t>(rig.Refused("shape_budget") + rig.Refused("no_hello"));
  CHECK(rig.Refused("shape_budget") == 2);
  CHECK(refused == tries);
  CHECK(rig.MetricValue("moectl_engines") == 1);  // no state for the bomb
  ReliabilityResult r;
  r.attack = "shape bomb";
  r.test = std::string(kFile) + ": shape bomb: a Hello of 2^20 layers x 2^20 experts, then steps";
  r.tries = tries;
  r.refused = refused;
  r.notes = "Hello refused by [limits] (shape_budget), its steps as no_hello; no state made";
  // Nothing is sized from a refused Hello: the bound is the RSS before plus
  // 32 MiB of allocator and ZeroMQ noise.
  v.Finish(r, rss.Stop(), v.rss_before + 32);
}

TEST_CASE("big shape: a Hello of 64 x 65,536 experts and 40 matching steps", "[hostile]") {
  Rig rig;
  Verdict v(rig);
  RssSampler rss(rig.daemon_pid());
  const telemetry::Hello big = ShapeHello("big-shape", 64, 65'536);
  auto link = Hostile(rig, big);
  // Every layer's served tokens of all 65,536 experts: about 4.2 MB each on
  // the wire. Encoded once and sent raw, so that the test's own CPU goes to
  // the daemon (decoding one costs it about 0.2 s here).
  telemetry::StepRecord step = FullStep(big, 64, 3, 1);
  for (telemetry::LayerRecord& l : step.layers) {
    l.expert_demand.clear();
    l.slot_tokens.clear();
    l.device_tokens.clear();
    l.timing.device_expert_us.clear();
  }
  zmq::context_t context;
  zmq::socket_t push(context, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 5000);
  push.connect(rig.telemetry());
  step.seq = 10;
  Result<std::string> wire = telemetry::Encode(step);
  REQUIRE(wire.ok());
  uint64_t steps = 0;
  for (int i = 0; i < 40; ++i) {
    REQUIRE(push.send(zmq::buffer(*wire), zmq::send_flags::none));
    ++steps;
  }
  const uint64_t tries = 2 + steps;
  CHECK(Rig::Await([&] { return rig.Refused("shape_budget") + rig.Refused("no_hello") >= tries; },
                   seconds(40)));
  const uint64_t refused =
      static_cast<uint64_t>(rig.Refused("shape_budget") + rig.Refused("no_hello"));
  CHECK(refused == tries);
  ReliabilityResult r;
  r.attack = "big shape";
  r.test = std::string(kFile) + ": big shape: a Hello of 64 x 65,536 experts and 40 matching steps";
  r.tries = tries;
  r.refused = refused;
  r.notes = "4,194,304 layer-experts > max_layer_experts 131,072: Hello refused, steps no_hello";
  // Each step is decoded (16 MiB of C++ vectors, 4 MB of protobuf) and then
  // dropped; ZeroMQ may hold many of the 4.2 MB frames while the daemon
  // decodes: before + 256 MiB.
  v.Finish(r, rss.Stop(), v.rss_before + 256);
}

TEST_CASE("big valid steps: 30 steps of the largest shape the default budget admits", "[hostile]") {
  Rig rig;
  Verdict v(rig);
  RssSampler rss(rig.daemon_pid());
  // 128 layers x 1024 experts, 4096 slots per layer on 64 devices; counts
  // above 2^28 take 5 bytes each on the wire: about 4 MB per step.
  const telemetry::Hello big = ShapeHello("big-steps", 128, 1024, 4096, 64);
  auto link = Hostile(rig, big);
  const telemetry::StepRecord step = FullStep(big, 128, (1u << 28) + 1, 1);
  Result<std::string> bytes = telemetry::Encode(step);
  REQUIRE(bytes.ok());
  const double step_mb = static_cast<double>(bytes->size()) / 1e6;
  const uint64_t sent = Flood(*link, step, 30);
  CHECK(Rig::Await(
      [&] {
        return QueryInt(rig.db(), "SELECT COUNT(*) FROM steps WHERE engine_id = 'big-steps'") +
                   static_cast<int64_t>(rig.MetricValue("moectl_db_rejected_rows_total")) >=
               static_cast<int64_t>(sent);
      },
      seconds(60)));
  const int64_t stored =
      QueryInt(rig.db(), "SELECT COUNT(*) FROM steps WHERE engine_id = 'big-steps'");
  ReliabilityResult r;
  r.attack = "big valid steps";
  r.test = std::string(kFile) +
           ": big valid steps: 30 steps of the largest shape the default budget admits";
  r.tries = sent;
  r.refused = 0;
  r.notes = fmt::format(
      "{:.1f} MB steps (128 x 1024 experts, 4096 slots, 64 devices) accepted and {} stored; the "
      "window holds at most window_mib = 64 of their figures",
      step_mb, stored);
  r.figures = {{"step_mb", step_mb}, {"stored", stored}};
  CHECK(stored >= 1);
  // Window (64 MiB) + a snapshot's copy of its demand (64 MiB) + decode and
  // encode buffers of a few steps in flight + the packed queue: before + 320.
  v.Finish(r, rss.Stop(), v.rss_before + 320);
}

TEST_CASE("knob-vector bomb: Hellos of new epochs, each with every layer's bias and placement",
          "[hostile]") {
  Rig rig;
  Verdict v(rig);
  RssSampler rss(rig.daemon_pid());
  // The largest shape the default budget admits, a bias and a placement for
  // every layer: 2.5 MiB of knob vectors per epoch once decoded.
  telemetry::Hello hello = ShapeHello("knob-bomb", 128, 1024, 4096, 64);
  hello.seq = 1;
  for (uint32_t l = 0; l < hello.num_layers; ++l) {
    telemetry::LayerKnobs lk;
    lk.layer = l;
    lk.knobs.expert_bias = std::vector<float>(1024, 0.01f * static_cast<float>(l % 7));
    std::vector<uint32_t> placement(4096);
    for (uint32_t s = 0; s < placement.size(); ++s)
      placement[s] = (s * 7 + l) % 1024;
    lk.knobs.phy2log = std::move(placement);
    hello.layer_knobs.push_back(std::move(lk));
  }
  Result<std::string> first = telemetry::Encode(hello);
  REQUIRE(first.ok());
  moe::telemetry::v1::Envelope envelope;
  REQUIRE(envelope.ParseFromString(*first));
  zmq::context_t context;
  zmq::socket_t push(context, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 5000);
  push.connect(rig.telemetry());
  // In batches of 25, each taken before the next is sent: what is measured
  // is what the daemon keeps, not ZeroMQ's queue of frames it has yet to
  // read (see the big-shape attack for that).
  constexpr int kHellos = 150;
  constexpr int kBatch = 25;
  for (int i = 0; i < kHellos; ++i) {
    envelope.mutable_hello()->set_epoch(static_cast<uint64_t>(i + 1));
    envelope.mutable_hello()->set_seq(static_cast<uint64_t>(i + 1));
    const std::string wire = envelope.SerializeAsString();
    REQUIRE(push.send(zmq::buffer(wire), zmq::send_flags::none));
    if ((i + 1) % kBatch == 0) {
      // Each is taken (the shape is within budget): the engine's epoch follows.
      REQUIRE(
          Rig::Await([&] { return rig.MetricValue("moectl_epoch{engine=\"knob-bomb\"}") == i + 1; },
                     seconds(30)));
    }
  }
  ReliabilityResult r;
  r.attack = "knob-vector bomb";
  r.test = std::string(kFile) +
           ": knob-vector bomb: Hellos of new epochs, each with every layer's bias and placement";
  r.tries = kHellos;
  r.refused = 0;
  r.notes = fmt::format(
      "{} Hellos of 1.5 MB (128 x 1024 biases, 128 x 4096 slots) taken; the epoch ledger keeps "
      "at most window_mib = 64 of their knob vectors (2.5 MiB each: {} epochs' worth would be "
      "{} MiB), the engines row none",
      kHellos, kHellos, kHellos * 5 / 2);
  // The ledger (64 MiB) + the Hello in force and its copies while taken
  // (2.5 MiB each) + up to a batch of 1.5 MB frames queued: before + 160 MiB
  // (without the ledger's byte bound: 375 MiB of vectors).
  v.Finish(r, rss.Stop(), v.rss_before + 160);
}

TEST_CASE("layer-index bomb: steps with layer 2^20 - 1", "[hostile]") {
  Rig rig;
  Verdict v(rig);
  RssSampler rss(rig.daemon_pid());
  const telemetry::Hello hello = ShapeHello("layer-bomb", 2, 8);
  auto link = Hostile(rig, hello);
  CHECK(Rig::Await([&] { return rig.MetricValue("moectl_engines") == 2; }, seconds(10)));
  telemetry::StepRecord step = FullStep(hello, 1, 5, 1);
  step.layers[0].layer = (1u << 20) - 1;
  const uint64_t tries = Flood(*link, step, 20);
  CHECK(Rig::Await([&] { return rig.Refused("layer_index") >= tries; }, seconds(20)));
  const uint64_t refused = static_cast<uint64_t>(rig.Refused("layer_index"));
  CHECK(refused == tries);
  CHECK(QueryInt(rig.db(), "SELECT COUNT(*) FROM steps WHERE engine_id = 'layer-bomb'") == 0);
  ReliabilityResult r;
  r.attack = "layer-index bomb";
  r.test = std::string(kFile) + ": layer-index bomb: steps with layer 2^20 - 1";
  r.tries = tries;
  r.refused = refused;
  r.notes = "layer 1,048,575 >= the Hello's 2 layers: refused (layer_index), nothing stored";
  v.Finish(r, rss.Stop(), v.rss_before + 32);
}

TEST_CASE("epoch bomb: epochs near 2^64 and beyond kMaxEpoch", "[hostile]") {
  Rig rig;
  Verdict v(rig);
  RssSampler rss(rig.daemon_pid());
  const telemetry::Hello hello = ShapeHello("epoch-bomb", 2, 8);
  auto link = Hostile(rig, hello);
  CHECK(Rig::Await([&] { return rig.MetricValue("moectl_engines") == 2; }, seconds(10)));
  const double decode_before = rig.Refused("decode");

  // Raw protobuf: the library's encoder refuses what its decoder would.
  zmq::context_t context;
  zmq::socket_t push(context, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 2000);
  push.connect(rig.telemetry());
  uint64_t tries = 0;
  for (uint64_t epoch : {~uint64_t{0} - 1, ~uint64_t{0}, (uint64_t{1} << 63) + 5}) {
    moe::telemetry::v1::Envelope envelope;
    envelope.set_schema_version(telemetry::kSchemaVersion);
    moe::telemetry::v1::StepRecord* s = envelope.mutable_step();
    s->set_engine_id("epoch-bomb");
    s->set_seq(100 + tries);
    s->set_step(100 + tries);
    s->set_timestamp_ns(1'700'000'000'000'000'000);
    s->set_epoch(epoch);
    const std::string wire = envelope.SerializeAsString();
    REQUIRE(push.send(zmq::buffer(wire), zmq::send_flags::none));
    ++tries;
  }
  // Within the codec's range, too near its end for the controller.
  telemetry::StepRecord step = FullStep(hello, 2, 5, 1);
  step.epoch = telemetry::kMaxEpoch;
  tries += Flood(*link, step, 5);
  telemetry::Hello late = hello;
  late.epoch = telemetry::kMaxEpoch - 1;
  REQUIRE(link->PublishHello(late).ok());
  ++tries;
  CHECK(Rig::Await(
      [&] { return rig.Refused("decode") - decode_before + rig.Refused("epoch_range") >= tries; },
      seconds(20)));
  const uint64_t refused =
      static_cast<uint64_t>(rig.Refused("decode") - decode_before + rig.Refused("epoch_range"));
  CHECK(refused == tries);
  CHECK(rig.Refused("epoch_range") == 6);
  ReliabilityResult r;
  r.attack = "epoch bomb";
  r.test = std::string(kFile) + ": epoch bomb: epochs near 2^64 and beyond kMaxEpoch";
  r.tries = tries;
  r.refused = refused;
  r.notes = "epochs above 2^62 fail to decode; epochs within 2^32 of it are refused (epoch_range)";
  v.Finish(r, rss.Stop(), v.rss_before + 32);
}

TEST_CASE("id flood: 20,000 Hellos of distinct engine ids", "[hostile]") {
  Rig rig;
  Verdict v(rig);
  const double cpu_idle_before = [&] {
    const double c0 = CpuSeconds(rig.daemon_pid());
    std::this_thread::sleep_for(seconds(2));
    return (CpuSeconds(rig.daemon_pid()) - c0) / 2.0;
  }();
  RssSampler rss(rig.daemon_pid());
  zmq::context_t context;
  zmq::socket_t push(context, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 5000);
  push.connect(rig.telemetry());
  constexpr int kIds = 20'000;
  for (int i = 0; i < kIds; ++i) {
    telemetry::Hello h = ShapeHello(fmt::format("flood-{}", i), 2, 8);
    h.seq = 1;
    Result<std::string> wire = telemetry::Encode(h);
    REQUIRE(wire.ok());
    REQUIRE(push.send(zmq::buffer(*wire), zmq::send_flags::none));
  }
  // max_engines = 1024 (the default): the good engine and 1023 of the flood.
  CHECK(Rig::Await([&] { return rig.Refused("max_engines") >= kIds - 1023; }, seconds(60)));
  const uint64_t refused = static_cast<uint64_t>(rig.Refused("max_engines"));
  CHECK(refused == kIds - 1023);
  CHECK(rig.MetricValue("moectl_engines") == 1024);
  // Afterwards the daemon is back to what it used before the flood.
  std::this_thread::sleep_for(seconds(1));
  const double c0 = CpuSeconds(rig.daemon_pid());
  std::this_thread::sleep_for(seconds(3));
  const double cpu_after = (CpuSeconds(rig.daemon_pid()) - c0) / 3.0;
  CHECK(cpu_after <= cpu_idle_before + 0.15);
  ReliabilityResult r;
  r.attack = "id flood";
  r.test = std::string(kFile) + ": id flood: 20,000 Hellos of distinct engine ids";
  r.tries = kIds;
  r.refused = refused;
  r.notes = fmt::format(
      "max_engines = 1024 tracked, the rest dropped (max_engines); daemon CPU {:.0f}% of a core "
      "before, {:.0f}% after (1023 idle engines tracked until engine_expiry)",
      100 * cpu_idle_before, 100 * cpu_after);
  r.figures = {{"cpu_before", cpu_idle_before}, {"cpu_after", cpu_after}};
  // 1024 small engine states, the link's per-id sequence trackers, the rows
  // queued: before + 64 MiB.
  v.Finish(r, rss.Stop(), v.rss_before + 64);
}

TEST_CASE("route hijack: a second peer claims the good engine's id on the command channel",
          "[hostile]") {
  Rig rig;
  Verdict v(rig);
  RssSampler rss(rig.daemon_pid());
  const int64_t acked_before = QueryInt(
      rig.db(), "SELECT COUNT(*) FROM decisions WHERE engine_id = 'good' AND acked_ns IS NOT NULL");
  const int64_t last_decision = QueryInt(rig.db(), "SELECT COALESCE(MAX(id), 0) FROM decisions");
  zmq::context_t context;
  constexpr int kPeers = 5;
  std::vector<zmq::socket_t> rogues;
  for (int i = 0; i < kPeers; ++i) {
    zmq::socket_t dealer(context, zmq::socket_type::dealer);
    dealer.set(zmq::sockopt::routing_id, "good");
    dealer.set(zmq::sockopt::linger, 0);
    dealer.connect(rig.commands());
    telemetry::Hello h = ShapeHello("good", 4, 16, 20, 4);
    Result<std::string> wire = telemetry::Encode(h);
    REQUIRE(wire.ok());
    REQUIRE(dealer.send(zmq::buffer(*wire), zmq::send_flags::dontwait));
    rogues.push_back(std::move(dealer));
  }
  // Commands keep going to the real engine: new decisions get its acks, and
  // no rogue receives anything.
  CHECK(Rig::Await(
      [&] {
        return QueryInt(rig.db(), fmt::format("SELECT COUNT(*) FROM decisions WHERE engine_id = "
                                              "'good' AND acked_ns IS NOT NULL AND id > {}",
                                              last_decision)) >= 1;
      },
      seconds(30)));
  uint64_t stolen = 0;
  for (zmq::socket_t& dealer : rogues) {
    zmq::message_t m;
    while (dealer.recv(m, zmq::recv_flags::dontwait))
      ++stolen;
  }
  CHECK(stolen == 0);
  const int64_t acked_after = QueryInt(
      rig.db(), "SELECT COUNT(*) FROM decisions WHERE engine_id = 'good' AND acked_ns IS NOT NULL");
  ReliabilityResult r;
  r.attack = "route hijack";
  r.test = std::string(kFile) +
           ": route hijack: a second peer claims the good engine's id on the command channel";
  r.tries = kPeers;
  r.refused = stolen == 0 ? kPeers : 0;
  r.notes = fmt::format(
      "{} peers with routing id 'good' said Hello as 'good': the live engine kept its route, {} "
      "commands reached them; the real engine acked {} more decisions (also "
      "tests/telemetry/transport_test.cc: a connected engine's command route cannot be taken over)",
      kPeers, stolen, acked_after - acked_before);
  v.Finish(r, rss.Stop(), v.rss_before + 32);
}

TEST_CASE("rogue controller: a process bound to the command port while the daemon is down",
          "[hostile]") {
  Rig rig;
  rig.StopDaemon();
  zmq::context_t context;
  zmq::socket_t router(context, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.set(zmq::sockopt::rcvtimeo, 200);
  router.bind(rig.commands());
  // The engine reconnects and says Hello on the command channel.
  std::optional<telemetry::Hello> hello;
  std::string route;
  const auto deadline = SteadyClock::now() + seconds(20);
  while (!hello && SteadyClock::now() < deadline) {
    zmq::message_t id, payload;
    if (!router.recv(id, zmq::recv_flags::none)) continue;
    if (!router.recv(payload, zmq::recv_flags::none)) continue;
    Result<telemetry::Message> m =
        telemetry::Decode(std::string_view(payload.data<char>(), payload.size()));
    if (m.ok() && std::holds_alternative<telemetry::Hello>(*m)) {
      hello = std::get<telemetry::Hello>(*m);
      route = id.to_string();
    }
  }
  REQUIRE(hello.has_value());
  // Below and above the engine's [command_bounds] (capacity_factor in [0.25, 64]).
  std::vector<double> values = {0.01, 1000.0};
  std::vector<telemetry::Ack> acks;
  for (size_t i = 0; i < values.size(); ++i) {
    telemetry::Command c;
    c.engine_id = "good";
    c.epoch = hello->epoch + 1 + i;
    c.issued_ns = 1'700'000'000'000'000'000;
    c.knobs.capacity_factor = values[i];
    c.reason = "rogue controller";
    Result<std::string> wire = telemetry::Encode(c);
    REQUIRE(wire.ok());
    router.send(zmq::buffer(route), zmq::send_flags::sndmore);
    router.send(zmq::buffer(*wire), zmq::send_flags::none);
  }
  const auto ack_deadline = SteadyClock::now() + seconds(20);
  while (acks.size() < values.size() && SteadyClock::now() < ack_deadline) {
    zmq::message_t id, payload;
    if (!router.recv(id, zmq::recv_flags::none)) continue;
    if (!router.recv(payload, zmq::recv_flags::none)) continue;
    Result<telemetry::Message> m =
        telemetry::Decode(std::string_view(payload.data<char>(), payload.size()));
    if (m.ok() && std::holds_alternative<telemetry::Ack>(*m)) {
      acks.push_back(std::get<telemetry::Ack>(*m));
    }
  }
  REQUIRE(acks.size() == values.size());
  uint64_t refused = 0;
  for (const telemetry::Ack& a : acks) {
    INFO(a.error);
    CHECK_FALSE(a.applied);
    if (!a.applied) ++refused;
  }
  router.close();
  // The daemon comes back on the same ports and serves the engine again.
  rig.StartDaemon();
  Verdict v(rig);
  RssSampler rss(rig.daemon_pid());
  ReliabilityResult r;
  r.attack = "rogue controller";
  r.test = std::string(kFile) +
           ": rogue controller: a process bound to the command port while the daemon is down";
  r.tries = values.size();
  r.refused = refused;
  r.notes = fmt::format(
      "capacity_factor 0.01 and 1000 commanded outside the engine's [command_bounds] [0.25, 64]: "
      "refused in the ack ('{}'); without CURVE the bounds are the defence, with CURVE the engine "
      "takes commands only from the controller's key",
      acks.empty() ? std::string() : acks.front().error);
  v.Finish(r, rss.Stop(), v.rss_before + 32);
}

}  // namespace
}  // namespace moe
