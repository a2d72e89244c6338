#include "moe/controller/controller.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <variant>

#include "audit_json.h"
#include "controller_impl.h"
#include "engine_state.h"
#include "learner.h"
#include "lever_book.h"
#include "message_checks.h"
#include "metrics_recorder.h"
#include "moe/storage/reader.h"
#include "moe/storage/store.h"
#include "moe/telemetry/transport.h"
#include "phase_timer.h"
#include "plan_worker.h"
#include "prediction.h"

namespace moe::controller {
namespace {

using nlohmann::json;

// A rejection's identity for folding repeats: policy, knob and layer pick the
// run; the value and the reason with every number masked (cooldowns count
// down) must match.
std::string RejectionKey(const policies::Proposal& proposal, const std::string& reason) {
  std::string masked;
  masked.reserve(reason.size());
  for (size_t i = 0; i < reason.size(); ++i) {
    const char c = reason[i];
    if (std::isdigit(static_cast<unsigned char>(c)) != 0) {
      if (masked.empty() || masked.back() != '#') masked += '#';
    } else if (c == '.' && !masked.empty() && masked.back() == '#' && i + 1 < reason.size() &&
               std::isdigit(static_cast<unsigned char>(reason[i + 1])) != 0) {
      // the decimal point of a masked number
    } else {
      masked += c;
    }
  }
  return fmt::format("{:.6g}|{}", proposal.value, masked);
}

LearnerOptions LearnerOptionsOf(const ControllerOptions& o) {
  LearnerOptions l;
  l.learning = o.learning;
  l.reward = o.reward;
  l.outcome_steps = o.outcome_steps;
  l.window_steps = o.window_steps;
  return l;
}

}  // namespace

ControllerImpl::ControllerImpl(const ControllerOptions& options, Clock* clock,
                               std::unique_ptr<telemetry::ControllerLink> link,
                               std::unique_ptr<storage::Store> store)
    : options_(options),
      wall_clock_(clock),
      step_clock_(options.step_clock_ms > 0
                      ? std::make_unique<StepClock>(*clock, options.step_clock_ms * kNanosPerMilli)
                      : nullptr),
      clock_(step_clock_ ? step_clock_.get() : clock),
      link_(std::move(link)),
      store_(std::move(store)),
      learner_(LearnerOptionsOf(options)) {
  next_progress_ns_ = clock_->NowNanos() + options_.progress_interval_ms * kNanosPerMilli;
  SetPlanGainParams();
}

Status ControllerImpl::Poll(std::chrono::milliseconds wait) {
  std::chrono::milliseconds timeout = wait;
  for (int i = 0; i < kMaxMessagesPerPoll; ++i) {
    Result<std::optional<telemetry::Inbound>> in = link_->Receive(timeout);
    if (!in.ok()) return in.status();
    if (!in->has_value()) break;
    Handle(std::move(**in));
    timeout = std::chrono::milliseconds(0);
  }
  RunDue();
  SendSyncs();
  return Status::Ok();
}

void ControllerImpl::SendSyncs() {
  const int64_t wall_ns = wall_clock_->MonotonicNanos();
  for (auto it = syncs_due_.begin(); it != syncs_due_.end();) {
    auto& [id, due] = *it;
    telemetry::Sync sync;
    sync.engine_id = id;
    sync.step = due.step;
    sync.timestamp_ns = clock_->NowNanos();
    const Status st = link_->SendSync(sync);
    if (st.ok()) {
      it = syncs_due_.erase(it);
      continue;
    }
    if (due.first_failed_ns < 0) due.first_failed_ns = wall_ns;
    const bool retry = st.code() == StatusCode::kUnavailable &&
                       wall_ns - due.first_failed_ns < options_.ack_timeout_ms * kNanosPerMilli;
    if (retry) {
      ++it;
      continue;
    }
    // The engine waits out its await timeout and runs on.
    if (LogThisOne(++stats_.syncs_failed)) {
      spdlog::warn("engine {}: Sync of step {} not sent ({} so far): {}", id, due.step,
                   stats_.syncs_failed, st.ToString());
    }
    it = syncs_due_.erase(it);
  }
}

Status ControllerImpl::Reload(const ControllerOptions& options) {
  MOE_RETURN_IF_ERROR(Validate(options));
  std::vector<std::string> fixed;
  if (options.telemetry_endpoint != options_.telemetry_endpoint) {
    fixed.push_back("telemetry_endpoint");
  }
  if (options.command_endpoint != options_.command_endpoint) fixed.push_back("command_endpoint");
  if (options.db_path != options_.db_path) fixed.push_back("db_path");
  if (options.step_clock_ms != options_.step_clock_ms) fixed.push_back("step_clock");
  if (options.curve_secret_key != options_.curve_secret_key ||
      options.engine_keys != options_.engine_keys || options.insecure != options_.insecure) {
    fixed.push_back("curve keys");
  }
  if (!fixed.empty()) {
    return Status::FailedPrecondition(
        fmt::format("reload cannot change {} (restart moectld for that); nothing was changed",
                    fmt::join(fixed, ", ")));
  }
  for (auto& [id, e] : engines_) {
    (void)e;
    if (options.ModeOf(id) != options_.ModeOf(id)) {
      spdlog::info("engine {}: mode {} -> {}", id, ControlModeName(options_.ModeOf(id)),
                   ControlModeName(options.ModeOf(id)));
    }
  }
  const bool knob_changed = learner_.Reload(LearnerOptionsOf(options));
  options_ = options;
  SetPlanGainParams();
  for (auto& [id, e] : engines_) {
    SetCapacityReplays(e);
    e.set_cost_model_options(options_.cost_model);
  }
  if (knob_changed) {
    // What was learnt of the new knob before is in the database.
    Status flushed = store_ ? store_->Flush() : Status::Ok();
    Status restored = flushed.ok() ? learner_.Restore(options_.db_path) : flushed;
    if (!restored.ok()) {
      spdlog::warn("learning: cannot read back samples of {}: {}",
                   policies::KnobsName(options_.learning.knobs), restored.ToString());
    }
  }
  spdlog::info("configuration reloaded: cadence {} ms, policies {}, mode {}{}", options_.cadence_ms,
               EnabledPolicies(), ControlModeName(options_.mode),
               options_.engine_modes.empty()
                   ? std::string()
                   : fmt::format(" ({} engine overrides)", options_.engine_modes.size()));
  return Status::Ok();
}

Status ControllerImpl::Shutdown() {
  if (!store_) return Status::Ok();
  Status s = store_->Close();
  store_.reset();
  return s;
}

ControllerStats ControllerImpl::stats() const {
  ControllerStats s = stats_;
  telemetry::LinkStats link = link_->stats();
  s.malformed = link.malformed;
  s.malformed_by_reason = link.skipped_by_reason;
  if (s.engines_refused > 0) s.refused_by_reason["max_engines"] = s.engines_refused;
  s.sequence_gaps = 0;
  for (const auto& [engine, gaps] : link.gaps)
    s.sequence_gaps += gaps;
  s.engines = engines_.size();
  if (store_) {
    storage::StoreStats st = store_->stats();
    s.store_pending = st.pending;
    s.store_write_errors = st.write_errors;
    s.store_rejected = st.rejected;
    s.store_lost = st.lost();
  }
  return s;
}

MetricsSnapshot ControllerImpl::metrics(bool per_layer) const {
  std::optional<storage::StoreStats> store;
  if (store_) store = store_->stats();
  return metrics_.Snapshot(stats(), store ? &*store : nullptr, link_->stats(), engines_,
                           clock_->NowNanos(), per_layer);
}

void ControllerImpl::SetCapacityReplays(EngineState& e) const {
  // Worked out at ingest only for the policy that prices them.
  e.set_capacity_replays(
      options_.counterfactual_enabled ? options_.counterfactual.candidates : std::vector<double>{},
      options_.counterfactual.lookback_steps);
}

std::string ControllerImpl::SentCommand::ChangeText() const {
  return change_text ? DumpWithMember(change, knob, *change_text) : change.dump();
}

void ControllerImpl::SetPlanGainParams() {
  if (!options_.counterfactual_enabled) {
    plans_.set_gain_params(std::nullopt);
    return;
  }
  plans_.set_gain_params(PlanWorker::GainParams{options_.counterfactual, options_.reward});
}

EngineState& ControllerImpl::Engine(const std::string& id) {
  auto it = engines_.find(id);
  if (it == engines_.end()) {
    it = engines_.emplace(id, EngineState(id, options_.window_steps, options_.limits.window_bytes))
             .first;
    if (std::optional<uint64_t> through = learner_.RestoredThrough(id)) {
      it->second.ledger().MarkLearntThrough(*through);
    }
    SetCapacityReplays(it->second);
    it->second.set_cost_model_options(options_.cost_model);
    auto issued = highest_epochs_.find(id);
    if (issued != highest_epochs_.end()) it->second.ReserveEpochsThrough(issued->second);
    const bool returned = gone_.erase(id) > 0;
    spdlog::info("engine {}: {} ({} mode)", id,
                 returned ? "back after it was gone" : "first message",
                 ControlModeName(ModeOf(id)));
  }
  return it->second;
}

const std::string& ControllerImpl::EngineIdOf(const telemetry::Inbound& inbound) {
  static const std::string kNone;
  return std::visit(
      [](const auto& message) -> const std::string& {
        using T = std::decay_t<decltype(message)>;
        if constexpr (std::is_same_v<T, telemetry::Command> || std::is_same_v<T, telemetry::Sync>) {
          return kNone;
        } else {
          return message.engine_id;
        }
      },
      inbound.message);
}

void ControllerImpl::Handle(telemetry::Inbound inbound) {
  ++stats_.messages;
  if (step_clock_ && std::holds_alternative<telemetry::StepRecord>(inbound.message)) {
    step_clock_->OnStep();
  }
  int64_t now = clock_->NowNanos();
  const std::string& id = EngineIdOf(inbound);
  if (!id.empty()) {
    if (std::optional<Refusal> refusal = Check(inbound)) {
      uint64_t n = ++stats_.refused_by_reason[refusal->reason];
      if (LogThisOne(n)) {
        spdlog::warn("engine {}: message refused ({}, {} so far): {}", id, refusal->reason, n,
                     refusal->detail);
      }
      return;
    }
    auto it = engines_.find(id);
    if (it == engines_.end() && engines_.size() >= static_cast<size_t>(options_.max_engines)) {
      if (LogThisOne(++stats_.engines_refused)) {
        spdlog::warn(
            "engine {}: message dropped: {} engines are tracked (max_engines); {} dropped so "
            "far",
            id, engines_.size(), stats_.engines_refused);
      }
      return;
    }
    Engine(id).Touch(now);
  }
  std::visit(
      [&](auto& message) {
        using T = std::decay_t<decltype(message)>;
        if constexpr (std::is_same_v<T, telemetry::StepRecord>) {
          OnStep(message, now);
        } else if constexpr (std::is_same_v<T, telemetry::Hello>) {
          OnHello(message, now);
        } else if constexpr (std::is_same_v<T, telemetry::Ack>) {
          OnAck(message, now);
        } else if constexpr (std::is_same_v<T, telemetry::Heartbeat>) {
          Engine(message.engine_id);
        } else {
          spdlog::warn("ignoring a Command or Sync from {}: engines do not send them",
                       inbound.peer);
        }
      },
      inbound.message);
}

std::optional<Refusal> ControllerImpl::Check(const telemetry::Inbound& inbound) const {
  if (const auto* hello = std::get_if<telemetry::Hello>(&inbound.message)) {
    return CheckHello(*hello, options_.limits);
  }
  if (const auto* step = std::get_if<telemetry::StepRecord>(&inbound.message)) {
    auto it = engines_.find(step->engine_id);
    if (it != engines_.end() && it->second.has_hello()) {
      return CheckStep(*step, it->second.hello());
    }
    // An engine back after it was gone: the shape of its last Hello.
    auto gone = gone_shapes_.find(step->engine_id);
    if (gone != gone_shapes_.end()) return CheckStep(*step, gone->second);
    {
      // Its shape is unknown, so nothing in it can be checked or used; the
      // engine sends its Hello on every (re)connect and periodically.
      return Refusal{"no_hello", "a step from an engine that has not sent its Hello"};
    }
  }
  return std::nullopt;
}

void ControllerImpl::OnHello(const telemetry::Hello& hello, int64_t now) {
  EngineState& e = Engine(hello.engine_id);
  gone_shapes_.erase(hello.engine_id);
  bool first = !e.has_hello();
  e.OnHello(hello, now);
  // The engines row takes the shape and epoch, not the knob vectors (MBs
  // for a placement of every layer, queued until written).
  telemetry::Hello row = hello;
  row.knobs = {};
  row.layer_knobs.clear();
  store_->UpsertEngine(row);
  if (first) {
    spdlog::info("engine {}: {} backend, {} layers x {} experts, epoch {}, top_k {}, cf {}",
                 hello.engine_id, hello.backend, hello.num_layers, hello.num_experts, hello.epoch,
                 e.knobs().top_k, e.knobs().capacity_factor);
    store_->RecordEpoch({hello.engine_id, hello.epoch, now, HelloEpochJson(e.knobs()).dump(), 0});
  }
  // The Hello names the epoch in force: it settles an ack that timed out.
  std::optional<PendingDecision>& pending = e.pending();
  if (pending && pending->ack_unknown) {
    if (hello.epoch >= pending->epoch) {
      SettleApplied(e, std::nullopt, fmt::format("a Hello reports epoch {}", hello.epoch), now);
    } else {
      SettleNotApplied(e, fmt::format("a Hello reports epoch {} in force", hello.epoch), now);
    }
  }
}

void ControllerImpl::OnStep(const telemetry::StepRecord& record, int64_t now) {
  ++stats_.steps;
  EngineState& e = Engine(record.engine_id);
  std::optional<uint64_t> ended = e.OnStep(record, now);
  if (std::optional<std::string> news = e.TakeCostModelNews()) {
    spdlog::info("engine {}: cost model: {}", e.engine_id(), *news);
  }
  metrics_.OnStep(record);
  store_->AppendStep(record);
  // Every epoch is learnt when it ends, also one rolled back at once.
  if (ended) learner_.MaybeLearn(e, *ended, /*ended=*/true, now, store_.get());
  std::optional<PendingDecision>& pending = e.pending();
  if (pending && pending->ack_unknown) {
    if (record.epoch >= pending->epoch) {
      SettleApplied(e, record.step,
                    fmt::format("step {} ran under epoch {}", record.step, record.epoch), now);
    } else if (++pending->steps_since_timeout >= options_.outcome_steps) {
      SettleNotApplied(e,
                       fmt::format("{} steps ran under epoch {} after the timeout",
                                   pending->steps_since_timeout, record.epoch),
                       now);
    }
  }
  if (pending && pending->acked && e.StepsUnder(pending->epoch) >= options_.outcome_steps) {
    Measure(e, now);
  }
  MaybeReact(e, record, now);
  if (record.await_sync) syncs_due_[record.engine_id] = DueSync{record.step};
}

void ControllerImpl::MaybeReact(EngineState& e, const telemetry::StepRecord& record, int64_t now) {
  if (options_.react_drop_rate <= 0 || e.pending()) return;
  if (e.last_react_ns != 0 &&
      now - e.last_react_ns < options_.react_min_interval_ms * kNanosPerMilli) {
    return;
  }
  uint64_t slots = 0, dropped = 0;
  for (const telemetry::LayerRecord& layer : record.layers) {
    slots += layer.num_token_slots;
    dropped += layer.dropped;
  }
  if (slots == 0 || static_cast<double>(dropped) < options_.react_drop_rate * slots) return;
  e.next_policy_run_ns = std::min(e.next_policy_run_ns, now);  // RunDue runs it next
  e.last_react_ns = now;
}

void ControllerImpl::SettleApplied(EngineState& e, std::optional<uint64_t> at_step,
                                   const std::string& why, int64_t now) {
  PendingDecision& pending = *e.pending();
  pending.ack_unknown = false;
  pending.acked = true;
  telemetry::Ack ack;
  ack.engine_id = e.engine_id();
  ack.epoch = pending.epoch;
  ack.applied = true;
  ack.applied_at_step = at_step.value_or(0);
  ack.error = "no ack; settled by telemetry: " + why;
  ack.timestamp_ns = now;
  store_->RecordAck(pending.decision_id, ack);
  auto sent = sent_.find({e.engine_id(), pending.epoch});
  if (sent != sent_.end()) {
    const SentCommand& cmd = sent->second;
    store_->RecordEpoch({e.engine_id(), pending.epoch, now, cmd.ChangeText(), cmd.decision_id});
    sent_.erase(sent);
  }
  spdlog::info("engine {}: epoch {} was applied without an ack ({})", e.engine_id(), pending.epoch,
               why);
}

void ControllerImpl::SettleNotApplied(EngineState& e, const std::string& why, int64_t now) {
  PendingDecision pending = *e.pending();
  e.pending().reset();
  telemetry::Ack ack;
  ack.engine_id = e.engine_id();
  ack.epoch = pending.epoch;
  ack.applied = false;
  ack.error = fmt::format("no ack within {} ms; not applied: {}", options_.ack_timeout_ms, why);
  ack.timestamp_ns = now;
  store_->RecordAck(pending.decision_id, ack);
  e.ledger().OnNotApplied(pending.epoch);
  sent_.erase({e.engine_id(), pending.epoch});
  spdlog::warn("engine {}: epoch {} was not applied ({})", e.engine_id(), pending.epoch, why);
}

void ControllerImpl::OnAck(const telemetry::Ack& ack, int64_t now) {
  ++stats_.acks;
  EngineState& e = Engine(ack.engine_id);
  auto sent = sent_.find({ack.engine_id, ack.epoch});
  if (sent == sent_.end()) {
    spdlog::warn("engine {}: ack for epoch {} matches no command sent by this controller",
                 ack.engine_id, ack.epoch);
    return;
  }
  const SentCommand& cmd = sent->second;
  store_->RecordAck(cmd.decision_id, ack);
  std::optional<PendingDecision>& pending = e.pending();
  bool is_pending = pending && pending->epoch == ack.epoch;
  if (!ack.applied) {
    ++stats_.failed_commands;
    spdlog::warn("engine {}: refused epoch {}: {}", ack.engine_id, ack.epoch, ack.error);
    e.ledger().OnRefused(ack.epoch);
    if (is_pending) pending.reset();
    sent_.erase(sent);
    return;
  }
  e.ledger().OnAcked(ack.epoch);
  store_->RecordEpoch({ack.engine_id, ack.epoch, now, cmd.ChangeText(), cmd.decision_id});
  spdlog::info("engine {}: applied epoch {} ({} = {}) at step {}", ack.engine_id, ack.epoch,
               cmd.knob, cmd.value, ack.applied_at_step);
  if (is_pending) {
    pending->acked = true;
    pending->ack_unknown = false;
  }
  sent_.erase(sent);
}

void ControllerImpl::RunDue() {
  current_ = CycleProfile{};
  PhaseTimer total(&current_.total_us);
  int64_t now = clock_->NowNanos();
  ExpireEngines(now);
  for (const auto& [engine, knob] : levers_.Expire(now)) {
    spdlog::info("engine {}: the pin on {} lapsed; the policies may change it again", engine, knob);
  }
  for (auto& [id, e] : engines_) {
    std::optional<PendingDecision>& pending = e.pending();
    const int64_t waited = pending ? now - pending->sent_ns : 0;
    if (pending && !pending->acked && !pending->ack_unknown &&
        waited > options_.ack_timeout_ms * kNanosPerMilli) {
      // Lost on the way there or back: telemetry will tell which.
      telemetry::Ack timeout;
      timeout.engine_id = id;
      timeout.epoch = pending->epoch;
      timeout.applied = false;
      timeout.error = fmt::format(
          "no ack within {} ms; applied or not is unknown until "
          "telemetry shows it",
          options_.ack_timeout_ms);
      timeout.timestamp_ns = now;
      store_->RecordAck(pending->decision_id, timeout);
      ++stats_.failed_commands;
      spdlog::warn("engine {}: epoch {}: {}", id, pending->epoch, timeout.error);
      pending->ack_unknown = true;
      e.ledger().OnAckTimeout(pending->epoch);
    } else if (pending && pending->ack_unknown &&
               waited > kForgetUnackedFactor * options_.ack_timeout_ms * kNanosPerMilli) {
      // A silent engine: stop waiting; its epoch stays unknown in the ledger.
      spdlog::warn("engine {}: epoch {}: still unknown after {} ms; the decision is dropped", id,
                   pending->epoch, waited / kNanosPerMilli);
      pending.reset();
    } else if (pending && pending->acked &&
               now - pending->sent_ns > kOutcomeTimeoutMs * kNanosPerMilli) {
      Measure(e, now);
    }
    if (now >= e.next_policy_run_ns) {
      e.next_policy_run_ns = now + options_.cadence_ms * kNanosPerMilli;
      ++current_.engines_run;
      RunPolicies(e, now);
    }
  }
  // A late ack is still taken (the engine did apply it), but not forever.
  std::erase_if(sent_, [&](const auto& entry) {
    return now - entry.second.sent_ns >
           kForgetUnackedFactor * options_.ack_timeout_ms * kNanosPerMilli;
  });
  if (options_.progress_interval_ms > 0 && now >= next_progress_ns_) {
    next_progress_ns_ = now + options_.progress_interval_ms * kNanosPerMilli;
    ControllerStats s = stats();
    spdlog::info(
        "progress: {} engines, {} steps, {} decisions ({} advisory), {} commands ({} failed, {} "
        "rollbacks), {} malformed{}, {} refused{}, {} gaps, db pending {}, db refused {}, db "
        "lost {}",
        s.engines, s.steps, s.decisions, s.advisory, s.commands_sent, s.failed_commands,
        s.rollbacks, s.malformed, ReasonList(s.malformed_by_reason), RefusedTotal(s),
        ReasonList(s.refused_by_reason), s.sequence_gaps, s.store_pending, s.store_rejected,
        s.store_lost);
  }
  total.Stop();
  cycle_start_.reset();
  if (current_.engines_run > 0) {
    CycleProfile& c = current_;
    c.other_us = c.total_us - c.snapshot_us - c.learn_us - c.policies_us - c.guard_us -
                 c.prediction_us - c.audit_us - c.commit_us - c.send_us;
    profile_ = std::move(current_);
  }
}

int64_t ControllerImpl::Decide(EngineState& e, const policies::EngineSnapshot& snapshot,
                               const policies::Proposal& proposal, const policies::Verdict& verdict,
                               Origin origin, int64_t now, const Joint& with) {
  ++stats_.decisions;
  // Rejections run by (policy, knob, layer); an identical one folds into the
  // run's row.
  std::string run, key;
  if (verdict.kind == policies::VerdictKind::kRejected) {
    run = fmt::format("{}|{}|{}", proposal.policy, proposal.knob, proposal.layer);
    key = RejectionKey(proposal, verdict.reason);
    auto it = e.rejection_runs.find(run);
    if (it != e.rejection_runs.end() && it->second.key == key) {
      // The same rejection again: counted on its first row.
      metrics_.OnDecision(e.engine_id(), proposal.policy, "rejected");
      store_->RecordRepeat(it->second.decision_id, ++it->second.repeats, now);
      return 0;
    }
  } else {
    e.rejection_runs.clear();
  }
  PhaseTimer audit_timer(&current_.audit_us);
  storage::DecisionRow row;
  row.engine_id = e.engine_id();
  row.created_ns = now;
  row.policy = proposal.policy;
  row.layer = proposal.layer;
  row.knob = proposal.knob;
  const std::string regime = policies::RegimeOf(snapshot, options_.learning);
  row.inputs_json = SnapshotJsonText(snapshot, regime);
  json proposal_json = {{"knob", proposal.knob},
                        {"layer", proposal.layer},
                        {"current", proposal.current},
                        {"value", proposal.value},
                        {"reason", proposal.reason}};
  const bool vector_knob = policies::IsVectorKnob(proposal.knob);
  const bool placement_knob = policies::IsPlacementKnob(proposal.knob);
  if (vector_knob) {
    proposal_json["changes"] = VectorChangesJson(proposal.current_vectors, proposal.vectors);
  }
  // A placement's changes are written as text once (PlacementChangesText):
  // for the proposal and, when the guard let it through as proposed, for the
  // command and the epochs row.
  std::string placement_changes;
  if (placement_knob) {
    placement_changes = PlacementChangesText(proposal.current_placements, proposal.placements);
  }
  // Joint settings: the command's other knobs, what a rollback restores.
  std::vector<CompanionChange> companions;
  std::vector<KnobChange> companion_changes;
  for (const auto& [p, v] : with) {
    CompanionChange c;
    c.policy = p.policy;
    c.change = {p.knob, v.value, v.vectors, v.placements};
    c.previous_value = p.current;
    c.previous_vectors = e.KnobVectors(p.knob);
    if (policies::IsPlacementKnob(p.knob)) c.previous_placements = e.Placements();
    proposal_json["with"].push_back({{"policy", p.policy},
                                     {"knob", p.knob},
                                     {"current", p.current},
                                     {"value", v.value},
                                     {"reason", p.reason},
                                     {"verdict_reason", v.reason}});
    companion_changes.push_back(c.change);
    companions.push_back(std::move(c));
  }
  row.proposal_json = placement_knob ? DumpWithMember(proposal_json, "changes", placement_changes)
                                     : proposal_json.dump();
  row.verdict = std::string(policies::VerdictName(verdict.kind));
  row.verdict_reason = verdict.reason;
  audit_timer.Stop();
  PhaseTimer prediction_timer(&current_.prediction_us);
  Companions scalar_companions;
  for (const auto& [p, v] : with) {
    if (!policies::IsVectorKnob(p.knob) && !policies::IsPlacementKnob(p.knob)) {
      scalar_companions.emplace_back(p.knob, v.value);
    }
  }
  const Prediction prediction =
      Predict(proposal.knob, proposal.current,
              verdict.kind == policies::VerdictKind::kRejected ? proposal.value : verdict.value,
              scalar_companions, snapshot, options_.reward, options_.learning,
              learner_.StateOf(e.engine_id()));
  row.predicted_gain = prediction.gain();
  row.prediction_json = prediction.Json();
  prediction_timer.Stop();
  metrics_.OnDecision(row.engine_id, row.policy, row.verdict);
  if (verdict.kind == policies::VerdictKind::kRejected) {
    row.status = "rejected";
    const int64_t id = store_->RecordDecision(std::move(row));
    e.rejection_runs[run] = {std::move(key), id, 0};
    spdlog::debug("engine {}: {} {} -> {} rejected: {}", e.engine_id(), proposal.knob,
                  proposal.current, proposal.value, verdict.reason);
    return id;
  }
  KnobChange change{proposal.knob, verdict.value, verdict.vectors, verdict.placements};
  std::vector<std::vector<float>> in_force = e.KnobVectors(proposal.knob);
  std::vector<std::vector<uint32_t>> placed =
      placement_knob ? e.Placements() : std::vector<std::vector<uint32_t>>{};
  // The change as ChangeJson writes it; for a vector or placement that the
  // guard let through as proposed, from the proposal's own changes, not
  // built a second time.
  PhaseTimer change_audit_timer(&current_.audit_us);
  json change_json;
  // A placement's change stays text, dumped under proposal.knob with the
  // rest of change_json (SentCommand::ChangeText).
  std::optional<std::string> change_text;
  if (vector_knob && in_force == proposal.current_vectors && change.vectors == proposal.vectors) {
    change_json = json::object();
    change_json[proposal.knob] = std::move(proposal_json["changes"]);
  } else if (placement_knob) {
    change_json = json::object();
    const bool as_proposed =
        placed == proposal.current_placements && change.placements == proposal.placements;
    change_text = as_proposed ? std::move(placement_changes)
                              : PlacementChangesText(placed, change.placements);
  } else {
    change_json = ChangeJson(change, in_force, placed);
  }
  auto dump_change = [&] {
    return change_text ? DumpWithMember(change_json, proposal.knob, *change_text)
                       : change_json.dump();
  };
  for (const CompanionChange& c : companions) {
    change_json["with"].push_back(ChangeJson(c.change, c.previous_vectors, c.previous_placements));
  }
  change_audit_timer.Stop();
  if (ModeOf(e.engine_id()) == ControlMode::kAdvisory) {
    // Decided and audited as if active; nothing goes to the engine.
    ++stats_.advisory;
    row.command_json = dump_change();
    row.status = "advisory";
    int64_t id = store_->RecordDecision(std::move(row));
    spdlog::info(
        "engine {}: advisory decision {}: would set {} {} -> {} ({}); predicted gain {}",
        e.engine_id(), id, proposal.knob, proposal.current, verdict.value, proposal.reason,
        prediction.gain() ? fmt::format("{:.4f}", *prediction.gain()) : std::string("unknown"));
    return id;
  }
  telemetry::Command command;
  command.engine_id = e.engine_id();
  command.epoch = e.NextEpoch();
  command.issued_ns = now;
  AddChange(change, in_force, placed, &command);
  command.reason = fmt::format("{}: {}", proposal.policy, proposal.reason);
  for (const CompanionChange& c : companions) {
    AddChange(c.change, c.previous_vectors, c.previous_placements, &command);
    command.reason += fmt::format("; with {}: {} = {}", c.policy, c.change.knob, c.change.value);
  }
  PhaseTimer command_audit_timer(&current_.audit_us);
  change_json["epoch"] = command.epoch;
  row.command_json = dump_change();
  change_json.erase("epoch");  // what the epochs row records once the engine applies it
  command_audit_timer.Stop();
  row.status = "sent";
  row.epoch = command.epoch;
  row.sent_ns = now;
  PhaseTimer commit_timer(&current_.commit_us);
  // The audit row is committed before the engine can act on the command,
  // so a crash cannot leave a change applied with no record of it. It is
  // written ahead of the telemetry queued before it, in its own transaction.
  // The wait is bounded well under the loop's health limit: a database that
  // stops accepting writes holds this command back, never the loop.
  const int64_t commit_wait_ms =
      std::min(options_.ack_timeout_ms, options_.metrics.loop_timeout_ms / 4);
  const storage::Store::DecisionCommit commit =
      store_->CommitDecision(std::move(row), std::chrono::milliseconds(commit_wait_ms));
  const int64_t id = commit.id;
  const Status& committed = commit.status;
  commit_timer.Stop();
  PhaseTimer send_timer(&current_.send_us);
  Status sent = committed.ok() ? link_->SendCommand(command)
                               : Status::Unavailable(
                                     "not sent: the decision could not be committed "
                                     "first: " +
                                     committed.message());
  send_timer.Stop();
  if (cycle_start_.has_value()) {
    current_.to_command_us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - *cycle_start_)
            .count();
  }
  if (!sent.ok()) {
    ++stats_.failed_commands;
    telemetry::Ack failure;
    failure.engine_id = e.engine_id();
    failure.epoch = command.epoch;
    failure.error = "send failed: " + sent.message();
    failure.timestamp_ns = now;
    store_->RecordAck(id, failure);
    spdlog::warn("engine {}: cannot send epoch {}: {}", e.engine_id(), command.epoch,
                 sent.message());
    return id;
  }
  ++stats_.commands_sent;
  e.OnSent(command.epoch, change, companion_changes);
  store_->RecordCommandSent(id, command.epoch, now);
  sent_[{e.engine_id(), command.epoch}] = {
      id, change.knob, change.value, std::move(change_json), std::move(change_text), now};
  PendingDecision pending;
  pending.decision_id = id;
  pending.epoch = command.epoch;
  pending.sent_ns = now;
  pending.knob = proposal.knob;
  pending.previous_value = proposal.current;
  pending.new_value = verdict.value;
  pending.previous_vectors = std::move(in_force);
  pending.previous_placements = std::move(placed);
  pending.companions = std::move(companions);
  pending.is_rollback = origin == Origin::kRollback;
  pending.from_operator = origin == Origin::kOperator;
  pending.before = e.Figures(snapshot.epoch, options_.outcome_steps);
  pending.reward_before = policies::Reward(pending.before, options_.reward);
  e.pending() = std::move(pending);
  spdlog::info("engine {}: decision {}: {} {} -> {} under epoch {} ({})", e.engine_id(), id,
               proposal.knob, proposal.current, verdict.value, command.epoch, command.reason);
  return id;
}

