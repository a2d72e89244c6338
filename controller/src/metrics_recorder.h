// MetricsRecorder: the counters behind /metrics that the controller's state
// does not already hold (steps, token-slots, decisions by policy and verdict,
// rollbacks, the latency histogram), and the snapshot that joins them with
// the state estimate of every engine.
//
// Thread safety: not thread safe; the controller's loop owns it. Snapshots
// are values and may be handed to another thread.

#ifndef MOE_CONTROLLER_SRC_METRICS_RECORDER_H_
#define MOE_CONTROLLER_SRC_METRICS_RECORDER_H_

#include <map>
#include <string>

#include "engine_state.h"
#include "moe/controller/controller.h"
#include "moe/controller/metrics.h"
#include "moe/storage/store.h"
#include "moe/telemetry/transport.h"
#include "moe/telemetry/types.h"

namespace moe::controller {

class MetricsRecorder {
 public:
  void OnStep(const telemetry::StepRecord& record);
  void OnDecision(const std::string& engine_id, const std::string& policy,
                  const std::string& verdict);
  void OnRollback(const std::string& engine_id);
  // Drops the counters of an engine the controller no longer keeps (an
  // evicted engine must be forgotten here too, or its counters stay).
  void Forget(const std::string& engine_id) { engines_.erase(engine_id); }

  // `store` may be null (after Shutdown). Engines are listed by id.
  MetricsSnapshot Snapshot(const ControllerStats& stats, const storage::StoreStats* store,
                           const telemetry::LinkStats& link,
                           const std::map<std::string, EngineState>& engines, int64_t now_ns,
                           bool per_layer) const;

 private:
  struct Counters {
    uint64_t steps = 0;
    uint64_t token_slots = 0;
    uint64_t dropped = 0;
    uint64_t rollbacks = 0;
    std::map<std::pair<std::string, std::string>, uint64_t> decisions;
    prometheus::Histogram critical_path{CriticalPathBounds()};
  };
  std::map<std::string, Counters> engines_;
};

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_METRICS_RECORDER_H_
