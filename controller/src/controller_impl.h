// ControllerImpl: the Controller of moe/controller/controller.h. Private to
// the controller library. Its methods live in controller.cc (ingest, the
// policy pipeline, decisions and their outcomes) and controller_levers.cc
// (operator levers, liveness, what a restart reads back).

#ifndef MOE_CONTROLLER_SRC_CONTROLLER_IMPL_H_
#define MOE_CONTROLLER_SRC_CONTROLLER_IMPL_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine_state.h"
#include "learner.h"
#include "lever_book.h"
#include "message_checks.h"
#include "metrics_recorder.h"
#include "moe/controller/controller.h"
#include "moe/storage/store.h"
#include "moe/telemetry/transport.h"
#include "plan_worker.h"
#include "step_clock.h"

namespace moe::controller {

class ControllerImpl final : public Controller {
 public:
  ControllerImpl(const ControllerOptions& options, Clock* clock,
                 std::unique_ptr<telemetry::ControllerLink> link,
                 std::unique_ptr<storage::Store> store);

  ~ControllerImpl() override { (void)Shutdown(); }

  Status Poll(std::chrono::milliseconds wait) override;

  Status Reload(const ControllerOptions& options) override;

  Status Shutdown() override;

  ControllerStats stats() const override;
  CycleProfile last_cycle() const override { return profile_; }

  MetricsSnapshot metrics(bool per_layer) const override;

  Result<LeverOutcome> Pull(const Lever& lever) override;
  std::vector<EngineStatus> EngineStatuses() const override;

  std::string telemetry_endpoint() const override { return link_->telemetry_endpoint(); }
  std::string command_endpoint() const override { return link_->command_endpoint(); }

 private:
  static constexpr int64_t kNanosPerMilli = 1'000'000;
  // A decision whose epoch never gathers enough steps is measured on what it has
  // after this long, so one silent engine cannot hold its pipeline forever.
  static constexpr int64_t kOutcomeTimeoutMs = 60'000;
  // Commands never acked are forgotten after this many ack timeouts.
  static constexpr int64_t kForgetUnackedFactor = 10;
  // Most messages handled in one Poll before running due work.
  static constexpr int kMaxMessagesPerPoll = 2000;

  // Gone engines remembered for `moectl status` (the oldest forgotten first).
  static constexpr size_t kMaxGoneRemembered = 256;
  // A pin the engine does not run is sent again no sooner than this.
  static constexpr int64_t kPinRetryMs = 30'000;

  // Where a decision comes from: a policy, the guard's rollback of one, or an
  // operator's pin (never rolled back).
  enum class Origin { kPolicy, kRollback, kOperator };

  EngineState& Engine(const std::string& id);

  // The engine id a message speaks for.
  static const std::string& EngineIdOf(const telemetry::Inbound& inbound);

  void Handle(telemetry::Inbound inbound);

  // A Hello against the [limits], a step against its engine's Hello
  // (message_checks.h); nullopt when the message may touch state.
  std::optional<Refusal> Check(const telemetry::Inbound& inbound) const;

  void OnHello(const telemetry::Hello& hello, int64_t now);

  void OnStep(const telemetry::StepRecord& record, int64_t now);
  // Brings the engine's next pipeline run forward to now when `record`
  // dropped at least options_.react_drop_rate of its token-slots.
  void MaybeReact(EngineState& e, const telemetry::StepRecord& record, int64_t now);

  // The pending decision's ack timed out but telemetry shows the engine runs
  // its epoch: from here on it is measured like an acked one.
  void SettleApplied(EngineState& e, std::optional<uint64_t> at_step, const std::string& why,
                     int64_t now);

  // The pending decision's ack timed out and telemetry shows the engine did
  // not take it: the decision is over.
  void SettleNotApplied(EngineState& e, const std::string& why, int64_t now);

  void OnAck(const telemetry::Ack& ack, int64_t now);

  // The mode in force: a `mode` lever's, else controller.toml's.
  ControlMode ModeOf(const std::string& engine_id) const;

  // A scalar pin is in force when the engine runs that value; a bias pin when
  // every element of every layer is at it.
  static bool PinInForce(const EngineState& e, const std::string& knob, double value);

  // Sends the first pin whose value the engine does not run (not within
  // kPinRetryMs of the last try of that pin). Returns the decision id, or 0
  // when nothing was sent.
  int64_t ApplyPins(EngineState& e, const policies::EngineSnapshot& snapshot, int64_t now);

  // Engines silent for engine_expiry are gone: state evicted, rows kept, a
  // decision in flight closed as unknown.
  void ExpireEngines(int64_t now);

  void RunDue();
  // Answers every step that awaits the controller (syncs_due_), after the
  // RunDue that took it in: what that cycle decided was sent before.
  void SendSyncs();