void ControllerImpl::Measure(EngineState& e, int64_t now) {
  static const std::vector<std::vector<uint32_t>> kNoPlacement;
  PendingDecision pending = *e.pending();
  e.pending().reset();
  policies::OutcomeFigures after = e.Figures(pending.epoch, options_.outcome_steps);
  double reward_after = policies::Reward(after, options_.reward);
  storage::DecisionOutcome outcome;
  outcome.measured_ns = now;
  json j = {{"epoch", pending.epoch},
            {"before", FiguresJson(pending.before)},
            {"after", FiguresJson(after)},
            {"reward_before", pending.reward_before}};
  if (after.steps > 0) {
    outcome.reward_before = pending.reward_before;
    outcome.reward_after = reward_after;
    j["reward_after"] = reward_after;
    j["reward_delta"] = reward_after - pending.reward_before;
  } else {
    j["note"] = "no steps ran under this epoch before the outcome timeout";
  }

  spdlog::info(
      "engine {}: decision {} measured over {} steps: drop {:.4f} -> {:.4f}, reward "
      "{:.4f} -> {:.4f}",
      e.engine_id(), pending.decision_id, after.steps, pending.before.drop_rate, after.drop_rate,
      pending.reward_before, reward_after);
  e.last_outcome =
      EngineStatus::Outcome{pending.decision_id,
                            pending.knob,
                            pending.new_value,
                            pending.reward_before,
                            after.steps > 0 ? std::optional<double>(reward_after) : std::nullopt,
                            false,
                            now};
  bool roll_back = options_.rollback_enabled && !pending.is_rollback && !pending.from_operator &&
                   after.steps > 0 &&
                   policies::ShouldRollBack(pending.reward_before, reward_after, options_.guard);
  // Before and after differ in their tokens as well as in the knob. A
  // capacity factor's effect on the very steps it governed is replayed from
  // their demand: when the previous value would have done no better on them,
  // the workload, not the change, lowered the reward, and the change stays.
  // A placement that went with it is replayed too (both ways).
  const bool replayable = std::all_of(
      pending.companions.begin(), pending.companions.end(),
      [](const CompanionChange& c) { return policies::IsPlacementKnob(c.change.knob); });
  const bool capacity = pending.knob == policies::knob::kCapacityFactor && replayable &&
                        pending.companions.size() <= 1;
  const bool placement = policies::IsPlacementKnob(pending.knob) && pending.companions.empty();
  if (roll_back && (capacity || placement)) {
    const policies::EngineSnapshot now_snapshot = e.Snapshot(now);
    const double cf_now = now_snapshot.knobs.capacity_factor;
    // The placement the previous setting ran under, when this change moved it.
    const std::vector<std::vector<uint32_t>>& moved_from =
        placement ? pending.previous_placements
                  : (pending.companions.empty() ? kNoPlacement
                                                : pending.companions[0].previous_placements);
    const std::optional<policies::SameTokens> same = policies::CapacityOnSameTokens(
        now_snapshot, pending.epoch, capacity ? pending.new_value : cf_now,
        capacity ? pending.previous_value : cf_now, options_.counterfactual, options_.reward,
        moved_from);
    if (same) {
      j["same_tokens"] = {{"steps", same->steps},
                          {"reward_changed", same->reward_changed},
                          {"reward_previous", same->reward_previous},
                          {"drop_changed", same->drop_changed},
                          {"drop_previous", same->drop_previous}};
      if (same->reward_previous <= same->reward_changed) {
        roll_back = false;
        j["kept"] = fmt::format(
            "the reward fell from {:.4f} to {:.4f}, but on the same {} steps the previous {} "
            "would have scored {:.4f} (drop {:.4f}) against {:.4f} (drop {:.4f}): the workload "
            "moved",
            pending.reward_before, reward_after, same->steps,
            placement ? std::string("placement")
                      : fmt::format("{} = {}", pending.knob, pending.previous_value),
            same->reward_previous, same->drop_previous, same->reward_changed, same->drop_changed);
        spdlog::info("engine {}: decision {} kept: {}", e.engine_id(), pending.decision_id,
                     j["kept"].get<std::string>());
      }
    }
  }
  outcome.outcome_json = j.dump();
  store_->RecordOutcome(pending.decision_id, outcome);
  if (roll_back) {
    ++stats_.rollbacks;
    metrics_.OnRollback(e.engine_id());
    policies::EngineSnapshot snapshot = e.Snapshot(now);
    policies::Proposal rollback;
    rollback.policy = "guard-rollback";
    rollback.knob = pending.knob;
    rollback.current = e.KnobValue(pending.knob);
    rollback.value = pending.previous_value;
    rollback.reason =
        fmt::format("decision {} lowered the reward from {:.4f} to {:.4f}; restoring {} = {}",
                    pending.decision_id, pending.reward_before, reward_after, pending.knob,
                    pending.previous_value);
    policies::Verdict verdict;
    verdict.kind = policies::VerdictKind::kAccepted;
    verdict.value = pending.previous_value;
    verdict.reason = "rollback to the last known good setting";
    if (policies::IsVectorKnob(pending.knob)) {
      rollback.current_vectors = e.KnobVectors(pending.knob);
      rollback.vectors = pending.previous_vectors;
      verdict.vectors = pending.previous_vectors;
    }
    if (policies::IsPlacementKnob(pending.knob)) {
      rollback.current_placements = e.Placements();
      rollback.placements = pending.previous_placements;
      verdict.placements = pending.previous_placements;
    }
    e.guard_state().last_change_ns[pending.knob] = now;
    Joint with;  // a joint setting is undone as a whole
    for (const CompanionChange& c : pending.companions) {
      policies::Proposal undo;
      undo.policy = "guard-rollback";
      undo.knob = c.change.knob;
      undo.current = e.KnobValue(c.change.knob);
      undo.value = c.previous_value;
      undo.reason = fmt::format("with decision {}: restoring {} = {}", pending.decision_id,
                                c.change.knob, c.previous_value);
      policies::Verdict v;
      v.kind = policies::VerdictKind::kAccepted;
      v.value = c.previous_value;
      v.reason = verdict.reason;
      if (policies::IsVectorKnob(c.change.knob)) {
        undo.current_vectors = e.KnobVectors(c.change.knob);
        undo.vectors = v.vectors = c.previous_vectors;
      }
      if (policies::IsPlacementKnob(c.change.knob)) {
        undo.current_placements = e.Placements();
        undo.placements = v.placements = c.previous_placements;
      }
      e.guard_state().last_change_ns[c.change.knob] = now;
      with.emplace_back(std::move(undo), std::move(v));
    }
    e.last_outcome->rolled_back = true;
    Decide(e, snapshot, rollback, verdict, Origin::kRollback, now, with);
  }
}

}  // namespace moe::controller
