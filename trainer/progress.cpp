#include "trainer/progress.h"

#include <unistd.h>

#include <cstdio>

#include "common/log.h"

namespace perennial {

Progress::Progress(const std::string& mode, int64_t totalSteps, int64_t epochs, bool active)
    : mode_(mode), totalSteps_(totalSteps), epochs_(epochs), active_(active && mode != "none"),
      start_(std::chrono::steady_clock::now()) {
  if (mode_ == "auto") mode_ = ::isatty(STDERR_FILENO) ? "bar" : "lines";
}

std::string Progress::formatDuration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  auto s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof(buf), "%lldh%02lldm", (long long)(s / 3600), (long long)(s % 3600 / 60));
  else if (s >= 60) std::snprintf(buf, sizeof(buf), "%lldm%02llds", (long long)(s / 60), (long long)(s % 60));
  else std::snprintf(buf, sizeof(buf), "%llds", (long long)s);
  return buf;
}

void Progress::update(int64_t epoch, int64_t step, double loss, double lr, double samplesPerSecond) {
  if (!active_) return;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double eta = step > 0 ? elapsed / static_cast<double>(step) * static_cast<double>(totalSteps_ - step) : -1;
  if (mode_ == "bar") {
    constexpr int kWidth = 30;
    const int filled = totalSteps_ > 0 ? static_cast<int>(kWidth * step / totalSteps_) : 0;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    std::fprintf(stderr, "\repoch %lld/%lld [%s] step %lld/%lld loss %.4f lr %.3g %.0f samples/s ETA %s   ",
                 (long long)(epoch + 1), (long long)epochs_, bar.c_str(), (long long)step,
                 (long long)totalSteps_, loss, lr, samplesPerSecond, formatDuration(eta).c_str());
    std::fflush(stderr);
    barOpen_ = true;
  } else {
    log::get("train")->info("epoch {}/{} step {}/{} loss {:.4f} lr {:.3g} {:.0f} samples/s ETA {}",
                            epoch + 1, epochs_, step, totalSteps_, loss, lr, samplesPerSecond,
                            formatDuration(eta));
  }
}

void Progress::message(const std::string& line) {
  if (!active_) return;
  finish();
  log::get("train")->info("{}", line);
}

void Progress::finish() {
  if (barOpen_) {
    std::fputc('\n', stderr);
    barOpen_ = false;
  }
}

}  // namespace perennial
