// Messages checked against the rest: a Hello against [limits], a step against
// its engine's Hello (controller/src/message_checks.h), the window bounded in
// bytes, and the controller dropping what fails before it touches state.

#include <catch2/catch.hpp>

#include "controller_config.h"
#include "controller_harness.h"
#include "engine_state.h"
#include "message_checks.h"
#include "moe/telemetry/codec.h"

namespace moe::controller {
namespace {

telemetry::Hello Shape(uint32_t layers, uint32_t experts, uint32_t replicas = 0,
                       uint32_t devices = 1) {
  telemetry::Hello h;
  h.engine_id = "e";
  h.num_layers = layers;
  h.num_experts = experts;
  h.num_replicas = replicas;
  h.num_devices = devices;
  return h;
}

telemetry::StepRecord StepOf(const telemetry::Hello& h, uint32_t layers) {
  telemetry::StepRecord r;
  r.engine_id = h.engine_id;
  for (uint32_t l = 0; l < layers; ++l) {
    telemetry::LayerRecord layer;
    layer.layer = l;
    layer.expert_tokens.assign(h.num_experts, 1);
    r.layers.push_back(layer);
  }
  return r;
}

TEST_CASE("A Hello over the shape budget is refused by the limit it breaks", "[checks]") {
  const LimitsOptions limits;  // the defaults
  // DeepSeek-V3: 61 MoE layers x 256 routed experts, 288 slots on 32 devices.
  CHECK_FALSE(CheckHello(Shape(61, 256, 288, 32), limits).has_value());
  CHECK_FALSE(CheckHello(Shape(128, 1024, 4096, 1024), limits).has_value());
  auto reason = [&](const telemetry::Hello& h) {
    std::optional<Refusal> r = CheckHello(h, limits);
    return r ? r->reason + ": " + r->detail : std::string("accepted");
  };
  CHECK(reason(Shape(1 << 20, 1 << 20)).find("shape_budget: num_layers 1048576") == 0);
  CHECK(reason(Shape(64, 65'536)).find("shape_budget: num_experts 65536") == 0);
  LimitsOptions wide = limits;
  wide.max_experts = 1 << 20;
  CHECK(reason(Shape(64, 65'536)).find("max_experts") != std::string::npos);
  CHECK(CheckHello(Shape(64, 65'536), wide)->detail.find("num_layers x num_experts 4194304") == 0);
  CHECK(reason(Shape(2, 4, 8192)).find("max_replicas") != std::string::npos);
  CHECK(reason(Shape(128, 4, 4096 + 1)).find("max_replicas") != std::string::npos);
  LimitsOptions few_slots = limits;
  few_slots.max_layer_replicas = 1000;
  CHECK(CheckHello(Shape(2, 4, 501), few_slots)->detail.find("max_layer_replicas") !=
        std::string::npos);
  CHECK(reason(Shape(2, 4, 4, 5000)).find("max_devices") != std::string::npos);

  telemetry::Hello epoch = Shape(2, 4);
  epoch.epoch = telemetry::kMaxEpoch;
  CHECK(reason(epoch).find("epoch_range") == 0);
  epoch.epoch = MaxMessageEpoch();
  CHECK_FALSE(CheckHello(epoch, limits).has_value());

  // Knob vectors must fit the shape the Hello declares.
  telemetry::Hello bias = Shape(2, 4);
  bias.knobs.expert_bias = std::vector<float>(5, 0.0f);
  CHECK(reason(bias).find("hello_mismatch: Hello.knobs.expert_bias has 5") == 0);
  telemetry::Hello placement = Shape(2, 4, 6);
  placement.knobs.phy2log = std::vector<uint32_t>{0, 1, 2, 3, 0, 4};
  CHECK(reason(placement).find("phy2log[5] = 4") != std::string::npos);
  telemetry::Hello layer = Shape(2, 4);
  layer.layer_knobs.push_back({7, {}});
  CHECK(reason(layer).find("layer_knobs[0].layer 7") != std::string::npos);
}

TEST_CASE("A step is checked against its engine's Hello", "[checks]") {
  const telemetry::Hello h = Shape(4, 8, 12, 2);
  CHECK_FALSE(CheckStep(StepOf(h, 4), h).has_value());
  auto reason = [&](const telemetry::StepRecord& r) {
    std::optional<Refusal> refusal = CheckStep(r, h);
    return refusal ? refusal->reason + ": " + refusal->detail : std::string("accepted");
  };
  telemetry::StepRecord r = StepOf(h, 1);
  r.layers[0].layer = (1 << 20) - 1;
  CHECK(reason(r).find("layer_index: StepRecord.layers[0].layer 1048575") == 0);
  r = StepOf(h, 2);
  r.layers[1].expert_tokens.pop_back();
  CHECK(reason(r).find("array_length: StepRecord.layers[1].expert_tokens has 7") == 0);
  r = StepOf(h, 2);
  r.layers[0].expert_tokens.clear();  // served tokens are required
  CHECK(reason(r).find("array_length") == 0);
  r = StepOf(h, 1);
  r.layers[0].expert_demand.assign(9, 0);
  CHECK(reason(r).find("expert_demand has 9") != std::string::npos);
  r.layers[0].expert_demand.assign(8, 0);  // the declared length is fine
  CHECK(reason(r) == "accepted");
  r.layers[0].slot_tokens.assign(8, 0);
  CHECK(reason(r).find("slot_tokens has 8 elements, not 12") != std::string::npos);
  r.layers[0].slot_tokens.assign(12, 0);
  r.layers[0].device_tokens.assign(3, 0);
  CHECK(reason(r).find("device_tokens") != std::string::npos);
  r.layers[0].device_tokens.assign(2, 0);
  r.layers[0].timing.device_expert_us.assign(1, 0);
  CHECK(reason(r).find("device_expert_us") != std::string::npos);
  r.layers[0].timing.device_expert_us.assign(2, 0);
  r.layers[0].k_histogram.assign(10, 0);
  CHECK(reason(r).find("k_histogram") != std::string::npos);
  r.layers[0].k_histogram.assign(9, 0);
  CHECK(reason(r) == "accepted");
  r.epoch = MaxMessageEpoch() + 1;
  CHECK(reason(r).find("epoch_range") == 0);
}

TEST_CASE("Limits are validated", "[checks]") {
  CHECK(Validate(LimitsOptions{}).ok());
  LimitsOptions l;
  l.max_layers = 0;
  CHECK(Validate(l).message().find("limits.max_layers") != std::string::npos);
  l = LimitsOptions{};
  l.max_layer_experts = uint64_t{1} << 27;
  CHECK(Validate(l).message().find("limits.max_layer_experts") != std::string::npos);
  l = LimitsOptions{};
  l.window_bytes = 1000;
  CHECK(Validate(l).message().find("limits.window_bytes") != std::string::npos);
}

TEST_CASE("[limits] and the queue's bytes are read from controller.toml and checked",
          "[checks][config]") {
  moe::testing::TempDir dir;
  std::string path = dir.Write("c.toml",
                               "[limits]\nmax_layers = 64\nmax_experts = 512\n"
                               "max_layer_experts = 20000\nmax_replicas = 600\n"
                               "max_layer_replicas = 30000\nmax_devices = 64\nwindow_mib = 16\n"
                               "[storage]\nmax_queue_rows = 5000\nmax_queue_mib = 32\n");
  auto options = LoadControllerConfig(path);
  INFO(options.status().ToString());
  REQUIRE(options.ok());
  CHECK(options->limits.max_layers == 64);
  CHECK(options->limits.max_experts == 512);
  CHECK(options->limits.max_layer_experts == 20000);
  CHECK(options->limits.max_replicas == 600);
  CHECK(options->limits.max_layer_replicas == 30000);
  CHECK(options->limits.max_devices == 64);
  CHECK(options->limits.window_bytes == uint64_t{16} << 20);
  CHECK(options->db_max_queue_rows == 5000);
  CHECK(options->db_max_queue_bytes == int64_t{32} << 20);

  path = dir.Write("bad.toml",
                   "[limits]\nmax_layers = 0\nmax_layer_experts = 100000000\nwindow_mib = \"x\"\n"
                   "speed = 3\n");
  options = LoadControllerConfig(path);
  REQUIRE_FALSE(options.ok());
  const std::string m = options.status().message();
  INFO(m);
  CHECK(m.find(path + ":2:14: limits.max_layers:") != std::string::npos);
  CHECK(m.find(path + ":3:21: limits.max_layer_experts:") != std::string::npos);
  CHECK(m.find(path + ":4:14: limits.window_mib:") != std::string::npos);
  CHECK(m.find(path + ":5:1: limits.speed: unknown key") != std::string::npos);
}

TEST_CASE("The window is bounded in bytes as well as steps; the newest step stays",
          "[checks][window]") {
  const telemetry::Hello h = Shape(8, 1024);
  EngineState small("e", 64, uint64_t{1} << 20);
  small.OnHello(h, 0);
  const StepFigures one = Summarise(StepOf(h, 8));
  // 8 layers x 1024 experts of served load: at least 64 KiB of doubles.
  REQUIRE(one.bytes >= 8 * 1024 * sizeof(double));
  for (int s = 0; s < 64; ++s)
    small.OnStep(StepOf(h, 8), s);
  CHECK(small.window_bytes() <= uint64_t{1} << 20);
  CHECK(small.window_size() == (uint64_t{1} << 20) / one.bytes);
  CHECK(small.window_size() < 64);

  EngineState tiny("t", 64, 1);  // below one step: the newest still stays
  tiny.OnHello(h, 0);
  tiny.OnStep(StepOf(h, 8), 1);
  tiny.OnStep(StepOf(h, 8), 2);
  CHECK(tiny.window_size() == 1);

  EngineState steps("s", 4, uint64_t{1} << 30);
  steps.OnHello(h, 0);
  for (int s = 0; s < 10; ++s)
    steps.OnStep(StepOf(h, 8), s);
  CHECK(steps.window_size() == 4);
  CHECK(steps.window_bytes() == 4 * one.bytes);
}

TEST_CASE("The epoch ledger holds its knob vectors to a byte bound", "[checks][window]") {
  // 128 layers x 4096 slots of placement: 2 MiB per epoch.
  policies::KnobValues knobs;
  knobs.phy2log.assign(128, std::vector<uint32_t>(4096, 0));
  EpochLedger ledger;
  ledger.set_max_bytes(uint64_t{16} << 20);
  for (uint64_t epoch = 1; epoch <= 100; ++epoch)
    ledger.OnHello(epoch, knobs, false);
  CHECK(ledger.bytes() <= uint64_t{16} << 20);
  CHECK(ledger.size() >= 2);
  CHECK(ledger.size() < 10);
  CHECK(ledger.Known(100));  // the settings in force stay
  CHECK(ledger.KnobsOf(100).phy2log.size() == 128);
  ledger.OnSent(101, knobs);  // and a command in flight
  CHECK(ledger.Find(101) != nullptr);
  CHECK(ledger.Known(100));

  EpochLedger unbounded;  // only kMaxEntries binds
  for (uint64_t epoch = 1; epoch <= 20; ++epoch)
    unbounded.OnHello(epoch, knobs, false);
  CHECK(unbounded.size() == 20);
}

TEST_CASE("A refused message is counted by reason and touches no state", "[checks][controller]") {
  Harness h;
  h.Steps(2, 0, 0.0);
  const ControllerStats before = h.controller().stats();

  telemetry::EngineLinkOptions link;
  link.engine_id = "bomb";
  link.telemetry_endpoint = h.controller().telemetry_endpoint();
  link.command_endpoint = h.controller().command_endpoint();
  telemetry::Hello bomb = h.hello();
  bomb.engine_id = "bomb";
  bomb.num_layers = 1 << 20;
  bomb.num_experts = 1 << 20;
  auto peer = telemetry::EngineLink::Connect(link, bomb);
  REQUIRE(peer.ok());
  telemetry::StepRecord step;
  step.layers.resize(1);
  step.layers[0].expert_tokens = {1, 2, 3, 4};
  REQUIRE((*peer)->Publish(step).ok());  // no Hello accepted: no_hello
  // Hellos on both channels and the step: three refusals.
  h.PollUntil([&] { return RefusedTotal(h.controller().stats()) >= 3; });
  ControllerStats after = h.controller().stats();
  CHECK(after.refused_by_reason["shape_budget"] == 2);
  CHECK(after.refused_by_reason["no_hello"] == 1);
  CHECK(after.engines == 1);  // no state for "bomb"
  CHECK(after.steps == before.steps);
  CHECK(h.controller().EngineStatuses().size() == 1);

  // The good engine's steps with a layer past its 2 layers, and a short array.
  const uint64_t steps_before = h.controller().stats().steps;
  telemetry::StepRecord bad;
  bad.engine_id = "e1";
  bad.layers.resize(1);
  bad.layers[0].layer = (1 << 20) - 1;
  bad.layers[0].expert_tokens = {1, 2, 3, 4};
  REQUIRE(h.engine().Publish(bad).ok());
  bad.layers[0].layer = 1;
  bad.layers[0].expert_tokens = {1, 2, 3};
  REQUIRE(h.engine().Publish(bad).ok());
  h.PollUntil([&] { return RefusedTotal(h.controller().stats()) >= 5; });
  after = h.controller().stats();
  CHECK(after.refused_by_reason["layer_index"] == 1);
  CHECK(after.refused_by_reason["array_length"] == 1);
  CHECK(after.steps == steps_before);
  h.Steps(2, 0, 0.0);  // and it goes on serving

  // /metrics shows them by reason.
  const MetricsSnapshot snapshot = h.controller().metrics(false);
  CHECK(snapshot.skipped_by_reason.at("shape_budget") == 2);
  CHECK(snapshot.skipped_by_reason.at("layer_index") == 1);
  Result<std::string> text = RenderMetrics(snapshot, false, 0);
  REQUIRE(text.ok());
  CHECK(text->find("moectl_messages_refused_total{reason=\"no_hello\"} 1") != std::string::npos);
  CHECK(ReasonList(after.refused_by_reason) ==
        " (array_length 1, layer_index 1, no_hello 1, shape_budget 2)");
}

}  // namespace
}  // namespace moe::controller
