// ControllerImpl's operator levers, engine liveness and what a restart reads
// back from the database (controller_impl.h).

#include "controller_impl.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>

#include "moe/storage/reader.h"

namespace moe::controller {

ControlMode ControllerImpl::ModeOf(const std::string& engine_id) const {
  return levers_.mode(engine_id).value_or(options_.ModeOf(engine_id));
}

bool ControllerImpl::PinInForce(const EngineState& e, const std::string& knob, double value) {
  if (!policies::IsVectorKnob(knob)) return std::abs(e.KnobValue(knob) - value) < 1e-9;
  for (const std::vector<float>& layer : e.KnobVectors(knob)) {
    for (float x : layer) {
      if (std::abs(static_cast<double>(x) - value) > 1e-7) return false;
    }
  }
  return true;
}

int64_t ControllerImpl::ApplyPins(EngineState& e, const policies::EngineSnapshot& snapshot,
                                  int64_t now) {
  if (ModeOf(e.engine_id()) == ControlMode::kAdvisory || e.pending() || !e.has_hello()) return 0;
  for (const auto& [knob, pin] : levers_.Pins(e.engine_id(), now)) {
    if (PinInForce(e, knob, pin.value)) continue;
    int64_t& tried = e.pin_tried_ns[knob];
    if (tried != 0 && now - tried < kPinRetryMs * kNanosPerMilli) continue;
    tried = now;
    policies::Proposal proposal;
    proposal.policy = "operator";
    proposal.knob = knob;
    proposal.current = e.KnobValue(knob);
    proposal.value = pin.value;
    proposal.reason =
        fmt::format("pinned by operator lever {} ({}: {})", pin.action_id, pin.who, pin.reason);
    policies::Verdict verdict;
    verdict.kind = policies::VerdictKind::kAccepted;
    verdict.value = pin.value;
    verdict.reason = "operator pin, within the guard's bounds";
    if (policies::IsVectorKnob(knob)) {
      proposal.current_vectors = e.KnobVectors(knob);
      verdict.vectors.assign(
          e.hello().num_layers,
          std::vector<float>(e.hello().num_experts, static_cast<float>(pin.value)));
      proposal.vectors = verdict.vectors;
    }
    e.guard_state().last_change_ns[knob] = now;
    return Decide(e, snapshot, proposal, verdict, Origin::kOperator, now);
  }
  return 0;
}

void ControllerImpl::ExpireEngines(int64_t now) {
  const int64_t expiry = options_.engine_expiry_ms * kNanosPerMilli;
  for (auto it = engines_.begin(); it != engines_.end();) {
    EngineState& e = it->second;
    if (now - e.last_seen_ns() <= expiry) {
      ++it;
      continue;
    }
    const std::string id = e.engine_id();
    if (e.pending()) {
      store_->RecordUnknown(e.pending()->decision_id,
                            fmt::format("engine {} went silent for {} ms before the outcome "
                                        "was measured",
                                        id, (now - e.last_seen_ns()) / kNanosPerMilli),
                            now);
    }
    std::erase_if(sent_, [&](const auto& entry) { return entry.first.first == id; });
    store_->MarkEngineGone(id, now);
    spdlog::warn(
        "engine {}: gone (no message for {} ms, engine_expiry {} ms); its state is "
        "evicted, its rows stay",
        id, (now - e.last_seen_ns()) / kNanosPerMilli, options_.engine_expiry_ms);
    gone_[id] = e.last_seen_ns();
    if (e.has_hello()) {
      // Its shape (not its knobs: they may be large), so that its steps
      // are taken when it speaks again before its next Hello.
      telemetry::Hello shape = e.hello();
      shape.knobs = {};
      shape.layer_knobs.clear();
      gone_shapes_[id] = std::move(shape);
    }
    if (gone_.size() > kMaxGoneRemembered) {
      auto oldest = std::min_element(gone_.begin(), gone_.end(), [](const auto& a, const auto& b) {
        return a.second < b.second;
      });
      gone_shapes_.erase(oldest->first);
      gone_.erase(oldest);
    }
    ++stats_.engines_gone;
    // Its counters go too (exported only for tracked engines; one that
    // returns starts them again, a counter reset to Prometheus), so ids
    // that come and go cannot grow the recorder.
    metrics_.Forget(id);
    syncs_due_.erase(id);
    it = engines_.erase(it);
  }
}

Status ControllerImpl::RestoreFromDatabase(const std::string& db_path) {
  MOE_RETURN_IF_ERROR(store_->Flush());
  MOE_ASSIGN_OR_RETURN(std::unique_ptr<storage::Reader> reader, storage::Reader::Open(db_path));
  MOE_ASSIGN_OR_RETURN(highest_epochs_, reader->HighestEpochs());
  MOE_ASSIGN_OR_RETURN(std::vector<storage::OperatorActionRow> actions,
                       reader->OperatorActions("", 0));
  for (const storage::OperatorActionRow& row : actions)
    levers_.Apply(row);
  store_->RecordUnknown(std::nullopt, "moectld restarted before the outcome was measured",
                        clock_->NowNanos());
  if (!actions.empty()) {
    spdlog::info("levers: {} operator actions replayed from the database", actions.size());
  }
  return Status::Ok();
}

Result<LeverOutcome> ControllerImpl::Pull(const Lever& lever) {
  ++stats_.levers;
  const int64_t now = clock_->NowNanos();
  const std::string& id = lever.engine_id;
  const bool tracked = engines_.count(id) > 0;
  if (!tracked && gone_.count(id) == 0 && highest_epochs_.count(id) == 0) {
    std::vector<std::string> known;
    for (const auto& [engine, e] : engines_)
      known.push_back(engine);
    return Status::NotFound(
        known.empty()
            ? fmt::format("unknown engine '{}': no engine is connected", id)
            : fmt::format("unknown engine '{}'; known engines: {}", id, fmt::join(known, ", ")));
  }
  Status check = LeverBook::Check(lever, options_.guard);
  if (check.ok() && lever.action == LeverAction::kPin && ModeOf(id) == ControlMode::kAdvisory) {
    check = Status::FailedPrecondition(fmt::format(
        "engine {} is advisory: the controller sends it nothing, pins included; switch it to "
        "active first (moectl mode --engine {} active)",
        id, id));
  }
  if (check.ok() && lever.action == LeverAction::kUnpin && !levers_.Pin(id, lever.knob, now)) {
    check =
        Status::FailedPrecondition(fmt::format("{} is not pinned on engine {}", lever.knob, id));
  }
  if (!check.ok()) {
    const int64_t action_id =
        store_->RecordOperatorAction(LeverBook::Row(lever, now, "refused: " + check.message()));
    spdlog::warn("lever {}: {} {} by {} refused: {}", action_id, LeverActionName(lever.action), id,
                 lever.caller.Describe(), check.message());
    return check;
  }
  storage::OperatorActionRow row = LeverBook::Row(lever, now, "done");
  const bool was_paused = levers_.paused(id);
  const ControlMode was_mode = ModeOf(id);
  row.id = store_->RecordOperatorAction(row);
  levers_.Apply(row);
  LeverOutcome out;
  out.action_id = row.id;
  switch (lever.action) {
    case LeverAction::kPause:
      out.message = was_paused ? fmt::format("engine {} was already paused", id)
                               : fmt::format(
                                     "engine {} paused: the controller decides nothing new for "
                                     "it (a decision in flight is still measured; pins still "
                                     "apply); `moectl resume --engine {}` undoes it",
                                     id, id);
      break;
    case LeverAction::kResume:
      out.message = was_paused
                        ? fmt::format("engine {} resumed: its policies run at the next tick", id)
                        : fmt::format("engine {} was not paused", id);
      break;
    case LeverAction::kMode:
      out.message = fmt::format("engine {}: mode {} (was {})", id, ControlModeName(lever.mode),
                                ControlModeName(was_mode));
      break;
    case LeverAction::kUnpin:
      out.message = fmt::format(
          "{} unpinned on engine {}: the policies may change it again (its value stays)",
          lever.knob, id);
      break;
    case LeverAction::kPin: {
      const std::string held =
          row.until_ns ? fmt::format("for {} s", lever.duration_ms / 1000) : "until unpinned";
      auto it = engines_.find(id);
      if (it == engines_.end() || !it->second.has_hello()) {
        out.message = fmt::format(
            "{} pinned at {} on engine {} {}; the engine is not connected: it is sent when the "
            "engine speaks again",
            lever.knob, lever.value, id, held);
        break;
      }
      EngineState& e = it->second;
      if (e.pending()) {
        out.message = fmt::format(
            "{} pinned at {} on engine {} {}; sent once decision {} in flight is measured",
            lever.knob, lever.value, id, held, e.pending()->decision_id);
        break;
      }
      e.pin_tried_ns.erase(lever.knob);
      const int64_t decision = ApplyPins(e, e.Snapshot(now), now);
      if (decision != 0) {
        out.decision_id = decision;
        store_->LinkOperatorAction(row.id, decision);
        out.message = fmt::format("{} pinned at {} on engine {} {}: sent as decision {}{}",
                                  lever.knob, lever.value, id, held, decision,
                                  e.pending() ? fmt::format(" under epoch {}", e.pending()->epoch)
                                              : std::string(" (the send failed; see moectl "
                                                            "explain)"));
      } else {
        out.message = fmt::format("{} pinned at {} on engine {} {}: the engine runs it already",
                                  lever.knob, lever.value, id, held);
      }
      break;
    }
  }
  spdlog::info("lever {}: {} by {} ({}): {}", row.id, LeverActionName(lever.action),
               lever.caller.Describe(), lever.reason, out.message);
  return out;
}

std::vector<EngineStatus> ControllerImpl::EngineStatuses() const {
  const int64_t now = clock_->NowNanos();
  std::vector<EngineStatus> out;
  auto levers = [&](EngineStatus& st) {
    st.mode = ModeOf(st.engine_id);
    st.mode_from_operator = levers_.mode(st.engine_id).has_value();
    st.paused = levers_.paused(st.engine_id);
    for (const auto& [knob, pin] : levers_.Pins(st.engine_id, now)) {
      st.pins.push_back({knob, pin.value, pin.until_ns, pin.action_id});
    }
  };
  for (const auto& [id, e] : engines_) {
    EngineStatus st;
    st.engine_id = id;
    st.last_seen_ns = e.last_seen_ns();
    st.liveness =
        now - e.last_seen_ns() <= options_.stale_after_ms * kNanosPerMilli ? "live" : "stale";
    levers(st);
    st.epoch = e.epoch();
    st.knobs = e.knobs();
    st.knobs.expert_bias.clear();
    st.knobs.phy2log.clear();
    st.max_abs_bias = e.KnobValue(std::string(policies::knob::kExpertBias));
    st.steps = e.steps_seen();
    const policies::OutcomeFigures now_figures = e.Figures(e.epoch(), options_.outcome_steps);
    if (now_figures.steps > 0) {
      st.drop_rate = now_figures.drop_rate;
      st.step_ms = now_figures.step_us / 1000.0;
      if (now_figures.critical_path_us > 0)
        st.critical_path_ms = now_figures.critical_path_us / 1e3;
    }
    if (const std::optional<PendingDecision>& p = e.pending()) {
      st.in_flight =
          EngineStatus::InFlight{p->decision_id,
                                 p->knob,
                                 p->new_value,
                                 p->epoch,
                                 p->acked ? "acked" : (p->ack_unknown ? "ack unknown" : "sent"),
                                 p->sent_ns};
    }
    st.last_outcome = e.last_outcome;
    out.push_back(std::move(st));
  }
  for (const auto& [id, last_seen] : gone_) {
    EngineStatus st;
    st.engine_id = id;
    st.liveness = "gone";
    st.last_seen_ns = last_seen;
    levers(st);
    out.push_back(std::move(st));
  }
  std::sort(out.begin(), out.end(),
            [](const EngineStatus& a, const EngineStatus& b) { return a.engine_id < b.engine_id; });
  return out;
}

}  // namespace moe::controller
