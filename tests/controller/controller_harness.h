// The controller against an engine played by the test: real ZeroMQ sockets on
// loopback and a real SQLite file, with a FakeClock so cadences, cooldowns,
// staleness and ack timeouts run on the test's schedule. Shared by the
// controller test files.

#ifndef MOE_TESTS_CONTROLLER_CONTROLLER_HARNESS_H_
#define MOE_TESTS_CONTROLLER_CONTROLLER_HARNESS_H_

#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "moe/controller/controller.h"
#include "moe/storage/reader.h"
#include "moe/telemetry/transport.h"
#include "support/fake_clock.h"
#include "support/temp_dir.h"

namespace moe::controller {

using std::chrono::milliseconds;
inline constexpr int64_t kMs = 1'000'000;

// The bound one bias decision may move an element by.
struct PolicyParamsCheck {
  PolicyParamsCheck(const policies::BiasPolicyParams& bias, const policies::KnobLimits& limits)
      : largest_step(std::min(bias.max_step, limits.max_change)) {}
  double largest_step;
};

// Changes one layer of a step the test sends (e.g. its demand).
using LayerTweak = std::function<void(telemetry::LayerRecord&)>;

class Harness {
 public:
  explicit Harness(std::function<void(ControllerOptions&)> tweak = nullptr,
                   std::function<void(telemetry::Hello&)> tweak_hello = nullptr) {
    options_.telemetry_endpoint = "tcp://127.0.0.1:*";
    options_.command_endpoint = "tcp://127.0.0.1:*";
    options_.db_path = dir_.File("moectl.db");
    options_.cadence_ms = 100;
    options_.ack_timeout_ms = 1000;
    options_.outcome_steps = 4;
    options_.window_steps = 32;
    options_.progress_interval_ms = 0;
    options_.capacity.min_steps = 4;
    options_.guard.min_steps_in_epoch = 4;
    options_.guard.cooldown_ms = 500;
    options_.db_flush_interval_ms = 20;
    // The capacity tests see skewed loads; the bias and replication policies
    // have their own tests.
    options_.bias_enabled = false;
    options_.bias.min_steps = 4;
    options_.replication_enabled = false;
    options_.replication.min_steps = 4;
    if (tweak) tweak(options_);
    auto controller = Controller::Create(options_, &clock_);
    INFO(controller.status().ToString());
    REQUIRE(controller.ok());
    controller_ = std::move(*controller);

    telemetry::EngineLinkOptions link;
    link.engine_id = "e1";
    link.telemetry_endpoint = controller_->telemetry_endpoint();
    link.command_endpoint = controller_->command_endpoint();
    link.reconnect_interval = std::chrono::milliseconds(20);
    link.reconnect_interval_max = std::chrono::milliseconds(50);
    hello_.engine_id = "e1";
    hello_.backend = "cpu";
    hello_.num_layers = 2;
    hello_.num_experts = 4;
    hello_.knobs.top_k = 2;
    hello_.knobs.capacity_factor = 1.0;
    if (tweak_hello) tweak_hello(hello_);
    auto engine = telemetry::EngineLink::Connect(link, hello_);
    REQUIRE(engine.ok());
    engine_ = std::move(*engine);
    // Both Hellos, telemetry and command channel: only then does the
    // controller know the engine's command route.
    PollUntil(
        [&] { return controller_->stats().engines == 1 && controller_->stats().messages >= 2; });
  }

  // Polls the controller (time frozen) until `done` or a bounded number of
  // tries (about 10 s of socket waits: generous for a loaded CI machine).
  void PollUntil(const std::function<bool()>& done) {
    for (int i = 0; i < 1000 && !done(); ++i)
      REQUIRE(controller_->Poll(milliseconds(10)).ok());
    REQUIRE(done());
  }

