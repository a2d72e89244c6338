#include "metrics_recorder.h"

namespace moe::controller {
namespace {

constexpr double kSecondsPerMicro = 1e-6;
constexpr double kSecondsPerNano = 1e-9;

}  // namespace

void MetricsRecorder::OnStep(const telemetry::StepRecord& record) {
  Counters& c = engines_[record.engine_id];
  ++c.steps;
  double critical_path_us = 0;
  for (const telemetry::LayerRecord& layer : record.layers) {
    c.token_slots += layer.num_token_slots;
    c.dropped += layer.dropped;
    critical_path_us += layer.timing.total_us;
  }
  c.critical_path.Observe(critical_path_us * kSecondsPerMicro);
}

void MetricsRecorder::OnDecision(const std::string& engine_id, const std::string& policy,
                                 const std::string& verdict) {
  ++engines_[engine_id].decisions[{policy, verdict}];
}

void MetricsRecorder::OnRollback(const std::string& engine_id) {
  ++engines_[engine_id].rollbacks;
}

MetricsSnapshot MetricsRecorder::Snapshot(const ControllerStats& stats,
                                          const storage::StoreStats* store,
                                          const telemetry::LinkStats& link,
                                          const std::map<std::string, EngineState>& engines,
                                          int64_t now_ns, bool per_layer) const {
  MetricsSnapshot s;
  s.taken_ns = now_ns;
  s.messages = stats.messages;
  s.malformed = link.malformed;
  s.commands_sent = stats.commands_sent;
  s.engines_gone = stats.engines_gone;
  s.engines_refused = stats.engines_refused;
  s.skipped_by_reason = link.skipped_by_reason;
  for (const auto& [reason, n] : stats.refused_by_reason)
    s.skipped_by_reason[reason] += n;
  s.levers = stats.levers;
  s.acks = stats.acks;
  s.failed_commands = stats.failed_commands;
  if (store != nullptr) {
    s.db_pending = store->pending;
    s.db_write_errors = store->write_errors;
    s.db_rejected = store->rejected;
    s.db_rows_written = store->rows_written;
    s.db_discarded = store->discarded;
    s.db_abandoned_at_close = store->abandoned_at_close;
    s.db_ignored_after_close = store->ignored_after_close;
    s.db_unmatched_updates = store->unmatched_updates;
    s.db_wal_bytes = store->wal_bytes;
    s.db_checkpoints = store->checkpoints;
    s.db_file_replaced = store->file_replaced;
    s.db_failing = store->failing;
    s.db_last_error = store->last_error;
  }
  for (const auto& [id, state] : engines) {
    EngineMetrics m;
    m.engine_id = id;
    if (auto c = engines_.find(id); c != engines_.end()) {
      m.steps = c->second.steps;
      m.token_slots = c->second.token_slots;
      m.dropped_token_slots = c->second.dropped;
      m.rollbacks = c->second.rollbacks;
      m.decisions = c->second.decisions;
      m.critical_path = c->second.critical_path;
    }
    if (auto gaps = link.gaps.find(id); gaps != link.gaps.end()) m.sequence_gaps = gaps->second;
    m.epoch = state.epoch();
    m.decision_in_flight = state.pending().has_value();
    if (state.last_step_ns() > 0) {
      m.telemetry_age_seconds =
          static_cast<double>(now_ns - state.last_step_ns()) * kSecondsPerNano;
    }
    if (state.has_hello()) {
      policies::EngineSnapshot snapshot = state.Snapshot(now_ns);
      m.drop_ratio = snapshot.drop_rate;
      m.max_over_mean = snapshot.max_over_mean;
      // Every scalar knob (an enum as its wire value), and the bias's largest |element|.
      for (const policies::KnobSpec& spec : policies::AllKnobs()) {
        if (spec.scalar()) m.knobs[std::string(spec.name)] = spec.value(snapshot.knobs);
      }
      m.knobs["expert_bias_max_abs"] = state.KnobValue(std::string(policies::knob::kExpertBias));
      if (per_layer) {
        for (const policies::LayerEstimate& l : snapshot.layers) {
          m.layers.push_back({static_cast<uint32_t>(l.layer), l.drop_rate, l.max_over_mean,
                              l.layer_us * kSecondsPerMicro});
        }
      }
    }
    s.engines.push_back(std::move(m));
  }
  return s;
}

}  // namespace moe::controller
