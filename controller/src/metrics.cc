#include "moe/controller/metrics.h"

#include <string>

namespace moe::controller {
namespace {

using prometheus::Labels;
using prometheus::MetricType;
using prometheus::TextWriter;

// One family with one sample per engine.
template <typename Value>
void PerEngine(TextWriter& w, const MetricsSnapshot& s, std::string_view name, MetricType type,
               std::string_view help, Value value) {
  w.Family(name, type, help);
  for (const EngineMetrics& e : s.engines) {
    w.Sample({{"engine", e.engine_id}}, static_cast<double>(value(e)));
  }
}

}  // namespace

std::vector<double> CriticalPathBounds() {
  return prometheus::ExponentialBounds(50e-6, 2.5, 13);
}

Result<std::string> RenderMetrics(const MetricsSnapshot& s, bool per_layer,
                                  double loop_age_seconds) {
  TextWriter w;
  constexpr MetricType kCounter = MetricType::kCounter;
  constexpr MetricType kGauge = MetricType::kGauge;

  // The daemon itself.
  w.Family("moectl_loop_age_seconds", kGauge,
           "Seconds since the controller loop last published these figures.");
  w.Sample({}, loop_age_seconds);
  w.Family("moectl_engines", kGauge, "Engines the controller has heard from.");
  w.Sample({}, static_cast<double>(s.engines.size()));
  w.Family("moectl_messages_total", kCounter, "Telemetry and ack messages decoded.");
  w.Sample({}, static_cast<double>(s.messages));
  w.Family("moectl_malformed_messages_total", kCounter,
           "Messages skipped: undecodable, wrong channel, or a spoofed engine id.");
  w.Sample({}, static_cast<double>(s.malformed));
  w.Family("moectl_commands_sent_total", kCounter, "Commands sent to engines.");
  w.Sample({}, static_cast<double>(s.commands_sent));
  w.Family("moectl_command_failures_total", kCounter,
           "Commands that failed: send failures, refusals by the engine, ack timeouts.");
  w.Sample({}, static_cast<double>(s.failed_commands));
  w.Family("moectl_engines_gone_total", kCounter,
           "Engines evicted after engine_expiry without a message (their rows stay).");
  w.Sample({}, static_cast<double>(s.engines_gone));
  w.Family("moectl_messages_refused_total", kCounter,
           "Messages skipped, by reason: frames, decode, channel, identity (the transport); "
           "shape_budget, hello_mismatch, no_hello, layer_index, array_length, epoch_range, "
           "max_engines (checked against the engine's Hello and [limits]).");
  for (const auto& [reason, n] : s.skipped_by_reason) {
    w.Sample({{"reason", reason}}, static_cast<double>(n));
  }
  w.Family("moectl_operator_levers_total", kCounter,
           "Operator levers pulled through the control socket, done or refused.");
  w.Sample({}, static_cast<double>(s.levers));

  // Storage.
  w.Family("moectl_db_queue_depth", kGauge, "Database writes queued and not yet committed.");
  w.Sample({}, static_cast<double>(s.db_pending));
  w.Family("moectl_db_write_errors_total", kCounter,
           "Failed database write attempts (each is retried).");
  w.Sample({}, static_cast<double>(s.db_write_errors));
  w.Family("moectl_db_rejected_rows_total", kCounter,
           "Telemetry rows refused because the write queue was full.");
  w.Sample({}, static_cast<double>(s.db_rejected));
  w.Family("moectl_db_rows_written_total", kCounter, "Rows committed to the database.");
  w.Sample({}, static_cast<double>(s.db_rows_written));
  w.Family("moectl_db_lost_writes_total", kCounter,
           "Database writes lost other than by a full queue, by reason: rejected by SQLite for "
           "good, still queued when the store closed, handed over after it closed, or an update "
           "of a decision not in the file.");
  w.Sample({{"reason", "discarded"}}, static_cast<double>(s.db_discarded));
  w.Sample({{"reason", "abandoned_at_close"}}, static_cast<double>(s.db_abandoned_at_close));
  w.Sample({{"reason", "ignored_after_close"}}, static_cast<double>(s.db_ignored_after_close));
  w.Sample({{"reason", "unmatched_update"}}, static_cast<double>(s.db_unmatched_updates));
  w.Family("moectl_db_wal_bytes", kGauge, "Size of the database's write-ahead log file.");
  w.Sample({}, static_cast<double>(s.db_wal_bytes));
  w.Family("moectl_db_checkpoints_total", kCounter, "WAL checkpoints run by the writer.");
  w.Sample({}, static_cast<double>(s.db_checkpoints));
  w.Family("moectl_db_file_replaced_total", kCounter,
           "Times the database file at the configured path was found replaced or deleted.");
  w.Sample({}, static_cast<double>(s.db_file_replaced));
  w.Family("moectl_db_writable", kGauge,
           "1 while the database accepts writes, 0 after a failed write until the next commit.");
  w.Sample({}, s.db_failing ? 0 : 1);

  // Per engine.
  PerEngine(w, s, "moectl_steps_total", kCounter, "Steps received.",
            [](const EngineMetrics& e) { return e.steps; });
  PerEngine(w, s, "moectl_token_slots_total", kCounter, "Token-slots requested, all layers.",
            [](const EngineMetrics& e) { return e.token_slots; });
  PerEngine(w, s, "moectl_dropped_token_slots_total", kCounter,
            "Token-slots over capacity sent to the backup path, all layers.",
            [](const EngineMetrics& e) { return e.dropped_token_slots; });
  PerEngine(w, s, "moectl_drop_ratio", kGauge,
            "Dropped over requested token-slots, over the steps of the epoch in force.",
            [](const EngineMetrics& e) { return e.drop_ratio; });
  PerEngine(w, s, "moectl_expert_load_max_over_mean_ratio", kGauge,
            "Routed token-slots of the busiest expert over the mean, mean over layers, over the "
            "steps of the epoch in force.",
            [](const EngineMetrics& e) { return e.max_over_mean; });
  w.Family("moectl_step_critical_path_seconds", MetricType::kHistogram,
           "Critical path of a step: the sum over layers of each layer's time.");
  for (const EngineMetrics& e : s.engines) {
    w.HistogramSample({{"engine", e.engine_id}}, e.critical_path);
  }
  w.Family("moectl_decisions_total", kCounter,
           "Decisions recorded, by the policy that proposed and the guard's verdict.");
  for (const EngineMetrics& e : s.engines) {
    for (const auto& [key, count] : e.decisions) {
      w.Sample({{"engine", e.engine_id}, {"policy", key.first}, {"verdict", key.second}},
               static_cast<double>(count));
    }
  }
  PerEngine(w, s, "moectl_rollbacks_total", kCounter,
            "Decisions rolled back because the measured reward fell.",
            [](const EngineMetrics& e) { return e.rollbacks; });
  PerEngine(w, s, "moectl_epoch", kGauge, "Epoch of the settings in force.",
            [](const EngineMetrics& e) { return e.epoch; });
  PerEngine(w, s, "moectl_decision_in_flight", kGauge,
            "1 while a decision is sent and not yet measured.",
            [](const EngineMetrics& e) { return e.decision_in_flight ? 1 : 0; });
  PerEngine(w, s, "moectl_telemetry_age_seconds", kGauge, "Seconds since the newest step arrived.",
            [](const EngineMetrics& e) { return e.telemetry_age_seconds; });
  PerEngine(w, s, "moectl_sequence_gaps_total", kCounter,
            "Telemetry messages missing by sequence number.",
            [](const EngineMetrics& e) { return e.sequence_gaps; });
  w.Family("moectl_knob_value", kGauge, "Knob values in force, by knob.");
  for (const EngineMetrics& e : s.engines) {
    for (const auto& [knob, value] : e.knobs) {
      w.Sample({{"engine", e.engine_id}, {"knob", knob}}, value);
    }
  }

  if (per_layer) {
    auto layer_family = [&](std::string_view name, std::string_view help, auto value) {
      w.Family(name, kGauge, help);
      for (const EngineMetrics& e : s.engines) {
        for (const LayerMetrics& l : e.layers) {
          w.Sample({{"engine", e.engine_id}, {"layer", std::to_string(l.layer)}}, value(l));
        }
      }
    };
    layer_family("moectl_layer_drop_ratio", "Per layer: dropped over requested token-slots.",
                 [](const LayerMetrics& l) { return l.drop_ratio; });
    layer_family("moectl_layer_expert_load_max_over_mean_ratio",
                 "Per layer: routed token-slots of the busiest expert over the mean.",
                 [](const LayerMetrics& l) { return l.max_over_mean; });
    layer_family("moectl_layer_latency_seconds", "Per layer: mean time of the layer.",
                 [](const LayerMetrics& l) { return l.latency_seconds; });
  }
  return w.Finish();
}

}  // namespace moe::controller
