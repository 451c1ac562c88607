#include "trainer/optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace perennial {

double LrSchedule::at(int64_t step) const {
  if (step < warmupSteps) return baseLr * static_cast<double>(step + 1) / static_cast<double>(warmupSteps);
  const int64_t s = step - warmupSteps;
  if (kind == "constant") return baseLr;
  if (kind == "step") return baseLr * std::pow(gamma, static_cast<double>(s / stepSize));
  if (kind == "cosine") {
    const int64_t span = std::max<int64_t>(1, totalSteps - warmupSteps);
    const double t = std::min(1.0, static_cast<double>(s) / static_cast<double>(span));
    return minLr + (baseLr - minLr) * 0.5 * (1.0 + std::cos(M_PI * t));
  }
  PERENNIAL_CHECK(false, "unknown schedule " << kind);
}

}  // namespace perennial
