#include "learner.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <vector>

#include "moe/storage/reader.h"

namespace moe::controller {

Status Learner::Restore(const std::string& db_path) {
  MOE_ASSIGN_OR_RETURN(auto reader, storage::Reader::Open(db_path));
  MOE_ASSIGN_OR_RETURN(std::vector<storage::LearningSampleRow> samples,
                       reader->LearningSamples("", policies::KnobsName(options_.learning.knobs)));
  for (const storage::LearningSampleRow& r : samples) {
    policies::Learn(r.regime, r.setting, r.reward, options_.learning, &states_[r.engine_id]);
    uint64_t& last = restored_through_[r.engine_id];
    last = std::max(last, r.epoch);
  }
  if (!samples.empty()) {
    spdlog::info("learning: resumed from {} stored samples of {} in {}", samples.size(),
                 policies::KnobsName(options_.learning.knobs), db_path);
  }
  return Status::Ok();
}

bool Learner::Reload(LearnerOptions options) {
  // Samples per value over every engine, for the log line.
  policies::LearningState all;
  for (const auto& [engine, state] : states_) {
    for (const auto& [regime, settings] : state.regimes) {
      for (const auto& [setting, stats] : settings) {
        policies::ArmStats& sum = all.regimes[regime][setting];
        sum.samples += stats.samples;
        sum.reward_sum += stats.reward_sum;
      }
    }
  }
  const std::string change = policies::ArmsChange(options_.learning, options.learning, all);
  const bool knob_changed = options.learning.knobs != options_.learning.knobs;
  if (knob_changed) {
    states_.clear();
    restored_through_.clear();
  }
  if (!change.empty()) spdlog::info("{}", change);
  options_ = std::move(options);
  return knob_changed;
}

void Learner::MaybeLearn(EngineState& e, uint64_t epoch, bool ended, int64_t now_ns,
                         storage::Store* store) {
  EpochLedger& ledger = e.ledger();
  if (ledger.Learnt(epoch) || !ledger.Known(epoch)) return;
  const uint64_t need = ended ? std::min(options_.learning.min_steps, options_.outcome_steps)
                              : options_.learning.min_steps;
  const policies::EngineSnapshot snapshot = e.SnapshotOf(epoch, now_ns);
  if (snapshot.steps_in_epoch == 0 || snapshot.steps_in_epoch < need) return;
  const policies::OutcomeFigures figures = e.Figures(epoch, options_.window_steps);
  storage::LearningSampleRow sample;
  sample.engine_id = e.engine_id();
  sample.epoch = epoch;
  sample.created_ns = now_ns;
  sample.regime = policies::RegimeOf(snapshot, options_.learning);
  sample.knob = policies::KnobsName(options_.learning.knobs);
  sample.setting = policies::SettingInForce(snapshot, options_.learning);
  sample.value = sample.setting.empty() ? 0.0 : sample.setting[0];
  sample.reward = policies::Reward(figures, options_.reward);
  sample.steps = figures.steps;
  policies::Learn(sample.regime, sample.setting, sample.reward, options_.learning,
                  &states_[e.engine_id()]);
  ledger.MarkLearnt(epoch);
  spdlog::debug("engine {}: learnt epoch {} ({}, {} steps, regime {}): reward {:.4f}",
                e.engine_id(), epoch,
                policies::SettingText(options_.learning.knobs, sample.setting), sample.steps,
                sample.regime, sample.reward);
  store->RecordLearningSample(sample);
}

std::optional<uint64_t> Learner::RestoredThrough(const std::string& engine_id) const {
  auto it = restored_through_.find(engine_id);
  if (it == restored_through_.end()) return std::nullopt;
  return it->second;
}

const policies::LearningState& Learner::StateOf(const std::string& engine_id) const {
  static const policies::LearningState kNothingLearnt;
  auto it = states_.find(engine_id);
  return it == states_.end() ? kNothingLearnt : it->second;
}

}  // namespace moe::controller
