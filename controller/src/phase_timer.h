// PhaseTimer: adds the wall time of a scope to one phase of the control
// cycle's profile (Controller::last_cycle()).

#ifndef MOE_CONTROLLER_SRC_PHASE_TIMER_H_
#define MOE_CONTROLLER_SRC_PHASE_TIMER_H_

#include <chrono>

namespace moe::controller {

// Adds the wall time of its scope to `*us` (a CycleProfile phase).
class PhaseTimer {
 public:
  explicit PhaseTimer(double* us) : us_(us), start_(std::chrono::steady_clock::now()) {}
  ~PhaseTimer() { Stop(); }
  PhaseTimer(const PhaseTimer&) = delete;
  PhaseTimer& operator=(const PhaseTimer&) = delete;
  // Ends the phase before the scope does; later calls do nothing.
  void Stop() {
    if (us_ == nullptr) return;
    *us_ += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start_)
                .count();
    us_ = nullptr;
  }

 private:
  double* us_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace moe::controller

#endif  // MOE_CONTROLLER_SRC_PHASE_TIMER_H_
