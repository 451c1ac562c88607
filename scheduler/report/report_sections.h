#pragma once
// The report's sections: each a function of the model (report_model.h) that returns one
// <section> of HTML, escaped throughout. In page order:
//   summary_section.cpp    summarySection
//   quality_sections.cpp   qualitySection (versions and runs by accuracy), curvesSection
//   timeline_section.cpp   timelineSection
//   table_sections.cpp     lineageSection, verdictsSection, runsSection, quarantineSection
#include <string>

#include "scheduler/report/report_model.h"

namespace perennial::sched::report {

// The champion, shard and run counts as cards; then the triggers' latest decisions.
std::string summarySection(const Model& m, const Champion& ch);
// Holdout accuracy of each registry version, and each ended run's test accuracy over time.
std::string qualitySection(const Model& m);
// Training loss and validation accuracy of the runs in Model::curves; CHAMPION_RUN's drawn wider.
std::string curvesSection(const Model& m, const std::string& championRun);
// One lane per kind of event (shards, quarantine, each trigger, runs, champion changes, drift),
// and the newest events as a table.
std::string timelineSection(const Model& m);
// The champion's lineage: its parent versions, data, configuration and code.
std::string lineageSection(const Model& m, const Champion& ch);
// The validation gate's checks of the newest judged runs.
std::string verdictsSection(const Model& m);
std::string runsSection(const Model& m, const std::string& championRun);
std::string quarantineSection(const Model& m);

}  // namespace perennial::sched::report
