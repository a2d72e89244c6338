#include "lever_book.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>

namespace moe::controller {

std::string_view LeverActionName(LeverAction action) {
  switch (action) {
    case LeverAction::kPause:
      return "pause";
    case LeverAction::kResume:
      return "resume";
    case LeverAction::kPin:
      return "pin";
    case LeverAction::kUnpin:
      return "unpin";
    case LeverAction::kMode:
      return "mode";
  }
  return "unknown";
}

Result<LeverAction> ParseLeverAction(std::string_view name) {
  for (LeverAction a : {LeverAction::kPause, LeverAction::kResume, LeverAction::kPin,
                        LeverAction::kUnpin, LeverAction::kMode}) {
    if (LeverActionName(a) == name) return a;
  }
  return Status::InvalidArgument(fmt::format(
      "unknown lever '{}'; use one of pause, resume, pin, unpin, mode", std::string(name)));
}

const std::vector<std::string>& PinnableKnobs() {
  static const std::vector<std::string> knobs = [] {
    std::vector<std::string> out;
    for (const policies::KnobSpec& spec : policies::AllKnobs()) {
      if (spec.pinnable) out.emplace_back(spec.name);
    }
    return out;
  }();
  return knobs;
}

std::string Caller::Describe() const {
  return fmt::format("{} (uid {}, pid {})", user.empty() ? std::string("?") : user, uid, pid);
}

Status LeverBook::Check(const Lever& lever, const policies::GuardParams& guard) {
  if (lever.engine_id.empty()) return Status::InvalidArgument("engine: must not be empty");
  if (std::all_of(lever.reason.begin(), lever.reason.end(), [](char c) { return c == ' '; })) {
    return Status::InvalidArgument(
        "reason: every lever needs one (--reason \"...\"); it is kept in the audit row");
  }
  if (lever.action != LeverAction::kPin && lever.action != LeverAction::kUnpin) {
    return Status::Ok();
  }
  const policies::KnobSpec* spec = policies::FindKnob(lever.knob);
  const policies::KnobLimits* limits = policies::LimitsFor(lever.knob, guard);
  if (spec == nullptr || !spec->pinnable || limits == nullptr) {
    return Status::InvalidArgument(fmt::format("knob '{}' cannot be pinned; pinnable knobs: {}",
                                               lever.knob, fmt::join(PinnableKnobs(), ", ")));
  }
  if (lever.action == LeverAction::kUnpin) return Status::Ok();
  if (!std::isfinite(lever.value)) {
    return Status::InvalidArgument(
        fmt::format("{}: the value must be a finite number", lever.knob));
  }
  if (lever.value < limits->min || lever.value > limits->max) {
    return Status::InvalidArgument(fmt::format(
        "{}={} is outside the guard's bounds [{}, {}] (policies file, [guard.{}]); pin a value "
        "within them or widen the bounds",
        lever.knob, lever.value, limits->min, limits->max, lever.knob));
  }
  if (spec->whole() && lever.value != std::floor(lever.value)) {
    return Status::InvalidArgument(
        fmt::format("{}={}: must be a whole number", lever.knob, lever.value));
  }
  if (lever.duration_ms < 0) {
    return Status::InvalidArgument("for: the duration must not be negative");
  }
  return Status::Ok();
}

storage::OperatorActionRow LeverBook::Row(const Lever& lever, int64_t now_ns,
                                          const std::string& result) {
  storage::OperatorActionRow row;
  row.created_ns = now_ns;
  row.engine_id = lever.engine_id;
  row.action = std::string(LeverActionName(lever.action));
  if (lever.action == LeverAction::kPin || lever.action == LeverAction::kUnpin) {
    row.knob = lever.knob;
  }
  if (lever.action == LeverAction::kPin) {
    row.value = lever.value;
    if (lever.duration_ms > 0) row.until_ns = now_ns + lever.duration_ms * 1'000'000;
  }
  if (lever.action == LeverAction::kMode) row.mode = std::string(ControlModeName(lever.mode));
  row.uid = lever.caller.uid;
  row.who = lever.caller.Describe();
  row.reason = lever.reason;
  row.result = result;
  return row;
}

void LeverBook::Apply(const storage::OperatorActionRow& row) {
  if (row.result != "done") return;
  EngineLevers& e = engines_[row.engine_id];
  if (row.action == "pause") {
    e.paused = true;
  } else if (row.action == "resume") {
    e.paused = false;
  } else if (row.action == "pin" && row.value) {
    e.pins[row.knob] = PinState{*row.value, row.until_ns, row.id, row.who, row.reason};
  } else if (row.action == "unpin") {
    e.pins.erase(row.knob);
  } else if (row.action == "mode") {
    e.mode = row.mode == "advisory" ? ControlMode::kAdvisory : ControlMode::kActive;
  }
}

bool LeverBook::paused(const std::string& engine_id) const {
  auto it = engines_.find(engine_id);
  return it != engines_.end() && it->second.paused;
}

std::optional<ControlMode> LeverBook::mode(const std::string& engine_id) const {
  auto it = engines_.find(engine_id);
  return it == engines_.end() ? std::nullopt : it->second.mode;
}

const PinState* LeverBook::Pin(const std::string& engine_id, const std::string& knob,
                               int64_t now_ns) const {
  auto it = engines_.find(engine_id);
  if (it == engines_.end()) return nullptr;
  auto pin = it->second.pins.find(knob);
  if (pin == it->second.pins.end()) return nullptr;
  if (pin->second.until_ns && *pin->second.until_ns <= now_ns) return nullptr;
  return &pin->second;
}

std::map<std::string, PinState> LeverBook::Pins(const std::string& engine_id,
                                                int64_t now_ns) const {
  std::map<std::string, PinState> pins;
  auto it = engines_.find(engine_id);
  if (it == engines_.end()) return pins;
  for (const auto& [knob, pin] : it->second.pins) {
    if (!pin.until_ns || *pin.until_ns > now_ns) pins.emplace(knob, pin);
  }
  return pins;
}

std::vector<std::pair<std::string, std::string>> LeverBook::Expire(int64_t now_ns) {
  std::vector<std::pair<std::string, std::string>> lapsed;
  for (auto& [engine, e] : engines_) {
    for (auto it = e.pins.begin(); it != e.pins.end();) {
      if (it->second.until_ns && *it->second.until_ns <= now_ns) {
        lapsed.emplace_back(engine, it->first);
        it = e.pins.erase(it);
      } else {
        ++it;
      }
    }
  }
  return lapsed;
}

}  // namespace moe::controller
