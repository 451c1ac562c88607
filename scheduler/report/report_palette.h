#pragma once
// The report's colours and markers, one meaning each across the page: a run's state has one
// colour and one marker shape in every chart, legend and badge.
#include <cstddef>
#include <string>

#include "scheduler/catalog.h"
#include "scheduler/report/svg_chart.h"

namespace perennial::sched::report {

inline constexpr const char* kMuted = "#6b7785";
inline constexpr const char* kChampion = "#c99a06";
inline constexpr const char* kShard = "#3f7fbf";
inline constexpr const char* kQuarantine = "#c62828";
inline constexpr const char* kTrigger = "#7b4fb8";
inline constexpr const char* kDrift = "#0f8b8d";
// The first colour of the series: the registry versions' line.
inline constexpr const char* kVersionLine = "#4e79a7";
// Runs waiting for an attempt (pending, preempted), and a state name this build does not know.
inline constexpr const char* kWaiting = "#9aa5b1";

const char* stateColour(RunState state);
Shape stateShape(RunState state);
// The line colour of the run at INDEX (oldest first) of RUNS runs: the newest runs get distinct
// colours, in run order.
const char* runColour(size_t index, size_t runs);
// A run state as a coloured label (HTML).
std::string badge(RunState state);

}  // namespace perennial::sched::report
