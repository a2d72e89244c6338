// Operator levers: what an operator can make the controller do for one engine
// at run time (moectld's control socket, `moectl pause|resume|pin|unpin|mode`),
// and the per-engine status `moectl status` shows.
//
// Every lever pulled, done or refused, is an audit row (operator_actions in
// the database) with the caller and the reason; levers in force survive a
// restart of moectld (they are replayed from that table at start).
//
//   pause    the controller decides nothing new for the engine; a decision in
//            flight is still measured (and rolled back by the guard if it made
//            things worse); pins still apply.
//   resume   undoes pause.
//   pin      holds KNOB at VALUE (for a while, or until unpinned): the value is
//            sent at once (or as soon as the decision in flight is measured),
//            sent again whenever the engine runs another value (e.g. after its
//            restart), and no policy changes that knob; proposals that would
//            are recorded as rejected. The guard's bounds still apply (a value
//            outside them is refused); its step limit and cooldown do not.
//            Refused for an advisory engine (it is sent nothing).
//   unpin    gives the knob back to the policies (the value stays).
//   mode     active | advisory for this engine, over controller.toml's.

#ifndef MOE_CONTROLLER_LEVERS_H_
#define MOE_CONTROLLER_LEVERS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "moe/common/status.h"
#include "moe/controller/options.h"
#include "moe/policies/knobs.h"

namespace moe::controller {

enum class LeverAction { kPause, kResume, kPin, kUnpin, kMode };

// "pause", "resume", "pin", "unpin", "mode".
std::string_view LeverActionName(LeverAction action);
// kInvalidArgument naming the known actions.
Result<LeverAction> ParseLeverAction(std::string_view name);

// The knobs a pin may hold (expert_bias: every element at VALUE).
const std::vector<std::string>& PinnableKnobs();

// Who pulls a lever, from the control socket's peer credentials.
struct Caller {
  int64_t uid = -1;
  int64_t pid = -1;
  std::string user;  // the uid's name, or empty when it has none
  // e.g. "alice (uid 1000, pid 4242)".
  std::string Describe() const;
};

struct Lever {
  LeverAction action = LeverAction::kPause;
  std::string engine_id;
  std::string knob;                         // pin, unpin
  double value = 0;                         // pin
  int64_t duration_ms = 0;                  // pin: how long it holds; 0 = until unpinned
  ControlMode mode = ControlMode::kActive;  // mode
  Caller caller;
  std::string reason;  // required: why (kept in the audit row)
};

struct LeverOutcome {
  int64_t action_id = 0;               // its audit row (operator_actions.id)
  std::string message;                 // what happened, for the operator
  std::optional<int64_t> decision_id;  // pin: the decision row of the command sent
};

// One engine as `moectl status` shows it.
struct EngineStatus {
  std::string engine_id;
  // "live": a message within stale_after; "stale": none since; "gone":
  // silent for engine_expiry, its state evicted (its rows stay).
  std::string liveness;
  int64_t last_seen_ns = 0;
  ControlMode mode = ControlMode::kActive;
  bool mode_from_operator = false;  // a `mode` lever set it, not controller.toml
  bool paused = false;
  struct Pin {
    std::string knob;
    double value = 0;
    std::optional<int64_t> until_ns;  // absent: until unpinned
    int64_t action_id = 0;
  };
  std::vector<Pin> pins;
  // Below: only for an engine that is not gone.
  uint64_t epoch = 0;
  // The scalar knobs in force (the vectors are left empty: see max_abs_bias).
  policies::KnobValues knobs;
  double max_abs_bias = 0;  // largest |expert_bias| element in force
  uint64_t steps = 0;       // steps received since it was first seen (or came back)
  // Over the latest steps of the epoch in force (at most outcome_steps).
  std::optional<double> drop_rate;
  std::optional<double> step_ms;           // mean measured step time
  std::optional<double> critical_path_ms;  // mean of the summed layer times
  struct InFlight {
    int64_t decision_id = 0;
    std::string knob;
    double value = 0;
    uint64_t epoch = 0;
    std::string state;  // "sent", "acked", "ack unknown"
    int64_t sent_ns = 0;
  };
  std::optional<InFlight> in_flight;
  struct Outcome {
    int64_t decision_id = 0;
    std::string knob;
    double value = 0;
    double reward_before = 0;
    std::optional<double> reward_after;  // absent: no step ran under it
    bool rolled_back = false;
    int64_t measured_ns = 0;
  };
  std::optional<Outcome> last_outcome;
};

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_LEVERS_H_