  // Sends `n` steps under `epoch` with the given drop rate, 10 ms apart, and
  // waits until the controller has them. `tweak` changes every layer record.
  void Steps(int n, uint64_t epoch, double drop_rate, const LayerTweak& tweak = nullptr) {
    uint64_t want = controller_->stats().steps + static_cast<uint64_t>(n);
    for (int i = 0; i < n; ++i) {
      clock_.Advance(10 * kMs);
      REQUIRE(engine_->Publish(NextStep(epoch, drop_rate, tweak)).ok());
    }
    PollUntil([&] { return controller_->stats().steps >= want; });
  }

  // The engine's next step record (2 layers of 500 tokens, a skewed load)
  // under `epoch` with the given drop rate, stamped now; not sent.
  telemetry::StepRecord NextStep(uint64_t epoch, double drop_rate,
                                 const LayerTweak& tweak = nullptr) {
    telemetry::StepRecord r;
    r.engine_id = "e1";
    r.step = ++step_;
    r.epoch = epoch;
    r.timestamp_ns = clock_.NowNanos();
    r.step_us = 1000;
    for (uint32_t layer = 0; layer < 2; ++layer) {
      telemetry::LayerRecord l;
      l.layer = layer;
      l.num_tokens = 500;
      l.num_token_slots = 1000;
      l.dropped = static_cast<uint32_t>(drop_rate * 1000);
      l.overflowed = l.dropped;
      l.expert_tokens = {400, 300, 200, 100};
      l.timing.total_us = 400;
      if (tweak) tweak(l);
      r.layers.push_back(l);
    }
    return r;
  }

  // Runs the pipeline once (the cadence has passed) and returns the commands
  // the engine received.
  std::vector<telemetry::Command> Tick() {
    clock_.Advance(options_.cadence_ms * kMs);
    REQUIRE(controller_->Poll(milliseconds(0)).ok());
    std::vector<telemetry::Command> commands;
    for (int i = 0; i < 500; ++i) {
      auto got = engine_->PollCommands();
      REQUIRE(got.ok());
      commands.insert(commands.end(), got->begin(), got->end());
      if (!commands.empty() || controller_->stats().commands_sent == sent_seen_) break;
      REQUIRE(controller_->Poll(milliseconds(10)).ok());
    }
    sent_seen_ = controller_->stats().commands_sent;
    return commands;
  }

  // The commands the engine has received, without moving the clock (a few
  // polls, so a command already sent arrives).
  std::vector<telemetry::Command> Received() {
    std::vector<telemetry::Command> commands;
    for (int i = 0; i < 20; ++i) {
      REQUIRE(controller_->Poll(milliseconds(5)).ok());
      auto got = engine_->PollCommands();
      REQUIRE(got.ok());
      commands.insert(commands.end(), got->begin(), got->end());
    }
    sent_seen_ = controller_->stats().commands_sent;
    return commands;
  }

  void Ack(const telemetry::Command& command, bool applied, std::string error = "") {
    telemetry::Ack ack;
    ack.engine_id = "e1";
    ack.epoch = command.epoch;
    ack.applied = applied;
    ack.error = std::move(error);
    ack.applied_at_step = step_ + 1;
    ack.timestamp_ns = clock_.NowNanos();
    uint64_t acks = controller_->stats().acks;
    REQUIRE(engine_->SendAck(ack).ok());
    PollUntil([&] { return controller_->stats().acks > acks; });
  }

  // Takes new options (Controller::Reload) and returns its status.
  Status Reload(const std::function<void(ControllerOptions&)>& tweak) {
    ControllerOptions next = options_;
    tweak(next);
    Status s = controller_->Reload(next);
    if (s.ok()) options_ = next;
    return s;
  }

