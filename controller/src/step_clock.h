// StepClock: the controller's clock under `step_clock_ms` (options.h).
//
// Time advances by a fixed amount per step record the controller takes in and
// stands still between them, so every cadence, cooldown and timeout the
// controller keeps counts engine steps. With an engine that awaits the
// controller after each step (StepRecord::await_sync), a decision then lands
// at the same step however fast or loaded the machine is: a benchmark's
// verdict does not move with the machine.
//
// Thread safety: OnStep from the controller's thread; the readers from any.

#ifndef MOE_CONTROLLER_SRC_STEP_CLOCK_H_
#define MOE_CONTROLLER_SRC_STEP_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "moe/common/clock.h"

namespace moe::controller {

class StepClock final : public Clock {
 public:
  // Starts at `start`'s time now; each OnStep adds `step_ns` (> 0).
  StepClock(const Clock& start, int64_t step_ns)
      : wall_origin_(start.NowNanos()), mono_origin_(start.MonotonicNanos()), step_ns_(step_ns) {}

  void OnStep() { steps_.fetch_add(1, std::memory_order_relaxed); }
  int64_t steps() const { return steps_.load(std::memory_order_relaxed); }

  int64_t NowNanos() const override { return wall_origin_ + steps() * step_ns_; }
  int64_t MonotonicNanos() const override { return mono_origin_ + steps() * step_ns_; }

 private:
  const int64_t wall_origin_;
  const int64_t mono_origin_;
  const int64_t step_ns_;
  std::atomic<int64_t> steps_{0};
};

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_STEP_CLOCK_H_
