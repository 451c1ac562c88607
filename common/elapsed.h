#pragma once
// Elapsed wall time on the monotonic clock, for logs and timings.
#include <chrono>

namespace perennial {

using SteadyClock = std::chrono::steady_clock;

inline double secondsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double>(SteadyClock::now() - start).count();
}

}  // namespace perennial
