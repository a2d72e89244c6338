// Learner: feeds the learning policy's statistics (learning_policy.h) from
// the epochs the engines run, and persists every sample.
//
// Every epoch is learnt once, when its settings are known from the epoch
// ledger (ack, Hello or a step record: never a change whose ack is still
// unknown) and it has enough steps: `min_steps` while it is in force, or
// min(min_steps, outcome_steps) once it has ended (a later epoch's step
// arrived), so an epoch that was measured and rolled back at once is learnt
// too. The setting learnt (every knob of learning.knobs) is the one the
// ledger says was applied (a clamped value is learnt as itself), the regime
// that of its own steps' demand.
//
// Samples go to the learning_samples table; a new Learner replays them
// (Restore), so a restarted controller resumes from what it persisted, and
// the epochs it had learnt are not learnt again.
//
// Thread safety: not thread safe; owned by the controller's thread.

#ifndef MOE_CONTROLLER_SRC_LEARNER_H_
#define MOE_CONTROLLER_SRC_LEARNER_H_

#include <cstdint>
#include <map>
#include <string>

#include "engine_state.h"
#include "moe/common/status.h"
#include "moe/policies/learning_policy.h"
#include "moe/policies/reward.h"
#include "moe/storage/store.h"

namespace moe::controller {

struct LearnerOptions {
  policies::LearningPolicyParams learning;
  policies::RewardParams reward;
  uint64_t outcome_steps = 16;  // steps an ended epoch needs (with learning.min_steps)
  uint64_t window_steps = 64;   // most steps a sample averages over
};

class Learner {
 public:
  explicit Learner(LearnerOptions options) : options_(std::move(options)) {}

  // Replays the samples of options.learning.knobs stored in `db_path`.
  Status Restore(const std::string& db_path);

  // New settings. Arms that change keep the statistics of their own
  // settings; other knobs reset the statistics (then Restore reads those
  // knobs' samples). Logs what it did; returns true when the knobs changed.
  bool Reload(LearnerOptions options);

  // Learns `epoch` of `e` if it is due (see the file comment); `ended` says
  // whether a later epoch has begun. Records the sample through `store`.
  void MaybeLearn(EngineState& e, uint64_t epoch, bool ended, int64_t now_ns,
                  storage::Store* store);

  // Epochs of `engine_id` up to this one were learnt by a stored sample.
  std::optional<uint64_t> RestoredThrough(const std::string& engine_id) const;

  const policies::LearningState& StateOf(const std::string& engine_id) const;

 private:
  LearnerOptions options_;
  std::map<std::string, policies::LearningState> states_;  // per engine
  std::map<std::string, uint64_t> restored_through_;       // per engine
};

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_LEARNER_H_
