#include "plan_worker.h"

#include <sys/resource.h>
#include <unistd.h>

#include <memory>
#include <utility>
#include <vector>

namespace moe::controller {

PlanWorker::PlanWorker() : thread_([this] { Loop(); }) {}

PlanWorker::~PlanWorker() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  thread_.join();
}

void PlanWorker::Loop() {
  // Background work: below the control thread, so that a plan in progress
  // never preempts a cycle (best effort; an error leaves the priority as is).
  (void)setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kWorkerNice);
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    if (!retired_.empty()) {
      std::vector<std::shared_ptr<Job>> retired;
      retired.swap(retired_);
      lock.unlock();
      retired.clear();
      lock.lock();
      continue;
    }
    std::shared_ptr<Job> job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    std::optional<policies::Proposal> result =
        policies::ProposeReplication(*job->snapshot, job->params);
    std::optional<Judged> judged = result ? Judge(*job, *result) : std::nullopt;
    lock.lock();
    job->result = std::move(result);
    job->judged = std::move(judged);
    job->done = true;
  }
}

std::optional<PlanWorker::Judged> PlanWorker::Judge(const Job& job,
                                                    const policies::Proposal& proposal) {
  const policies::EngineSnapshot& snapshot = *job.snapshot;
  if (!job.gain_params || proposal.placements.empty() || !snapshot.cost_model.calibrated) {
    return std::nullopt;
  }
  Judged out;
  out.gain.gain = policies::PlacementGain(snapshot, proposal.placements,
                                          job.gain_params->counterfactual, job.gain_params->reward);
  out.gain.through_step = snapshot.recent.empty() ? 0 : snapshot.recent.back().step;
  out.generation = job.generation;
  out.epoch = snapshot.epoch;
  out.capacity_factor = snapshot.knobs.capacity_factor;
  out.top_k = snapshot.knobs.top_k;
  out.capacity_scope = snapshot.knobs.capacity_scope;
  out.num_replicas = snapshot.num_replicas;
  out.num_devices = snapshot.num_devices;
  out.reference_top_k = snapshot.reference_top_k;
  out.in_force = snapshot.knobs.phy2log;
  out.placements = proposal.placements;
  return out;
}

void PlanWorker::set_gain_params(std::optional<GainParams> params) {
  gain_params_ = std::move(params);
  ++generation_;
}

std::optional<PlanWorker::PlanGain> PlanWorker::TakeGain(
    const policies::EngineSnapshot& snapshot,
    const std::vector<std::vector<uint32_t>>& placements) {
  auto it = engines_.find(snapshot.engine_id);
  if (it == engines_.end() || !it->second.judged) return std::nullopt;
  std::optional<Judged> judged = std::move(it->second.judged);
  it->second.judged.reset();
  const policies::KnobValues& knobs = snapshot.knobs;
  // Cheapest first; the placements are compared in full, never by a hash.
  const bool same = judged->generation == generation_ && judged->epoch == snapshot.epoch &&
                    judged->capacity_factor == knobs.capacity_factor &&
                    judged->top_k == knobs.top_k &&
                    judged->capacity_scope == knobs.capacity_scope &&
                    judged->num_replicas == snapshot.num_replicas &&
                    judged->num_devices == snapshot.num_devices &&
                    judged->reference_top_k == snapshot.reference_top_k &&
                    judged->placements == placements && judged->in_force == knobs.phy2log;
  if (!same) return std::nullopt;
  ++gains_taken_;
  return judged->gain;
}

std::optional<policies::Proposal> PlanWorker::Ask(const policies::EngineSnapshot& snapshot,
                                                  const policies::ReplicationPolicyParams& params) {
  size_t num_slots = static_cast<size_t>(snapshot.num_replicas) * snapshot.layers.size();
  if (num_slots <= kInlineSlots) return policies::ProposeReplication(snapshot, params);
  return Ask(std::make_shared<const policies::EngineSnapshot>(snapshot), params);
}

std::optional<policies::Proposal> PlanWorker::Ask(
    std::shared_ptr<const policies::EngineSnapshot> shared,
    const policies::ReplicationPolicyParams& params) {
  const policies::EngineSnapshot& snapshot = *shared;
  size_t num_slots = static_cast<size_t>(snapshot.num_replicas) * snapshot.layers.size();
  if (num_slots <= kInlineSlots) return policies::ProposeReplication(snapshot, params);
  if (snapshot.num_devices <= 1 || snapshot.steps_in_epoch < params.min_steps) return std::nullopt;

  EngineJobs& e = engines_[snapshot.engine_id];
  if (e.job) {
    std::lock_guard lock(mu_);
    if (!e.job->done) return std::nullopt;
  }
  if (e.job) {
    std::shared_ptr<Job> job = std::move(e.job);
    std::optional<policies::Proposal> result;
    const bool current = job->snapshot->epoch == snapshot.epoch;
    e.judged.reset();
    if (current) {
      result = std::move(job->result);
      e.judged = std::move(job->judged);
      if (e.judged) ++gains_computed_;
    }
    {
      // Not woken for this: a woken worker would take the control thread's
      // core on a small machine; it releases the job when it plans next.
      std::lock_guard lock(mu_);
      retired_.push_back(std::move(job));
    }
    if (current) return result;
  }
  const bool due = !e.planned || e.epoch != snapshot.epoch ||
                   snapshot.steps_in_epoch >= e.steps + params.min_steps;
  if (!due) return std::nullopt;
  auto job = std::make_shared<Job>();
  job->snapshot = std::move(shared);
  job->params = params;
  job->gain_params = gain_params_;
  job->generation = generation_;
  e.job = job;
  e.epoch = snapshot.epoch;
  e.steps = snapshot.steps_in_epoch;
  e.planned = true;
  ++plans_started_;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
  return std::nullopt;
}

}  // namespace moe::controller
