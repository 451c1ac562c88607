#include "scheduler/report/report_palette.h"

#include "scheduler/catalog.h"
#include "scheduler/report/report_text.h"

namespace perennial::sched::report {
namespace {

const char* kSeries[] = {kVersionLine, "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b6992d",
                         "#b07aa1",    "#ff9da7", "#9c755f", "#79706e", "#1f77b4", "#17becf"};
constexpr size_t kNumSeries = sizeof(kSeries) / sizeof(kSeries[0]);

}  // namespace

const char* stateColour(RunState s) {
  switch (s) {
    case RunState::kPromoted: return "#2e7d32";
    case RunState::kSucceeded: return "#3f7fbf";
    case RunState::kRejected: return "#e8710a";
    case RunState::kFailed: return "#c62828";
    case RunState::kCancelled: return "#8a939c";
    case RunState::kValidating: return "#7b4fb8";
    case RunState::kRunning:
    case RunState::kSubmitted: return "#1a73e8";
    case RunState::kPending:
    case RunState::kPreempted: return kWaiting;
  }
  return kWaiting;
}

Shape stateShape(RunState s) {
  switch (s) {
    case RunState::kRejected: return Shape::kTriangle;
    case RunState::kFailed:
    case RunState::kCancelled: return Shape::kCross;
    case RunState::kPending:
    case RunState::kSubmitted:
    case RunState::kRunning:
    case RunState::kPreempted: return Shape::kRing;
    case RunState::kSucceeded:
    case RunState::kValidating:
    case RunState::kPromoted: return Shape::kCircle;
  }
  return Shape::kCircle;
}

const char* runColour(size_t index, size_t runs) {
  const size_t firstColoured = runs > kNumSeries ? runs - kNumSeries : 0;
  const size_t colour = index >= firstColoured ? index - firstColoured : index % kNumSeries;
  return kSeries[colour % kNumSeries];
}

std::string badge(RunState s) {
  return "<span class=\"badge\" style=\"--c:" + std::string(stateColour(s)) + "\">" + h(runStateName(s)) + "</span>";
}

}  // namespace perennial::sched::report
