#pragma once
// Where a training step's time goes: the step-time breakdown that result.json reports
// ("step_time_ms") and the throughput benchmark reads.
//
// The training thread calls lap(PHASE) at the end of each phase of a step; the time since the
// previous lap goes to PHASE. Time outside steps (evaluation, checkpoints) is left out with
// resume(). Host wall time: on a GPU, work the host only queues lands in the phase where the host
// waits for it. The loader's own thread is measured apart (its CPU time), since on a core it
// shares with the training thread that time is taken from compute.
#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace perennial {

class StepTimer {
 public:
  enum Phase { kLoader, kForward, kBackward, kReduce, kOptimizer, kOther, kPhases };

  // Starts (or restarts, after a pause) the clock without charging the time since to any phase.
  void resume() { last_ = Clock::now(); }
  void lap(Phase p) {
    const auto now = Clock::now();
    seconds_[p] += std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }
  void countStep() { ++steps_; }
  void addLoaderCpu(double seconds) { loaderCpu_ += seconds; }

  int64_t steps() const { return steps_; }
  // Mean milliseconds per step of each phase, and of the loader thread's CPU time, by name:
  // forward, backward, reduce, optimizer, loader_wait, other, loader_thread_cpu.
  std::vector<std::pair<std::string, double>> millisecondsPerStep() const;

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point last_ = Clock::now();
  std::array<double, kPhases> seconds_{};
  double loaderCpu_ = 0;
  int64_t steps_ = 0;
};

inline std::vector<std::pair<std::string, double>> StepTimer::millisecondsPerStep() const {
  const double per = steps_ > 0 ? 1000.0 / static_cast<double>(steps_) : 0;
  return {{"forward", seconds_[kForward] * per},    {"backward", seconds_[kBackward] * per},
          {"reduce", seconds_[kReduce] * per},      {"optimizer", seconds_[kOptimizer] * per},
          {"loader_wait", seconds_[kLoader] * per}, {"other", seconds_[kOther] * per},
          {"loader_thread_cpu", loaderCpu_ * per}};
}

}  // namespace perennial