  // Stops the controller and starts a new one on the same options (database
  // and endpoints: give fixed ports), then waits for the engine's Hello,
  // which the engine link re-sends when it notices the reconnect.
  void RestartController() {
    REQUIRE(controller_->Shutdown().ok());
    controller_.reset();
    Result<std::unique_ptr<Controller>> controller = Status::Unavailable("not started");
    for (int i = 0; i < 100 && !controller.ok(); ++i) {
      if (i > 0) std::this_thread::sleep_for(milliseconds(20));  // the old sockets close
      controller = Controller::Create(options_, &clock_);
    }
    INFO(controller.status().ToString());
    REQUIRE(controller.ok());
    controller_ = std::move(*controller);
    sent_seen_ = 0;
    for (int i = 0; i < 1000 && controller_->stats().messages < 2; ++i) {
      REQUIRE(engine_->PollCommands().ok());
      REQUIRE(controller_->Poll(milliseconds(10)).ok());
    }
    REQUIRE(controller_->stats().messages >= 2);
  }

  // Flushes and closes the store, then reads every decision back.
  std::vector<storage::DecisionRow> Decisions() {
    REQUIRE(controller_->Shutdown().ok());
    auto reader = storage::Reader::Open(options_.db_path);
    REQUIRE(reader.ok());
    auto rows = (*reader)->Decisions({});
    REQUIRE(rows.ok());
    return *rows;
  }

  // Flushes and closes the store, then reads every learning sample back.
  std::vector<storage::LearningSampleRow> Samples() {
    REQUIRE(controller_->Shutdown().ok());
    auto reader = storage::Reader::Open(options_.db_path);
    REQUIRE(reader.ok());
    auto rows = (*reader)->LearningSamples("", policies::KnobsName(options_.learning.knobs));
    REQUIRE(rows.ok());
    return *rows;
  }

  // Copies the database (with any WAL beside it) to `to`; call after
  // Decisions() or Samples() closed the store.
  void CopyDatabaseTo(const std::string& to) const {
    for (const char* suffix : {"", "-wal"}) {
      const std::string from = options_.db_path + suffix;
      if (std::filesystem::exists(from)) std::filesystem::copy_file(from, to + suffix);
    }
  }

  Controller& controller() { return *controller_; }
  telemetry::EngineLink& engine() { return *engine_; }
  moe::testing::FakeClock& clock() { return clock_; }
  ControllerOptions& options() { return options_; }
  const telemetry::Hello& hello() const { return hello_; }
  uint64_t step() const { return step_; }

 private:
  moe::testing::TempDir dir_;
  moe::testing::FakeClock clock_;
  ControllerOptions options_;
  telemetry::Hello hello_;
  std::unique_ptr<Controller> controller_;
  std::unique_ptr<telemetry::EngineLink> engine_;
  uint64_t step_ = 0;
  uint64_t sent_seen_ = 0;
};

// Learning alone on capacity_factor in {1.0, 1.5, 2.0}; no rollback, no
// cooldown, so each step of the bandit shows.
inline void LearningOnly(ControllerOptions& o) {
  o.capacity_enabled = false;
  o.learning_enabled = true;
  o.rollback_enabled = false;
  o.guard.cooldown_ms = 0;
  o.learning.arms = {{1.0}, {1.5}, {2.0}};
  o.learning.min_steps = 8;
  o.learning.exploration = 0.0;
}

// The learner's opening over capacity values {1.0, 1.5, 2.0}: 8 bad steps
// under 1.0 (drop rate 0.10), it tries 1.5 (acked); 8 good steps under 1.5,
// it tries 2.0 (acked). Epoch 2 is then in force, with no step run under it.
inline void ExploreFirstTwoValues(Harness& h) {
  h.Steps(8, 0, 0.10);  // cf 1.0: bad
  auto first = h.Tick();
  REQUIRE(first.size() == 1);
  REQUIRE(*first[0].knobs.capacity_factor == Approx(1.5));
  h.Ack(first[0], true);
  h.Steps(8, 1, 0.0);  // cf 1.5: good
  auto second = h.Tick();
  REQUIRE(second.size() == 1);
  REQUIRE(*second[0].knobs.capacity_factor == Approx(2.0));
  h.Ack(second[0], true);
}

}  // namespace moe::controller

#endif  // MOE_TESTS_CONTROLLER_CONTROLLER_HARNESS_H_
