// LeverBook: the operator levers in force per engine (paused, mode override,
// pins), rebuilt at start from the audit rows that were done, and the checks a
// lever passes before it is taken (see moe/controller/levers.h).

#ifndef MOE_CONTROLLER_SRC_LEVER_BOOK_H_
#define MOE_CONTROLLER_SRC_LEVER_BOOK_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "moe/common/status.h"
#include "moe/controller/levers.h"
#include "moe/policies/guard.h"
#include "moe/storage/rows.h"

namespace moe::controller {

struct PinState {
  double value = 0;
  std::optional<int64_t> until_ns;
  int64_t action_id = 0;
  std::string who;     // Caller::Describe
  std::string reason;  // the lever's reason
};

class LeverBook {
 public:
  // Checks a lever's own fields: a reason, a pinnable knob, a finite value
  // within the guard's bounds (top_k: a whole number), a non-negative
  // duration. kInvalidArgument with the fix.
  static Status Check(const Lever& lever, const policies::GuardParams& guard);

  // The audit row for `lever` pulled at `now_ns`, with `result`.
  static storage::OperatorActionRow Row(const Lever& lever, int64_t now_ns,
                                        const std::string& result);

  // Takes a lever that was done (an audit row with result "done").
  void Apply(const storage::OperatorActionRow& row);

  bool paused(const std::string& engine_id) const;
  std::optional<ControlMode> mode(const std::string& engine_id) const;
  // The pin on `knob` of the engine in force at `now_ns` (lapsed pins are not).
  const PinState* Pin(const std::string& engine_id, const std::string& knob, int64_t now_ns) const;
  // Every pin of the engine in force at `now_ns`, by knob.
  std::map<std::string, PinState> Pins(const std::string& engine_id, int64_t now_ns) const;
  // Drops pins that lapsed before `now_ns`; returns (engine, knob) of each.
  std::vector<std::pair<std::string, std::string>> Expire(int64_t now_ns);

 private:
  struct EngineLevers {
    bool paused = false;
    std::optional<ControlMode> mode;
    std::map<std::string, PinState> pins;
  };
  std::map<std::string, EngineLevers> engines_;
};

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_LEVER_BOOK_H_
