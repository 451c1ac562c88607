#pragma once
// Progress reporting on rank 0: a redrawn bar on a terminal, plain log lines otherwise.
#include <chrono>
#include <cstdint>
#include <string>

namespace perennial {

class Progress {
 public:
  // MODE: auto | bar | lines | none. auto picks bar when stderr is a terminal.
  Progress(const std::string& mode, int64_t totalSteps, int64_t epochs, bool active);

  void update(int64_t epoch, int64_t step, double loss, double lr, double samplesPerSecond);
  void message(const std::string& line);  // ends a bar line before logging
  void finish();

  static std::string formatDuration(double seconds);

 private:
  std::string mode_;
  int64_t totalSteps_;
  int64_t epochs_;
  bool active_;
  bool barOpen_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace perennial
