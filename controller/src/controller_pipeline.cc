// The policy pipeline of one engine: ask the enabled policies in order, judge
// each proposal (pins, guard, placement counterfactual) and, with joint
// settings, gather the later policies' proposals of other knobs into the same
// decision. Decide() (controller.cc) records and sends what comes out.

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "controller_impl.h"
#include "moe/policies/adaptive_k_policy.h"
#include "moe/policies/baseline_policies.h"
#include "moe/policies/bias_policy.h"
#include "moe/policies/capacity_policy.h"
#include "moe/policies/counterfactual_policy.h"
#include "moe/policies/guard.h"
#include "moe/policies/learning_policy.h"
#include "moe/policies/noise_policy.h"
#include "moe/policies/replication_policy.h"
#include "phase_timer.h"

namespace moe::controller {

bool ControllerImpl::PolicyEnabled(const std::string& name) const {
  return (name == "capacity" && options_.capacity_enabled) ||
         (name == "bias" && options_.bias_enabled) ||
         (name == "adaptive_k" && options_.adaptive_k_enabled) ||
         (name == "noise" && options_.noise_enabled) ||
         (name == "replication" && options_.replication_enabled) ||
         (name == "learning" && options_.learning_enabled) ||
         (name == "counterfactual" && options_.counterfactual_enabled) ||
         (name == "dynamic_capacity" && options_.dynamic_capacity_enabled) ||
         (name == "eplb" && options_.eplb_enabled);
}

std::string ControllerImpl::EnabledPolicies() const {
  std::vector<std::string> on;
  for (const std::string& name : options_.policy_order) {
    if (PolicyEnabled(name)) on.push_back(name);
  }
  return on.empty() ? std::string("none") : fmt::format("{}", fmt::join(on, ", "));
}

std::optional<policies::Proposal> ControllerImpl::Ask(
    const std::string& name, const std::shared_ptr<const policies::EngineSnapshot>& shared,
    const policies::GuardState& guard_state) {
  const policies::EngineSnapshot& snapshot = *shared;
  if (name == "capacity" && options_.capacity_enabled) {
    return policies::ProposeCapacity(snapshot, options_.capacity);
  }
  if (name == "bias" && options_.bias_enabled) {
    return policies::ProposeBias(snapshot, options_.bias);
  }
  if (name == "adaptive_k" && options_.adaptive_k_enabled) {
    return policies::ProposeAdaptiveK(snapshot, options_.adaptive_k);
  }
  if (name == "noise" && options_.noise_enabled) {
    return policies::ProposeNoise(snapshot, options_.noise);
  }
  if (name == "replication" && options_.replication_enabled) {
    // Planning is costly: not while the guard would refuse any placement.
    if (policies::CooldownLeftMs(std::string(policies::knob::kPhy2log), snapshot.now_ns,
                                 options_.guard, guard_state) > 0) {
      return std::nullopt;
    }
    policies::ReplicationPolicyParams params = options_.replication;
    // A deadline per layer, on the wall (a budget of work, not of engine
    // steps); a frozen test clock never expires. On a step clock none: the
    // planner runs to its work limits, so a plan does not depend on how
    // much CPU the machine gave it.
    params.clock = step_clock_ ? nullptr : wall_clock_;
    return plans_.Ask(shared, params);
  }
  if (name == "counterfactual" && options_.counterfactual_enabled) {
    return policies::ProposeCounterfactualCapacity(snapshot, options_.counterfactual,
                                                   options_.reward);
  }
  if (name == "dynamic_capacity" && options_.dynamic_capacity_enabled) {
    return policies::ProposeDynamicCapacity(snapshot, options_.dynamic_capacity);
  }
  if (name == "eplb" && options_.eplb_enabled) {
    return policies::ProposePeriodicEplb(snapshot, options_.eplb);
  }
  if (name == "learning" && options_.learning_enabled) {
    return policies::ProposeLearning(snapshot, options_.learning,
                                     learner_.StateOf(snapshot.engine_id));
  }
  return std::nullopt;
}

void ControllerImpl::RunPolicies(EngineState& e, int64_t now) {
  if (!e.has_hello()) return;
  cycle_start_ = std::chrono::steady_clock::now();
  PhaseTimer snapshot_timer(&current_.snapshot_us);
  const auto shared = std::make_shared<const policies::EngineSnapshot>(e.Snapshot(now));
  const policies::EngineSnapshot& snapshot = *shared;
  snapshot_timer.Stop();
  {
    PhaseTimer timer(&current_.learn_us);
    learner_.MaybeLearn(e, snapshot.epoch, /*ended=*/false, now, store_.get());
  }
  // One change in flight per engine: its outcome is measured before the next.
  if (e.pending()) return;
  // While the database refuses writes no decision can be audited before it
  // is sent, and waiting on its commit would stall the loop: none is made.
  if (store_ != nullptr && store_->stats().failing) {
    if (!held_for_database_) {
      spdlog::warn("no decisions while the database does not accept writes");
    }
    held_for_database_ = true;
    return;
  }
  if (held_for_database_) spdlog::info("the database accepts writes again: deciding");
  held_for_database_ = false;
  if (ApplyPins(e, snapshot, now) != 0) return;
  if (levers_.paused(e.engine_id())) return;
  const std::vector<std::string>& order = options_.policy_order;
  for (size_t i = 0; i < order.size(); ++i) {
    std::optional<policies::Proposal> proposal = AskTimed(order[i], shared, e.guard_state());
    if (!proposal) continue;
    const policies::Verdict verdict = JudgeProposal(e, *proposal, snapshot, now);
    if (verdict.kind == policies::VerdictKind::kRejected) {
      Decide(e, snapshot, *proposal, verdict, Origin::kPolicy, now);
      continue;
    }
    // Joint settings: the policies after it see the snapshot with this change
    // applied; an accepted proposal of another knob joins the command.
    Joint with;
    // Only when a later policy can join: the copy of the snapshot is the
    // largest cost of a cycle that sends a placement.
    const bool later = std::any_of(order.begin() + static_cast<std::ptrdiff_t>(i) + 1, order.end(),
                                   [&](const auto& n) { return PolicyEnabled(n); });
    const std::vector<policies::Proposal> companions = std::move(proposal->companions);
    if (!companions.empty() || (options_.joint_changes && later)) {
      auto joint = std::make_shared<policies::EngineSnapshot>(snapshot);
      ApplyChange({proposal->knob, verdict.value, verdict.vectors, verdict.placements},
                  joint->knobs);
      // A joint setting's other knobs (the learning policy's) come first:
      // they are one choice with the proposal. The guard may refuse one (it
      // is then not sent, and the learner learns the setting applied).
      for (const policies::Proposal& c : companions) {
        const policies::Verdict v = JudgeProposal(e, c, *joint, now);
        if (v.kind == policies::VerdictKind::kRejected) {
          spdlog::debug("engine {}: {} {} -> {} with {} not sent: {}", e.engine_id(), c.knob,
                        c.current, c.value, proposal->knob, v.reason);
          continue;
        }
        ApplyChange({c.knob, v.value, v.vectors, v.placements}, joint->knobs);
        with.emplace_back(c, v);
      }
      for (size_t j = i + 1; j < order.size() && options_.joint_changes; ++j) {
        std::optional<policies::Proposal> more = AskTimed(order[j], joint, e.guard_state());
        if (!more || more->knob == proposal->knob) continue;
        const bool taken = std::any_of(with.begin(), with.end(),
                                       [&](const auto& w) { return w.first.knob == more->knob; });
        if (taken) continue;
        const policies::Verdict v = JudgeProposal(e, *more, *joint, now);
        if (v.kind == policies::VerdictKind::kRejected) continue;  // asked again next tick
        ApplyChange({more->knob, v.value, v.vectors, v.placements}, joint->knobs);
        with.emplace_back(std::move(*more), v);
      }
    }
    Decide(e, snapshot, *proposal, verdict, Origin::kPolicy, now, with);
    return;
  }
}

policies::Verdict ControllerImpl::JudgeProposal(EngineState& e, const policies::Proposal& proposal,
                                                const policies::EngineSnapshot& snapshot,
                                                int64_t now) {
  PhaseTimer guard_timer(&current_.guard_us);
  policies::Verdict verdict;
  if (const PinState* pin = levers_.Pin(e.engine_id(), proposal.knob, now)) {
    verdict.kind = policies::VerdictKind::kRejected;
    verdict.reason =
        fmt::format("{} is pinned at {} by operator lever {} ({}: {}){}", proposal.knob, pin->value,
                    pin->action_id, pin->who, pin->reason,
                    pin->until_ns ? fmt::format(" until {}", *pin->until_ns) : std::string());
    return verdict;
  }
  verdict = policies::Judge(proposal, snapshot, options_.guard, &e.guard_state());
  JudgePlacement(proposal, snapshot, &verdict);
  return verdict;
}

std::optional<policies::Proposal> ControllerImpl::AskTimed(
    const std::string& name, const std::shared_ptr<const policies::EngineSnapshot>& snapshot,
    const policies::GuardState& guard_state) {
  const auto asked = std::chrono::steady_clock::now();
  std::optional<policies::Proposal> proposal = Ask(name, snapshot, guard_state);
  const double asked_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - asked).count();
  current_.policies_us += asked_us;
  current_.policy_us.emplace_back(name, asked_us);
  return proposal;
}

