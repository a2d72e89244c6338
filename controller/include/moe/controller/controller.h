// Controller: the heart of moectld.
//
// Ingests telemetry from any number of engines, keeps a state estimate per
// engine, runs the policy pipeline on a cadence, passes every proposal through
// the guard, sends accepted changes as commands under a new epoch, tracks acks,
// measures each decision's outcome on the steps that ran under its epoch, rolls
// back a decision whose reward fell beyond the guard's threshold, and persists
// telemetry and every decision (accepted or not) through the Store.
//
// The controller never stops on bad input: malformed messages, unknown
// engines, failed sends and database errors are logged, counted and skipped.
//
// Thread safety: not thread safe; one thread calls Poll/Reload/Shutdown.

#ifndef MOE_CONTROLLER_CONTROLLER_H_
#define MOE_CONTROLLER_CONTROLLER_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "moe/common/clock.h"
#include "moe/common/status.h"
#include "moe/controller/levers.h"
#include "moe/controller/metrics.h"
#include "moe/controller/options.h"

namespace moe::controller {

struct ControllerStats {
  uint64_t messages = 0;         // good messages received
  uint64_t malformed = 0;        // messages that failed to decode
  uint64_t sequence_gaps = 0;    // telemetry messages missing, all engines
  uint64_t steps = 0;            // StepRecords received
  uint64_t engines = 0;          // engines tracked now (not gone)
  uint64_t engines_gone = 0;     // engines evicted after engine_expiry
  uint64_t engines_refused = 0;  // messages dropped: a new engine id beyond max_engines
  // Messages that decoded but were refused against the engine's Hello or the
  // [limits], by reason (controller/src/message_checks.h names them:
  // shape_budget, hello_mismatch, no_hello, layer_index, array_length,
  // epoch_range). Each was dropped before it touched any state.
  // (stats() adds "max_engines": engines_refused.)
  std::map<std::string, uint64_t> refused_by_reason;
  // Messages that did not decode or came on the wrong channel or under an
  // id the sender may not speak for, by reason (telemetry::LinkStats).
  std::map<std::string, uint64_t> malformed_by_reason;
  uint64_t levers = 0;     // operator levers pulled (done or refused)
  uint64_t decisions = 0;  // decisions recorded (any verdict)
  uint64_t advisory = 0;   // decisions recorded instead of sent (advisory mode)
  uint64_t commands_sent = 0;
  uint64_t acks = 0;
  uint64_t failed_commands = 0;  // send failures, negative acks, ack timeouts
  uint64_t rollbacks = 0;
  uint64_t syncs_failed = 0;  // Syncs (answers to awaiting steps) that could not be sent
  uint64_t store_pending = 0;
  uint64_t store_write_errors = 0;
  uint64_t store_rejected = 0;  // telemetry the database queue refused (full)
  uint64_t store_lost = 0;      // every write refused or lost (StoreStats::lost())
};

// Where the latest run of the policy pipeline (Poll's due work, every engine
// that was due) spent its time: wall microseconds per phase, measured on the
// steady clock whatever the controller's Clock says. Phases that did not run
// are 0. For benchmarks and the debug log; measuring costs ~30 clock reads.
struct CycleProfile {
  double snapshot_us = 0;  // the state estimate (EngineState::Snapshot)
  double learn_us = 0;     // the learner's look at the epoch in force
  double policies_us = 0;  // every policy asked, together
  std::vector<std::pair<std::string, double>> policy_us;  // each policy asked, in order
  double guard_us = 0;       // the guard's verdicts (Judge, the placement judgement)
  double prediction_us = 0;  // the decisions' predicted outcomes
  double audit_us = 0;       // the decision rows' JSON
  double commit_us = 0;      // waiting for an accepted decision's row to be committed
  double send_us = 0;        // commands on the wire
  // From the start of the snapshot to the command handed to the wire, when
  // one was sent (0 otherwise): the decision's own latency.
  double to_command_us = 0;
  double total_us = 0;       // the due work as a whole
  double other_us = 0;       // total_us less the phases above (ack timeouts, bookkeeping)
  uint64_t engines_run = 0;  // engines whose pipeline ran
};

// Every message refused (refused_by_reason, max_engines included).
uint64_t RefusedTotal(const ControllerStats& stats);
// " (reason n, reason n)" for the nonzero counts, "" when there are none.
std::string ReasonList(const std::map<std::string, uint64_t>& by_reason);

class Controller {
 public:
  // Opens the database and binds the sockets. `clock` must outlive the
  // controller. Options are validated first (kInvalidArgument naming the field).
  static Result<std::unique_ptr<Controller>> Create(const ControllerOptions& options, Clock* clock);
  virtual ~Controller() = default;

  // Receives messages for up to `wait`, then runs whatever is due (policies on
  // their cadence, ack timeouts, progress log). Returns an error only when the
  // sockets themselves fail.
  virtual Status Poll(std::chrono::milliseconds wait) = 0;

  // Takes new policy, guard, reward and cadence settings. Endpoints, keys and
  // the database path need a restart: a change there is reported as an error
  // and nothing is changed.
  virtual Status Reload(const ControllerOptions& options) = 0;

  // Flushes the database and closes it. Idempotent.
  virtual Status Shutdown() = 0;

  // Pulls an operator lever (moe/controller/levers.h). Every call that names
  // a known engine leaves an audit row, done or refused; a refused lever
  // returns its error (kInvalidArgument: a bad field; kNotFound: unknown
  // engine, listing the known ones; kFailedPrecondition: not possible now).
  virtual Result<LeverOutcome> Pull(const Lever& lever) = 0;
  // Every engine tracked, and those gone recently, by engine id.
  virtual std::vector<EngineStatus> EngineStatuses() const = 0;

  virtual ControllerStats stats() const = 0;
  // The latest pipeline run's profile (zeros before the first).
  virtual CycleProfile last_cycle() const = 0;
  // Everything /metrics exports, taken now; per-layer figures only when
  // `per_layer`. Call from the loop's thread and hand the copy on.
  virtual MetricsSnapshot metrics(bool per_layer) const = 0;
  virtual std::string telemetry_endpoint() const = 0;
  virtual std::string command_endpoint() const = 0;
};

// Checks every field's range; the message names the field and the fix.
Status Validate(const ControllerOptions& options);

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_CONTROLLER_H_
