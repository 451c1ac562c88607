#pragma once
// Time as the scheduler sees it: seconds since the epoch. Tests substitute a FakeClock.
#include <chrono>

namespace perennial::sched {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual double now() = 0;
};

class SystemClock : public Clock {
 public:
  double now() override {
    using namespace std::chrono;
    return duration<double>(system_clock::now().time_since_epoch()).count();
  }
};

class FakeClock : public Clock {
 public:
  explicit FakeClock(double t = 1.0e9) : t_(t) {}
  double now() override { return t_; }
  void advance(double s) { t_ += s; }

 private:
  double t_;
};

}  // namespace perennial::sched
