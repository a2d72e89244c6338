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
// The worker runs at nice kWorkerNice, below the control thread, and
// releases finished jobs when it next plans.
//
// Thread safety: Ask from one thread (the controller's).

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

#include "moe/policies/replication_policy.h"
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

  uint64_t plans_started() const { return plans_started_; }

 private:
  struct Job {
    std::shared_ptr<const policies::EngineSnapshot> snapshot;
    policies::ReplicationPolicyParams params;
    std::optional<policies::Proposal> result;
    bool done = false;  // guarded by mu_
  };
  struct EngineJobs {
    std::shared_ptr<Job> job;  // in flight or finished, not yet taken
    uint64_t epoch = 0;        // of the last plan started
    uint64_t steps = 0;        // steps_in_epoch of the last plan started
    bool planned = false;
  };

  void Loop();

  std::map<std::string, EngineJobs> engines_;  // controller thread only
  uint64_t plans_started_ = 0;
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
