// What moectld exports to Prometheus: a snapshot of the controller taken by
// its loop (Controller::metrics), and its rendering as exposition text.
//
// Low cardinality: series are per engine (labels `engine`, and `policy` and
// `verdict` for decisions, `knob` for knob values), never per expert; per-layer
// series (label `layer`) only when asked for. Units are Prometheus's base
// units: seconds, ratios in 0..1, plain counts.
//
// Thread safety: values. The loop takes a snapshot and hands a copy to the
// thread that serves HTTP (see apps/moectld/metrics_server.h).

#ifndef MOE_CONTROLLER_METRICS_H_
#define MOE_CONTROLLER_METRICS_H_

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "moe/common/prometheus.h"
#include "moe/common/status.h"

namespace moe::controller {

// Upper bounds (seconds) of the critical-path latency histogram: 50 us to
// about 13 s, each 2.5 times the one before.
std::vector<double> CriticalPathBounds();

struct LayerMetrics {
  uint32_t layer = 0;
  double drop_ratio = 0;     // over the steps of the epoch in force
  double max_over_mean = 0;  // routed token-slots per expert, max over mean
  double latency_seconds = 0;
};

struct EngineMetrics {
  std::string engine_id;
  // Counters since the controller started.
  uint64_t steps = 0;
  uint64_t token_slots = 0;          // token-slots requested, all layers
  uint64_t dropped_token_slots = 0;  // of those, sent to the backup path
  uint64_t sequence_gaps = 0;        // telemetry messages missing by sequence number
  uint64_t rollbacks = 0;
  // (policy, verdict) -> decisions recorded.
  std::map<std::pair<std::string, std::string>, uint64_t> decisions;
  prometheus::Histogram critical_path{CriticalPathBounds()};
  // Gauges: the state estimate over the steps of the epoch in force.
  double drop_ratio = 0;
  double max_over_mean = 0;  // mean over layers
  uint64_t epoch = 0;
  double telemetry_age_seconds = 0;
  bool decision_in_flight = false;
  // Knob values in force: top_k, capacity_factor, noise_std, top_p, k_min,
  // and expert_bias_max_abs (the largest |bias| of any expert).
  std::map<std::string, double> knobs;
  std::vector<LayerMetrics> layers;  // only when per-layer series are asked for
};

struct MetricsSnapshot {
  int64_t taken_ns = 0;  // Clock::NowNanos when taken
  uint64_t messages = 0;
  uint64_t malformed = 0;
  uint64_t commands_sent = 0;
  uint64_t acks = 0;
  uint64_t failed_commands = 0;
  uint64_t engines_gone = 0;     // engines expired after engine_expiry
  uint64_t engines_refused = 0;  // messages dropped: a new engine id beyond max_engines
  uint64_t levers = 0;           // operator levers pulled, done or refused
  // Every message skipped, by reason: the link's (frames, decode, channel,
  // identity) and the controller's (ControllerStats::refused_by_reason).
  std::map<std::string, uint64_t> skipped_by_reason;
  // Storage.
  uint64_t db_pending = 0;       // writes queued, not yet committed
  uint64_t db_write_errors = 0;  // failed write attempts (retried)
  uint64_t db_rejected = 0;      // telemetry refused, queue full
  uint64_t db_rows_written = 0;
  // Writes lost other than by a full queue (StoreStats has the meaning of each).
  uint64_t db_discarded = 0;
  uint64_t db_abandoned_at_close = 0;
  uint64_t db_ignored_after_close = 0;
  uint64_t db_unmatched_updates = 0;
  uint64_t db_wal_bytes = 0;
  uint64_t db_checkpoints = 0;
  uint64_t db_file_replaced = 0;  // times the file at the path was found replaced or deleted
  bool db_failing = false;        // the latest write attempt failed; nothing committed since
  std::string db_last_error;
  std::vector<EngineMetrics> engines;  // by engine id
};

// The snapshot as Prometheus text (0.0.4), the per-layer families only when
// `per_layer`. `loop_age_seconds` (how old the snapshot is) comes from whoever
// serves it: the loop itself cannot know that it is late. Errors: a family or
// label the format refuses (kInvalidArgument), which is a bug here.
Result<std::string> RenderMetrics(const MetricsSnapshot& snapshot, bool per_layer,
                                  double loop_age_seconds);

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_METRICS_H_
