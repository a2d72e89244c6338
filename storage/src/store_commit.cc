// Store::CommitDecision: a decision row committed ahead of the step records
// queued before it (see store_impl.h, urgent_), on the caller's thread when
// the writer waits, else by the writer next.

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <deque>
#include <iterator>
#include <utility>
#include <vector>

#include "store_impl.h"

namespace moe::storage::internal {

Store::DecisionCommit StoreImpl::CommitDecision(DecisionRow row, Millis timeout) {
  std::unique_lock lock(mu_);
  DecisionCommit out;
  out.id = ++stats_.last_decision_id;
  row.id = out.id;
  if (closed_) {
    EnqueueLocked(std::move(row), 1);  // counted and logged as ignored
    out.status = Status::FailedPrecondition(
        fmt::format("store {} is closed: decision {} was not written", options_.path, out.id));
    return out;
  }
  const uint64_t ticket = ++next_ticket_;
  urgent_.push_back(Op{ticket, 1, std::move(row), 0});
  // The writer waits (nothing of its own in flight, no failure it is backing
  // off from): the row is written here, without waking another thread.
  std::unique_lock db_lock(db_mu_, std::try_to_lock);
  const bool isolating = !queue_.empty() && queue_.front().ticket <= isolate_until_ticket_;
  if (db_lock.owns_lock() && urgent_.size() == 1 && inflight_ops_ == 0 && !isolating &&
      !stats_.failing && !abandon_ && !replaced_) {
    std::vector<Op> batch;
    bool urgent = false;
    TakeBatchLocked(&batch, &urgent);
    lock.unlock();
    BatchCounts counts;
    Status status = WriteBatch(batch, &counts);
    lock.lock();
    inflight_rows_ = inflight_ops_ = inflight_bytes_ = 0;
    inflight_min_ticket_ = 0;
    if (status.ok()) {
      urgent_committed_ticket_ = ticket;
      stats_.steps_written += counts.steps;
      stats_.rows_written += counts.rows;
      stats_.unmatched_updates += counts.unmatched;
      ++stats_.transactions;
      done_cv_.notify_all();
      return out;
    }
    ++stats_.write_errors;
    stats_.last_error = status.ToString();
    if (status.code() == StatusCode::kInvalidArgument && batch.size() == 1) {
      ++stats_.discarded;
      spdlog::error("storage: discarding a write that SQLite rejects ({} so far): {}",
                    stats_.discarded, stats_.last_error);
      out.status = Status::InvalidArgument(fmt::format(
          "decision {} was not written: SQLite rejects it: {}", out.id, stats_.last_error));
      done_cv_.notify_all();
      return out;
    }
    // The writer takes it from here, the ordinary way (isolating a write
    // SQLite rejects, retrying a busy database, reopening a replaced file).
    spdlog::warn("storage: committing decision {} to {} failed; the writer retries: {}", out.id,
                 options_.path, stats_.last_error);
    if (status.code() == StatusCode::kInvalidArgument) isolate_until_ticket_ = ticket;
    RequeueLocked(&batch);
  }
  if (db_lock.owns_lock()) db_lock.unlock();
  work_cv_.notify_one();
  ++urgent_waiting_;  // a batch in progress stops at its next write
  auto committed = [&] {
    return urgent_committed_ticket_ >= ticket || CommittedThroughLocked() >= ticket;
  };
  done_cv_.wait_for(lock, timeout, [&] { return committed() || abandon_; });
  --urgent_waiting_;
  if (discarded_decision_ticket_ == ticket) {
    out.status = Status::InvalidArgument(fmt::format(
        "decision {} was not written: SQLite rejects it: {}", out.id, stats_.last_error));
    return out;
  }
  if (committed()) return out;
  out.status = Status::Timeout(fmt::format(
      "decision {} not committed to {} after {} ms (it stays queued){}{}", out.id, options_.path,
      timeout.count(), stats_.last_error.empty() ? "" : "; last error: ", stats_.last_error));
  return out;
}

uint64_t StoreImpl::CommittedThroughLocked() const {
  uint64_t lowest = next_ticket_ + 1;
  if (!queue_.empty()) lowest = std::min(lowest, queue_.front().ticket);
  if (!urgent_.empty()) lowest = std::min(lowest, urgent_.front().ticket);
  if (inflight_min_ticket_ != 0) lowest = std::min(lowest, inflight_min_ticket_);
  return lowest - 1;
}

void StoreImpl::RequeueLocked(std::vector<Op>* batch) {
  for (const Op& op : *batch) {
    queued_rows_ += op.rows;
    queued_bytes_ += op.bytes;
  }
  if (queue_.empty() || batch->back().ticket < queue_.front().ticket) {
    for (auto it = batch->rbegin(); it != batch->rend(); ++it)
      queue_.push_front(std::move(*it));
  } else {
    std::deque<Op> merged;
    std::merge(std::make_move_iterator(batch->begin()), std::make_move_iterator(batch->end()),
               std::make_move_iterator(queue_.begin()), std::make_move_iterator(queue_.end()),
               std::back_inserter(merged),
               [](const Op& a, const Op& b) { return a.ticket < b.ticket; });
    queue_ = std::move(merged);
  }
  batch->clear();
}

}  // namespace moe::storage::internal
