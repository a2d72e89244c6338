#include "control_handler.h"

#include <fmt/format.h>

#include <string>

#include "moe/common/time_format.h"
#include "moe/policies/knobs.h"

namespace moe::controller {
namespace {

using nlohmann::json;

std::string CodeName(StatusCode code) {
  switch (code) {
    case StatusCode::kInvalidArgument:
      return "invalid_argument";
    case StatusCode::kNotFound:
      return "not_found";
    case StatusCode::kFailedPrecondition:
      return "failed_precondition";
    default:
      return "internal";
  }
}

json Error(const Status& status) {
  return {{"ok", false}, {"error", status.message()}, {"code", CodeName(status.code())}};
}

template <typename T>
json Optional(const std::optional<T>& value) {
  return value ? json(*value) : json(nullptr);
}

// A string field of the request; kInvalidArgument naming it when absent.
Result<std::string> Text(const json& request, const char* field) {
  auto it = request.find(field);
  if (it == request.end() || !it->is_string()) {
    return Status::InvalidArgument(fmt::format("{}: required (a string)", field));
  }
  return it->get<std::string>();
}

}  // namespace

json EngineStatusJson(const EngineStatus& s) {
  json pins = json::array();
  for (const EngineStatus::Pin& p : s.pins) {
    pins.push_back({{"knob", p.knob},
                    {"value", p.value},
                    {"until", p.until_ns ? json(FormatIsoTime(*p.until_ns)) : json(nullptr)},
                    {"lever", p.action_id}});
  }
  json j = {{"engine", s.engine_id},
            {"liveness", s.liveness},
            {"last_seen", FormatIsoTime(s.last_seen_ns)},
            {"mode", std::string(ControlModeName(s.mode))},
            {"mode_from", s.mode_from_operator ? "operator" : "config"},
            {"paused", s.paused},
            {"pins", pins}};
  if (s.liveness == "gone") return j;
  j["epoch"] = s.epoch;
  json knobs = json::object();
  for (const policies::KnobSpec& spec : policies::AllKnobs()) {
    if (!spec.scalar()) continue;
    const double value = spec.value(s.knobs);
    knobs[std::string(spec.name)] =
        spec.kind == policies::KnobKind::kEnum ? json(spec.Format(value)) : json(value);
  }
  knobs["max_abs_bias"] = s.max_abs_bias;
  j["knobs"] = std::move(knobs);
  j["steps"] = s.steps;
  j["drop_rate"] = Optional(s.drop_rate);
  j["step_ms"] = Optional(s.step_ms);
  j["critical_path_ms"] = Optional(s.critical_path_ms);
  if (s.in_flight) {
    j["in_flight"] = {
        {"decision", s.in_flight->decision_id}, {"knob", s.in_flight->knob},
        {"value", s.in_flight->value},          {"epoch", s.in_flight->epoch},
        {"state", s.in_flight->state},          {"sent", FormatIsoTime(s.in_flight->sent_ns)}};
  } else {
    j["in_flight"] = nullptr;
  }
  if (s.last_outcome) {
    const EngineStatus::Outcome& o = *s.last_outcome;
    j["last_outcome"] = {{"decision", o.decision_id},
                         {"knob", o.knob},
                         {"value", o.value},
                         {"reward_before", o.reward_before},
                         {"reward_after", Optional(o.reward_after)},
                         {"rolled_back", o.rolled_back},
                         {"measured", FormatIsoTime(o.measured_ns)}};
  } else {
    j["last_outcome"] = nullptr;
  }
  return j;
}

json HandleControlRequest(Controller& controller, const json& request, const Caller& caller) {
  Result<std::string> op = Text(request, "op");
  if (!op.ok()) return Error(op.status());
  if (*op == "status") {
    const std::string engine = request.value("engine", "");
    json engines = json::array();
    std::vector<std::string> known;
    for (const EngineStatus& s : controller.EngineStatuses()) {
      known.push_back(s.engine_id);
      if (engine.empty() || s.engine_id == engine) engines.push_back(EngineStatusJson(s));
    }
    if (!engine.empty() && engines.empty()) {
      return Error(Status::NotFound(
          known.empty() ? fmt::format("unknown engine '{}': no engine is connected", engine)
                        : fmt::format("unknown engine '{}'; known engines: {}", engine,
                                      fmt::join(known, ", "))));
    }
    return {{"ok", true}, {"engines", engines}};
  }
  Result<LeverAction> action = ParseLeverAction(*op);
  if (!action.ok()) {
    return Error(Status::InvalidArgument(
        fmt::format("unknown op '{}'; use status, pause, resume, pin, unpin or mode", *op)));
  }
  Lever lever;
  lever.action = *action;
  lever.caller = caller;
  Result<std::string> engine = Text(request, "engine");
  if (!engine.ok()) return Error(engine.status());
  lever.engine_id = *engine;
  Result<std::string> reason = Text(request, "reason");
  if (!reason.ok()) return Error(reason.status());
  lever.reason = *reason;
  if (lever.action == LeverAction::kPin || lever.action == LeverAction::kUnpin) {
    Result<std::string> knob = Text(request, "knob");
    if (!knob.ok()) return Error(knob.status());
    lever.knob = *knob;
  }
  if (lever.action == LeverAction::kPin) {
    auto value = request.find("value");
    if (value == request.end() || !value->is_number()) {
      return Error(Status::InvalidArgument("value: required (a number)"));
    }
    lever.value = value->get<double>();
    auto for_ms = request.find("for_ms");
    if (for_ms != request.end()) {
      if (!for_ms->is_number_integer() || for_ms->get<int64_t>() < 0) {
        return Error(Status::InvalidArgument("for_ms: a whole number of milliseconds >= 0"));
      }
      lever.duration_ms = for_ms->get<int64_t>();
    }
  }
  if (lever.action == LeverAction::kMode) {
    Result<std::string> mode = Text(request, "mode");
    if (!mode.ok()) return Error(mode.status());
    if (*mode != "active" && *mode != "advisory") {
      return Error(
          Status::InvalidArgument(fmt::format("mode '{}': use active or advisory", *mode)));
    }
    lever.mode = *mode == "advisory" ? ControlMode::kAdvisory : ControlMode::kActive;
  }
  Result<LeverOutcome> out = controller.Pull(lever);
  if (!out.ok()) return Error(out.status());
  json reply = {{"ok", true}, {"message", out->message}, {"action_id", out->action_id}};
  if (out->decision_id) reply["decision_id"] = *out->decision_id;
  return reply;
}

}  // namespace moe::controller