void ControllerImpl::JudgePlacement(const policies::Proposal& proposal,
                                    const policies::EngineSnapshot& snapshot,
                                    policies::Verdict* verdict) {
  if (!options_.counterfactual_enabled || !policies::IsPlacementKnob(proposal.knob) ||
      verdict->kind == policies::VerdictKind::kRejected) {
    return;
  }
  if (!snapshot.cost_model.calibrated) {
    verdict->reason += "; not judged on the window's demand: no cost model fitted yet";
    return;
  }
  // A plan made on the worker was judged there, on the snapshot it was made
  // from: its gain holds for exactly its placements, under the same epoch and
  // settings (PlanWorker::TakeGain); any other placement is replayed here.
  double gain = 0;
  std::string window;
  if (const std::optional<PlanWorker::PlanGain> planned =
          plans_.TakeGain(snapshot, verdict->placements)) {
    gain = planned->gain;
    window = fmt::format("on the window the plan was made from (through step {})",
                         planned->through_step);
  } else {
    gain = policies::PlacementGain(snapshot, verdict->placements, options_.counterfactual,
                                   options_.reward);
    window = "on the window's own demand";
  }
  if (gain >= options_.counterfactual.min_gain) {
    verdict->reason += fmt::format("; predicted reward gain {:.5f} per step {}", gain, window);
  } else {
    verdict->kind = policies::VerdictKind::kRejected;
    verdict->reason =
        fmt::format("predicted reward gain {:.5f} per step {} is below counterfactual.min_gain {}",
                    gain, window, options_.counterfactual.min_gain);
  }
}

}  // namespace moe::controller
