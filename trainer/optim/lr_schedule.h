#pragma once
// Learning-rate schedules, as a pure function of the optimizer step (so resuming at step s
// restores the rate exactly, with no schedule state beyond s).
//
//   warm-up (s < W):  lr * (s + 1) / W
//   constant:          lr
//   step:              lr * gamma^floor((s - W) / step_size)
//   cosine:            min_lr + (lr - min_lr) * (1 + cos(pi * (s - W) / (T - W))) / 2, T = total steps
#include <cstdint>
#include <string>

namespace perennial {

struct LrSchedule {
  std::string kind = "constant";  // constant | step | cosine
  double baseLr = 0.1;
  int64_t warmupSteps = 0;
  int64_t stepSize = 1000;
  double gamma = 0.1;
  double minLr = 0.0;
  int64_t totalSteps = 1;

  double at(int64_t step) const;
};

}  // namespace perennial
