// FakeClock: a Clock whose time moves only when a test says so.

#ifndef MOE_TESTS_SUPPORT_FAKE_CLOCK_H_
#define MOE_TESTS_SUPPORT_FAKE_CLOCK_H_

#include <atomic>
#include <cstdint>

#include "moe/common/clock.h"

namespace moe::testing {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_unix_nanos = 1'790'000'000'000'000'000)
      : now_(start_unix_nanos) {}

  int64_t NowNanos() const override { return now_.load(); }
  int64_t MonotonicNanos() const override { return now_.load(); }

  void Advance(int64_t nanos) { now_ += nanos; }
  void Set(int64_t unix_nanos) { now_ = unix_nanos; }

 private:
  std::atomic<int64_t> now_;
};

}  // namespace moe::testing

#endif  // MOE_TESTS_SUPPORT_FAKE_CLOCK_H_
