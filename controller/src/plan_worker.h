// PlanWorker: the replication policy off the control thread.
//
// At full shape (61 layers x 288 slots on 32 devices) one replication
// proposal costs the planner seconds without a deadline (and up to
// time_budget_ms per layer with one): a thousand control cycles, during which
// a controller that waited would ingest no engine's telemetry. The worker runs
// ProposeReplication on its own thread, one snapshot at a time, and hands the
// proposal to a later cycle of the same engine, provided the epoch it was
// planned under is still in force (the placement it starts from is then the
// one in force). An engine is planned again only under a new epoch or after
// min_steps more steps of the same one. Small shapes (at most kInlineSlots
// slots over all layers), whose plans take microseconds, are planned inline:
// their proposal comes in the cycle that asked, deterministically.
//
// With gain parameters set (set_gain_params), the worker also judges each
// plan on the demand of the snapshot it was made from (PlacementGain, ~2.6 ms
// at full shape): the cycle that takes the plan reads the gain with TakeGain
// instead of replaying the window itself. Plans made inline carry none (their
// cycle judges them on its own snapshot, as before).
//
// The worker runs at nice kWorkerNice, below the control thread, and
// releases finished jobs when it next plans.
//
// Thread safety: every member function from one thread (the controller's).

#ifndef MOE_CONTROLLER_SRC_PLAN_WORKER_H_
#define MOE_CONTROLLER_SRC_PLAN_WORKER_H_

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "moe/policies/counterfactual_policy.h"
#include "moe/policies/replication_policy.h"
#include "moe/policies/reward.h"
#include "moe/policies/snapshot.h"

namespace moe::controller {

class PlanWorker {
 public:
  static constexpr size_t kInlineSlots = 4096;
  // The worker thread's nice value (the control thread keeps its own).
  static constexpr int kWorkerNice = 10;

  PlanWorker();
  ~PlanWorker();  // a plan in progress finishes first
  PlanWorker(const PlanWorker&) = delete;
  PlanWorker& operator=(const PlanWorker&) = delete;

  // The replication proposal for `snapshot`'s engine when one planned under
  // its epoch is ready (nullopt while planning, or when the plan proposes
  // nothing); starts a plan from `snapshot` when due.
  std::optional<policies::Proposal> Ask(const policies::EngineSnapshot& snapshot,
                                        const policies::ReplicationPolicyParams& params);
  // The same, sharing `snapshot` with the plan it starts instead of copying
  // it (the control cycle's way: a snapshot of 61 x 256 is hundreds of KB).
  std::optional<policies::Proposal> Ask(std::shared_ptr<const policies::EngineSnapshot> snapshot,
                                        const policies::ReplicationPolicyParams& params);

  // How a placement is judged on demand (policies::PlacementGain's
  // parameters). Set: the worker works out the gain of every plan it makes
  // from here on; nullopt (the default): none. Each call drops the gains of
  // plans started before it, so a gain is always one of the parameters in
  // force.
  struct GainParams {
    policies::CounterfactualParams counterfactual;
    policies::RewardParams reward;
  };
  void set_gain_params(std::optional<GainParams> params);

  // A plan's gain: PlacementGain of its placements on the snapshot it was
  // planned from, whose newest step was `through_step`.
  struct PlanGain {
    double gain = 0;
    uint64_t through_step = 0;
  };
  // The gain of the plan last handed out for `snapshot`'s engine, provided
  // `placements` are exactly that plan's and `snapshot` stands where the
  // plan's snapshot stood for PlacementGain: the same epoch, placement in
  // force, capacity factor, K, capacity scope and shape (only the window's
  // steps and the cost model fitted from them differ). Otherwise nullopt, and
  // the caller judges the placement itself. The gain is taken: a second call
  // returns nullopt.
  std::optional<PlanGain> TakeGain(const policies::EngineSnapshot& snapshot,
                                   const std::vector<std::vector<uint32_t>>& placements);

  uint64_t plans_started() const { return plans_started_; }
  // Plans whose gain the worker worked out, and gains taken by TakeGain.
  uint64_t gains_computed() const { return gains_computed_; }
  uint64_t gains_taken() const { return gains_taken_; }

 private:
  // A plan's gain and what PlacementGain read of the snapshot besides its
  // steps and cost model, to match the snapshot a cycle judges it on.
  struct Judged {
    PlanGain gain;
    uint64_t generation = 0;  // of the gain parameters it was worked out with
    uint64_t epoch = 0;
    double capacity_factor = 0;
    uint32_t top_k = 0;
    telemetry::CapacityScope capacity_scope = telemetry::CapacityScope::kExpert;
    uint32_t num_replicas = 0;
    uint32_t num_devices = 0;
    uint32_t reference_top_k = 0;
    std::vector<std::vector<uint32_t>> in_force;    // the snapshot's knobs.phy2log
    std::vector<std::vector<uint32_t>> placements;  // the plan's
  };
  struct Job {
    std::shared_ptr<const policies::EngineSnapshot> snapshot;
    policies::ReplicationPolicyParams params;
    std::optional<GainParams> gain_params;
    uint64_t generation = 0;  // of gain_params
    std::optional<policies::Proposal> result;
    std::optional<Judged> judged;  // with gain_params, a placement and a fitted cost model
    bool done = false;             // guarded by mu_ (so are result and judged)
  };
  struct EngineJobs {
    std::shared_ptr<Job> job;  // in flight or finished, not yet taken
    uint64_t epoch = 0;        // of the last plan started
    uint64_t steps = 0;        // steps_in_epoch of the last plan started
    bool planned = false;
    std::optional<Judged> judged;  // of the plan handed out last, until taken
  };

  void Loop();
  // On the worker's thread: `job`'s gain, when it is to have one.
  static std::optional<Judged> Judge(const Job& job, const policies::Proposal& proposal);

  std::map<std::string, EngineJobs> engines_;  // controller thread only
  uint64_t plans_started_ = 0;
  std::optional<GainParams> gain_params_;  // controller thread only
  uint64_t generation_ = 0;                // of gain_params_
  uint64_t gains_computed_ = 0;            // controller thread only (counted at hand-out)
  uint64_t gains_taken_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  // Jobs taken: released on the worker's thread, since a job may hold the
  // last references to steps long gone from the window (thousands of frees).
  std::vector<std::shared_ptr<Job>> retired_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_PLAN_WORKER_H_
