// Clock: the one source of time for code that must be testable without
// sleeping. Production code takes a `Clock&`; tests pass a FakeClock from
// tests/support/.
//
// Thread safety: implementations must be safe to call from any thread.

#ifndef MOE_COMMON_CLOCK_H_
#define MOE_COMMON_CLOCK_H_

#include <cstdint>

namespace moe {

class Clock {
 public:
  virtual ~Clock() = default;

  // Wall-clock time in nanoseconds since the Unix epoch (for timestamps that
  // are stored or shown to operators).
  virtual int64_t NowNanos() const = 0;

  // Monotonic time in nanoseconds from an arbitrary origin (for durations,
  // cadences and timeouts).
  virtual int64_t MonotonicNanos() const = 0;
};

// The process-wide real clock. Never null; lives for the whole program.
Clock* SystemClock();

}  // namespace moe

#endif  // MOE_COMMON_CLOCK_H_