  // The enabled policies in the order they are asked, e.g. "capacity, bias".
  std::string EnabledPolicies() const;
  bool PolicyEnabled(const std::string& name) const;
  // The capacity replays `e` keeps at ingest (EngineState::set_capacity_replays).
  void SetCapacityReplays(EngineState& e) const;
  // What the plan worker judges its plans with (JudgePlacement's parameters,
  // or none with the counterfactual policy off).
  void SetPlanGainParams();

  // The proposal of policy `name` for `snapshot`, when it is enabled and wants one.
  // (`snapshot` is shared with a plan the replication policy starts.)
  std::optional<policies::Proposal> Ask(
      const std::string& name, const std::shared_ptr<const policies::EngineSnapshot>& snapshot,
      const policies::GuardState& guard_state);
  // Ask(), its time counted in the cycle's profile.
  std::optional<policies::Proposal> AskTimed(
      const std::string& name, const std::shared_ptr<const policies::EngineSnapshot>& snapshot,
      const policies::GuardState& guard_state);

  void RunPolicies(EngineState& e, int64_t now);

  // With the counterfactual policy on, a placement is judged on the window's
  // own demand too: one that is not predicted to gain min_gain is rejected.
  // A plan the worker judged on the snapshot it was made from keeps that
  // gain when the guard let its placements through unchanged (the reason
  // says which window); any other placement is replayed on `snapshot`.
  void JudgePlacement(const policies::Proposal& proposal, const policies::EngineSnapshot& snapshot,
                      policies::Verdict* verdict);

  // Records the decision and, unless rejected or advisory, sends it. Returns
  // its row's id (0 when folded into an earlier identical rejection).
  // `with` are accepted proposals of other knobs sent in the same command
  // (joint settings); they share the decision's epoch, outcome and rollback.
  using Joint = std::vector<std::pair<policies::Proposal, policies::Verdict>>;
  int64_t Decide(EngineState& e, const policies::EngineSnapshot& snapshot,
                 const policies::Proposal& proposal, const policies::Verdict& verdict,
                 Origin origin, int64_t now, const Joint& with = {});

  // The verdict on `proposal` from the guard, the pins and the placement judge.
  policies::Verdict JudgeProposal(EngineState& e, const policies::Proposal& proposal,
                                  const policies::EngineSnapshot& snapshot, int64_t now);

  void Measure(EngineState& e, int64_t now);

 public:
  // Loads what the learner took from past epochs of the configured knob (the
  // learning_samples table), so learning survives a restart.
  Status RestoreLearning(const std::string& db_path) { return learner_.Restore(db_path); }

  // Reads back what an earlier run left: the levers in force (replayed from
  // their audit rows), the highest epoch per engine (epochs are never issued
  // twice), and closes the decisions it left in flight as unknown.
  Status RestoreFromDatabase(const std::string& db_path);

 private:
  struct SentCommand {
    int64_t decision_id = 0;
    std::string knob;
    double value = 0;
    nlohmann::json change;  // the epochs row's knobs_json once applied (ChangeJson) ...
    // ... with, when set, the member `knob` as text (a placement's changes).
    std::optional<std::string> change_text;
    int64_t sent_ns = 0;
    std::string ChangeText() const;  // the epochs row's knobs_json
  };

  ControllerOptions options_;
  Clock* wall_clock_;                      // the clock Create was given
  std::unique_ptr<StepClock> step_clock_;  // with options_.step_clock_ms
  Clock* clock_;                           // the step clock when there is one, else the wall's
  std::unique_ptr<telemetry::ControllerLink> link_;
  std::unique_ptr<storage::Store> store_;
  std::map<std::string, EngineState> engines_;
  std::map<std::pair<std::string, uint64_t>, SentCommand> sent_;
  Learner learner_;
  LeverBook levers_;
  // The shapes of the engines in gone_ that had sent a Hello.
  std::map<std::string, telemetry::Hello> gone_shapes_;
  std::map<std::string, int64_t> gone_;             // engine id -> its last message (recently gone)
  std::map<std::string, uint64_t> highest_epochs_;  // per engine, from the database at start
  ControllerStats stats_;
  CycleProfile profile_;  // of the latest RunDue that ran a pipeline
  CycleProfile current_;  // the RunDue in progress
  // When the pipeline of the engine now deciding began (CycleProfile::to_command_us).
  std::optional<std::chrono::steady_clock::time_point> cycle_start_;
  bool held_for_database_ = false;  // decisions held: the store's writes fail
  // Engines whose newest step awaits a Sync (StepRecord::await_sync), sent
  // once the cycle after its ingest ran; one the link could not route yet
  // (the engine's command-channel Hello comes on the other channel) is tried
  // again each poll, for up to ack_timeout on the wall clock.
  struct DueSync {
    uint64_t step = 0;
    int64_t first_failed_ns = -1;  // wall clock's MonotonicNanos; -1: not tried
  };
  std::map<std::string, DueSync> syncs_due_;
  MetricsRecorder metrics_;
  int64_t next_progress_ns_ = 0;
  PlanWorker plans_;  // last member: its thread stops first
};

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_CONTROLLER_IMPL_H_
