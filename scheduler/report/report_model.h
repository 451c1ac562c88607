#pragma once
// What the report shows, read from a scheduler root: the catalog through Catalog, the model
// registry through Registry, and a run's files through RunPaths and the contracts that own them
// (TrainResult in the catalog's RunRecord, Verdict for verdict.json, readMetricsCurves for
// metrics.jsonl). Nothing here formats: the sections (report_sections.h) draw this model.
//
// Loading never fails on what it reads: a root without a catalog or a registry, a registry that
// cannot be listed, a version or a verdict that does not read, leave their parts empty and say so
// (haveCatalog, registryError, RunInfo::verdictProblem).
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "scheduler/catalog.h"
#include "scheduler/gate.h"
#include "scheduler/registry.h"
#include "scheduler/report/report.h"
#include "trainer/metrics_curves.h"

namespace perennial::sched::report {

// A catalog event and a trigger's latest decision, with their JSON detail parsed (null when the
// catalog holds text that is not JSON).
struct Event : EventRecord {
  nlohmann::json detailJson;
};
struct TriggerState : TriggerStateRecord {
  nlohmann::json detailJson;
};

struct RunInfo {
  RunRecord rec;
  size_t index = 0;                // in Model::runs
  std::optional<double> accuracy;  // the trainer's final test accuracy (classification runs)
  std::string version;             // the registry version published from the run ("": none)
  // A judged run's (promoted or rejected) verdict: RUN/verdict.json, else its registry version's.
  std::optional<Verdict> verdict;
  std::string verdictProblem;  // why a judged run has none ("": there is no file to read)
  // When the run ended (its last update while it has not).
  double endAt() const { return rec.finishedAt ? *rec.finishedAt : rec.updatedAt; }
};

// A version of the registry model shown.
struct VersionRow {
  std::string version;
  std::string dir;                 // Registry::path
  std::string runId;               // lineage.json's run_id
  std::optional<double> accuracy;  // metrics.json's holdout accuracy
  std::string holdoutId;           // which holdout it was measured on ("" : not recorded)
  int64_t holdoutRows = 0;
  std::optional<double> at;        // when its run ended, else when it was first promoted
  nlohmann::json lineage;          // lineage.json (null when the version does not read)
};

// The training curves of one run.
struct RunCurves {
  size_t run = 0;  // in Model::runs
  MetricsCurves curves;
};

struct Model {
  ReportOptions opt;
  std::string registryDir;
  // The catalog.
  bool haveCatalog = false;
  int64_t shards = 0, rows = 0, quarantinedCount = 0;
  std::map<std::string, int64_t> byState;
  std::vector<RunInfo> runs;  // oldest first
  std::map<std::string, size_t> runIndex;
  std::vector<Event> events;  // the newest opt.maxEvents, oldest first
  std::vector<TriggerState> triggers;
  std::vector<QuarantineRecord> quarantine;  // the newest opt.maxQuarantine, newest first
  std::optional<std::string> metaChampion, lastTick;
  // The newest opt.curveRuns runs that logged a training curve, oldest first.
  std::vector<RunCurves> curves;
  // The registry: one model, the one whose champion is the catalog's, else the first with a
  // champion, else the first.
  std::string registryError;
  std::string model;
  std::vector<VersionRow> versions;  // in version order
  std::optional<std::string> championVersion;
  std::vector<HistoryEntry> history;

  const RunInfo* run(const std::string& id) const;
  const VersionRow* version(const std::string& v) const;
};

// Reads the model of OPT.root (OPT.registryDir, "" for ROOT/registry).
Model loadModel(const ReportOptions& opt);

// The champion: the registry's, or the catalog's champion run when there is no registry model.
struct Champion {
  std::string label;  // model:version, or "run <id>" without a registry ("": no champion)
  std::string runId;
  std::optional<double> accuracy;
  const VersionRow* version = nullptr;  // in the model
};
Champion championOf(const Model& m);

}  // namespace perennial::sched::report
