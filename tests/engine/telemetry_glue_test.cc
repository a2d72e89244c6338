// DESIGN.md, "Telemetry (per step, per layer)": every field the engine reports
// reaches the wire. Engine LayerStats -> MakeStepRecord -> protobuf and back.

#include <atomic>
#include <chrono>
#include <thread>
#include <variant>

#include "moe/telemetry/codec.h"
#include "moe/telemetry/transport.h"
#include "telemetry_glue.h"
#include "test_util.h"

namespace moe::engine {
namespace {

using testing::MakeEngine;
using testing::RandomTokens;
using testing::SmallOptions;

TEST_CASE("A step's telemetry carries every per-layer field end to end", "[telemetry]") {
  Options o = SmallOptions();
  o.model.num_layers = 2;
  o.parallel.num_devices = 2;
  o.parallel.num_replicas = 10;  // two replicas of experts 0 and 1
  o.knobs.top_k = 3;
  o.knobs.top_p = 0.5;            // a real K histogram
  o.knobs.capacity_factor = 0.5;  // overflow for sure
  o.knobs.overflow_policy = OverflowPolicy::kReroute;
  o.quality_probe_tokens = 3;
  o.quality_probe_every = 1;
  auto engine = MakeEngine(o);
  const int num_tokens = 64;
  const std::vector<float> x = RandomTokens(num_tokens, o.model.hidden, 21);
  auto stats = engine->Step({x.data(), num_tokens, {1.0, 2.0}});
  REQUIRE(stats.ok());

  const telemetry::StepRecord r = engine_app::MakeStepRecord(*stats, "engine-7", 12345);
  CHECK(r.engine_id == "engine-7");
  CHECK(r.step == stats->step);
  CHECK(r.epoch == stats->epoch);
  CHECK(r.timestamp_ns == 12345);
  CHECK(r.timing_on_device == stats->timing_on_device);
  CHECK(r.step_us == stats->step_us);
  REQUIRE(r.layers.size() == 2);
  for (size_t i = 0; i < r.layers.size(); ++i) {
    const LayerStats& l = stats->layers[i];
    const telemetry::LayerRecord& lr = r.layers[i];
    CHECK(lr.layer == l.layer);
    CHECK(lr.num_tokens == num_tokens);
    CHECK(lr.num_token_slots == l.num_token_slots);
    CHECK(lr.expert_tokens.size() == o.model.num_experts);
    CHECK(lr.expert_tokens == l.expert_tokens);
    CHECK(lr.expert_demand == l.expert_demand);
    CHECK(lr.capacity == l.capacity);
    CHECK(lr.capacity > 0);
    CHECK(lr.routed_on_device == l.routed_on_device);
    CHECK(lr.expert_rows == l.expert_rows);
    CHECK(lr.host_waits == l.host_waits);
    CHECK(lr.slot_tokens.size() == 10);
    CHECK(lr.slot_tokens == l.slot_tokens);
    CHECK(lr.device_tokens.size() == 2);
    CHECK(lr.device_tokens == l.device_tokens);
    CHECK(lr.overflowed == l.overflowed);
    CHECK(lr.rerouted == l.rerouted);
    CHECK(lr.dropped == l.dropped);
    CHECK(lr.k_histogram == l.k_histogram);
    CHECK(lr.router_entropy == l.router_entropy);
    CHECK(lr.gate_mass == l.gate_mass);
    REQUIRE(lr.quality_error.has_value());
    CHECK(lr.quality_error == l.quality_error);
    CHECK(lr.timing.router_us == l.router_us);
    CHECK(lr.timing.dispatch_us == l.dispatch_us);
    CHECK(lr.timing.expert_us == l.expert_us);
    CHECK(lr.timing.combine_us == l.combine_us);
    CHECK(lr.timing.all_to_all_us == l.all_to_all_us);
    CHECK(lr.timing.total_us == l.total_us);
    CHECK(lr.timing.device_expert_us.size() == 2);
    CHECK(lr.timing.device_expert_us == l.device_expert_us);
  }
  // The stats are not trivially zero, so the comparisons above mean something.
  CHECK(stats->layers[0].overflowed > 0);
  CHECK(stats->layers[0].k_histogram.size() == 4);

  // Through the wire codec and back.
  auto bytes = telemetry::Encode(r);
  INFO(bytes.status().ToString());
  REQUIRE(bytes.ok());
  auto decoded = telemetry::Decode(*bytes);
  REQUIRE(decoded.ok());
  REQUIRE(std::holds_alternative<telemetry::StepRecord>(*decoded));
  CHECK(std::get<telemetry::StepRecord>(*decoded) == r);
}

TEST_CASE("A step that moved expert weights reports the move on the wire", "[telemetry]") {
  Options o = SmallOptions();
  o.parallel.num_devices = 2;
  o.parallel.num_replicas = 10;
  auto engine = MakeEngine(o);
  KnobUpdate move;
  move.epoch = 1;
  move.all_layers.phy2log = std::vector<uint32_t>{0, 1, 2, 3, 4, 5, 6, 7, 7, 6};
  REQUIRE(engine->Submit(move).ok());
  const int num_tokens = 16;
  const std::vector<float> x = RandomTokens(num_tokens, o.model.hidden, 22);
  auto stats = engine->Step({x.data(), num_tokens, {}});
  REQUIRE(stats.ok());
  REQUIRE(stats->placement_moved_bytes > 0);

  const telemetry::StepRecord r = engine_app::MakeStepRecord(*stats, "engine-7", 1);
  CHECK(r.placement_moved_bytes == stats->placement_moved_bytes);
  CHECK(r.placement_copy_us == stats->placement_copy_us);
  CHECK(r.placement_move_us == stats->placement_move_us);
  CHECK(r.placement_copy_us > 0);
  auto bytes = telemetry::Encode(r);
  REQUIRE(bytes.ok());
  auto decoded = telemetry::Decode(*bytes);
  REQUIRE(decoded.ok());
  REQUIRE(std::holds_alternative<telemetry::StepRecord>(*decoded));
  CHECK(std::get<telemetry::StepRecord>(*decoded) == r);
}

TEST_CASE("The Hello carries the knobs of layers that differ from layer 0", "[telemetry]") {
  Options o = SmallOptions();
  o.model.num_layers = 3;
  auto engine = MakeEngine(o);
  KnobUpdate u;
  u.epoch = 1;
  KnobPatch layer2;
  layer2.expert_bias = std::vector<float>{0.05f, 0, 0, 0, 0, 0, 0, -0.05f};
  layer2.availability_weight = 0.5;  // a scalar that differs shows too
  layer2.overflow_policy = OverflowPolicy::kReroute;
  u.layers.push_back({2, layer2});
  REQUIRE(engine->Submit(u).ok());
  const std::vector<float> x = RandomTokens(4, o.model.hidden, 3);
  REQUIRE(engine->Step({x.data(), 4, {}}).ok());

  engine_app::AppOptions app;
  const telemetry::Hello hello = engine_app::MakeHello(*engine, app, 1);
  REQUIRE(hello.knobs.expert_bias.has_value());
  CHECK(*hello.knobs.expert_bias == std::vector<float>(8, 0.0f));  // layer 0
  REQUIRE(hello.layer_knobs.size() == 1);                          // layer 1 equals layer 0
  CHECK(hello.layer_knobs[0].layer == 2);
  CHECK(hello.layer_knobs[0].knobs.expert_bias == layer2.expert_bias);
  CHECK(hello.layer_knobs[0].knobs.availability_weight == 0.5);
  CHECK(hello.layer_knobs[0].knobs.overflow_policy == telemetry::OverflowPolicy::kReroute);
  CHECK_FALSE(hello.layer_knobs[0].knobs.top_k.has_value());  // only what differs
  CHECK_FALSE(hello.layer_knobs[0].knobs.shortlist.has_value());
  // And it survives the wire.
  auto bytes = telemetry::Encode(hello);
  REQUIRE(bytes.ok());
  auto decoded = telemetry::Decode(*bytes);
  REQUIRE(decoded.ok());
  CHECK(std::get<telemetry::Hello>(*decoded) == hello);
}

TEST_CASE("The Hello is re-sent periodically and at once on a new epoch", "[telemetry]") {
  constexpr int64_t kSecond = 1'000'000'000;
  engine_app::HelloTicker ticker(5 * kSecond, /*epoch=*/0, /*now_ns=*/0);
  CHECK_FALSE(ticker.Due(0, 1 * kSecond));
  CHECK_FALSE(ticker.Due(0, 5 * kSecond - 1));
  CHECK(ticker.Due(0, 5 * kSecond));
  CHECK_FALSE(ticker.Due(0, 6 * kSecond));
  CHECK(ticker.Due(1, 6 * kSecond));  // the epoch changed: now
  CHECK_FALSE(ticker.Due(1, 7 * kSecond));
  CHECK(ticker.Due(1, 11 * kSecond));
}

// Lockstep over real sockets on loopback: the engine's wait for the
// controller's Sync, its timeout, and what it does once the controller lapsed.
TEST_CASE("The engine awaits the controller's Sync, and stops waiting for a lapsed one",
          "[telemetry]") {
  using Clock = std::chrono::steady_clock;
  using namespace std::chrono_literals;
  telemetry::ControllerLinkOptions co;
  co.telemetry_endpoint = "tcp://127.0.0.1:*";
  co.command_endpoint = "tcp://127.0.0.1:*";
  auto controller = telemetry::ControllerLink::Bind(co);
  REQUIRE(controller.ok());
  auto engine = MakeEngine(SmallOptions());
  engine_app::AppOptions app;
  app.engine_id = "lockstep";
  telemetry::EngineLinkOptions eo;
  eo.engine_id = app.engine_id;
  eo.telemetry_endpoint = (*controller)->telemetry_endpoint();
  eo.command_endpoint = (*controller)->command_endpoint();
  auto link = telemetry::EngineLink::Connect(eo, engine_app::MakeHello(*engine, app, 1));
  REQUIRE(link.ok());
  engine_app::CommandHandler commands(engine.get(), app.engine_id);
  const auto never = [] { return false; };
  const auto sync = [&](uint64_t step) {
    telemetry::Sync s;
    s.engine_id = app.engine_id;
    s.step = step;
    s.timestamp_ns = 1;
    // The route is known once the engine's command-channel Hello is in.
    Status st;
    for (auto deadline = Clock::now() + 5s; Clock::now() < deadline;) {
      st = (*controller)->SendSync(s);
      if (st.ok()) break;
      std::this_thread::sleep_for(5ms);
    }
    REQUIRE(st.ok());
  };

  engine_app::SyncWaiter waiter(/*timeout_ms=*/150);
  // The command channel comes up (the controller is there).
  engine_app::SyncWaiter linker(/*timeout_ms=*/5000);
  CHECK(linker.AwaitLink(link->get(), &commands, never));
  CHECK((*link)->command_channel_up());
  sync(1);
  CHECK(waiter.Await(link->get(), &commands, 1, never));
  CHECK(waiter.timeouts() == 0);

  // No Sync of step 2: one timeout, then no waiting at all.
  auto t0 = Clock::now();
  CHECK_FALSE(waiter.Await(link->get(), &commands, 2, never));
  CHECK(Clock::now() - t0 >= 140ms);
  CHECK(waiter.lapsed());
  CHECK(waiter.timeouts() == 1);
  t0 = Clock::now();
  CHECK_FALSE(waiter.Await(link->get(), &commands, 3, never));
  CHECK(Clock::now() - t0 < 100ms);
  CHECK(waiter.timeouts() == 1);

  // The controller answers again (a Sync newer than the one missed): the
  // engine waits for it once more.
  sync(3);
  sync(4);
  t0 = Clock::now();
  for (auto deadline = Clock::now() + 5s; waiter.lapsed() && Clock::now() < deadline;) {
    waiter.Await(link->get(), &commands, 4, never);
  }
  CHECK_FALSE(waiter.lapsed());
  CHECK(waiter.Await(link->get(), &commands, 4, never));

  // A stop request ends a wait early, without counting as a lapse.
  std::atomic<bool> stop{false};
  std::thread stopper([&] {
    std::this_thread::sleep_for(30ms);
    stop = true;
  });
  engine_app::SyncWaiter patient(/*timeout_ms=*/10'000);
  t0 = Clock::now();
  CHECK_FALSE(patient.Await(link->get(), &commands, 99, [&] { return stop.load(); }));
  stopper.join();
  CHECK(Clock::now() - t0 < 5s);
  CHECK_FALSE(patient.lapsed());

  // No controller on the command channel: AwaitLink gives up after its timeout.
  telemetry::EngineLinkOptions nowhere = eo;
  nowhere.engine_id = "alone";
  nowhere.command_endpoint = "tcp://127.0.0.1:1";
  engine_app::AppOptions alone_app = app;
  alone_app.engine_id = "alone";
  auto alone =
      telemetry::EngineLink::Connect(nowhere, engine_app::MakeHello(*engine, alone_app, 1));
  INFO(alone.status().ToString());
  REQUIRE(alone.ok());
  engine_app::CommandHandler alone_commands(engine.get(), "alone");
  t0 = Clock::now();
  CHECK_FALSE(waiter.AwaitLink(alone->get(), &alone_commands, never));
  CHECK(Clock::now() - t0 >= 140ms);
  CHECK_FALSE((*alone)->command_channel_up());
}

}  // namespace
}  // namespace moe::engine
