#pragma once
// `perennial report`: one self-contained HTML page of what the scheduler did, for an operator.
// It reads the scheduler root (catalog.db, runs/<id>/train/metrics.jsonl, runs/<id>/verdict.json)
// and the model registry, and draws its charts as inline SVG: nothing is loaded from the network
// and nothing in the root is changed. Every string from the catalog or a JSON file is escaped.
//
// The parts, in this folder:
//   report_model.h     what the page shows, read through Catalog, Registry and the typed
//                      contracts (TrainResult, Verdict, the run's metrics curves)
//   svg_chart.h        the chart kit: ticks, frames, axes, markers, legends, labels, downsampling
//   report_sections.h  the page's sections, each a function of the model
//   report_text.h      escaping; numbers, times and JSON values as text
//   report_palette.h   the colours and markers of run states and event kinds
//   report.css         the page's style sheet, embedded at build time (scheduler/CMakeLists.txt)
#include <cstddef>
#include <string>
#include <string_view>

namespace perennial::sched {

// Text for HTML content and attribute values: & < > " ' become entities; control characters
// other than tab, newline and carriage return become U+FFFD.
std::string htmlEscape(std::string_view text);

struct ReportOptions {
  std::string root;
  std::string registryDir;      // empty: ROOT/registry
  double now = 0;               // the generation time (Unix seconds); 0: the clock
  std::size_t maxRuns = 50;     // rows of the runs table
  std::size_t curveRuns = 12;   // newest runs whose training curves are drawn
  std::size_t maxVerdicts = 12; // newest judged runs whose verdicts are listed
  std::size_t maxQuarantine = 100;
  std::size_t maxEvents = 5000; // newest catalog events on the timeline
};

// The page. Throws ConfigError when ROOT is not a directory. A root without a catalog, runs or
// registry gives a page that says so.
std::string renderReport(const ReportOptions& options);

// Renders the report of ROOT (registry REGISTRY_DIR, "" for ROOT/registry) and writes it to OUT
// atomically.
void writeReport(const std::string& root, const std::string& registryDir, const std::string& out);

}  // namespace perennial::sched
