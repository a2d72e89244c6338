// Glue between the engine library's plain structs and the telemetry schema:
// Hello/StepRecord from engine stats, commands to knob updates, acks, and the
// progress line.

#ifndef MOE_APPS_MOE_ENGINE_TELEMETRY_GLUE_H_
#define MOE_APPS_MOE_ENGINE_TELEMETRY_GLUE_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "engine_config.h"
#include "moe/engine/engine.h"
#include "moe/engine/stats.h"
#include "moe/telemetry/transport.h"
#include "moe/telemetry/types.h"

namespace moe::engine_app {

telemetry::KnobSet ToKnobSet(const engine::Knobs& knobs);
engine::KnobPatch ToKnobPatch(const telemetry::KnobSet& set);
// A received command as the engine's update; Engine::Submit validates it.
engine::KnobUpdate ToKnobUpdate(const telemetry::Command& command);

telemetry::Hello MakeHello(const engine::Engine& engine, const AppOptions& app, int64_t now_ns);
telemetry::StepRecord MakeStepRecord(const engine::StepStats& stats, const std::string& engine_id,
                                     int64_t now_ns);

// Turns received commands into engine knob updates and acks them: a command
// the engine refuses is acked at once with applied=false and the reason; an
// accepted one is acked after the step that first ran under its epoch.
class CommandHandler {
 public:
  CommandHandler(engine::Engine* engine, std::string engine_id)
      : engine_(engine), engine_id_(std::move(engine_id)) {}

  // Receives and submits every waiting command; never blocks.
  void Poll(telemetry::EngineLink* link, int64_t now_ns);
  // Acks accepted commands whose epoch `stats` ran under.
  void AckApplied(telemetry::EngineLink* link, const engine::StepStats& stats, int64_t now_ns);

 private:
  engine::Engine* engine_;
  std::string engine_id_;
  std::vector<uint64_t> accepted_;  // epochs waiting for their first step
};

// Lockstep with the controller (`[telemetry] await_controller`): after each
// step the engine waits for the controller's Sync of it, taking the commands
// that arrive meanwhile, so a decision made on step s applies at step s + 1
// whatever either process's speed. A controller that does not answer within
// `timeout_ms` is not waited for again until it answers (one warning each
// way): a dead controller costs one timeout, not one per step.
class SyncWaiter {
 public:
  explicit SyncWaiter(int64_t timeout_ms) : timeout_ms_(timeout_ms) {}

  // Returns once the Sync of `step` arrived, the timeout passed, or `stop()`
  // is true (checked every 20 ms). False when it did not wait for a Sync
  // (the controller lapsed, now or before).
  bool Await(telemetry::EngineLink* link, CommandHandler* commands, uint64_t step,
             const std::function<bool()>& stop);
  // Before the first step: waits (at most `timeout_ms`, checking `stop`)
  // until the command channel is up, so the controller knows this engine's
  // route when its first step arrives. False on timeout or stop (then the
  // first Await times out and the engine runs on, as for a lapse).
  bool AwaitLink(telemetry::EngineLink* link, CommandHandler* commands,
                 const std::function<bool()>& stop);
  bool lapsed() const { return lapsed_; }
  uint64_t timeouts() const { return timeouts_; }

 private:
  // Polls commands until `done()` (true), `stop()` or timeout_ms_ (false),
  // blocking at most `slice` between looks.
  bool PollUntil(telemetry::EngineLink* link, CommandHandler* commands,
                 const std::function<bool()>& done, const std::function<bool()>& stop,
                 std::chrono::milliseconds slice);

  int64_t timeout_ms_;
  bool lapsed_ = false;
  uint64_t lapsed_step_ = 0;  // the step whose Sync did not come
  uint64_t timeouts_ = 0;
};

// When to send the engine's Hello again: every `interval_ns`, and at once
// when the epoch in force changed, so a controller that missed an ack (or
// restarted) learns the epoch and knobs in force from telemetry.
class HelloTicker {
 public:
  HelloTicker(int64_t interval_ns, uint64_t epoch, int64_t now_ns)
      : interval_ns_(interval_ns), epoch_(epoch), last_ns_(now_ns) {}
  // True when a Hello is due for an engine at `epoch` at `now_ns`
  // (monotonic); it is then counted as sent.
  bool Due(uint64_t epoch, int64_t now_ns);

 private:
  int64_t interval_ns_;
  uint64_t epoch_;
  int64_t last_ns_;
};

// A progress line on stderr every `interval_ns`.
class ProgressMeter {
 public:
  explicit ProgressMeter(int64_t interval_ns) : interval_ns_(interval_ns) {}
  void Observe(const engine::StepStats& stats, int64_t now_ns, uint64_t telemetry_dropped);
  void Final() const;

 private:
  int64_t interval_ns_;
  int64_t window_start_ns_ = -1;
  uint64_t steps_ = 0;
  uint64_t total_steps_ = 0;
  uint64_t slots_ = 0;
  uint64_t dropped_ = 0;
  double step_us_ = 0;
  double max_over_mean_ = 0;
  uint64_t epoch_ = 0;
  uint64_t telemetry_dropped_ = 0;
};

}  // namespace moe::engine_app

#endif  // MOE_APPS_MOE_ENGINE_TELEMETRY_GLUE_H_
