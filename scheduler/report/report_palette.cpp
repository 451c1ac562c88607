#include "scheduler/report/report_palette.h"

#include "scheduler/catalog.h"
#include "scheduler/report/report_text.h"

namespace perennial::sched::report {
namespace {

const char* kSeries[] = {kVersionLine, "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b6992d",
                         "#b07aa1",    "#ff9da7", "#9c755f", "#79706e", "#1f77b4", "#17becf"};
constexpr size_t kNumSeries = sizeof(kSeries) / sizeof(kSeries[0]);

}  // namespace

const char* stateColour(const std::string& s) {
  if (s == state::kPromoted) return "#2e7d32";
  if (s == state::kSucceeded) return "#3f7fbf";
  if (s == state::kRejected) return "#e8710a";
  if (s == state::kFailed) return "#c62828";
  if (s == state::kCancelled) return "#8a939c";
  if (s == state::kValidating) return "#7b4fb8";
  if (s == state::kRunning || s == state::kSubmitted) return "#1a73e8";
  return "#9aa5b1";  // pending, preempted
}

Shape stateShape(const std::string& s) {
  if (s == state::kRejected) return Shape::kTriangle;
  if (s == state::kFailed || s == state::kCancelled) return Shape::kCross;
  if (s == state::kPending || s == state::kSubmitted || s == state::kRunning || s == state::kPreempted) {
    return Shape::kRing;
  }
  return Shape::kCircle;
}

const char* runColour(size_t index, size_t runs) {
  const size_t firstColoured = runs > kNumSeries ? runs - kNumSeries : 0;
  const size_t colour = index >= firstColoured ? index - firstColoured : index % kNumSeries;
  return kSeries[colour % kNumSeries];
}

std::string badge(const std::string& s) {
  return "<span class=\"badge\" style=\"--c:" + std::string(stateColour(s)) + "\">" + h(s) + "</span>";
}

}  // namespace perennial::sched::report
