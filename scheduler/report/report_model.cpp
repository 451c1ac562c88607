#include "scheduler/report/report_model.h"

#include <algorithm>
#include <cmath>
#include <exception>
#include <filesystem>

#include "common/fs_util.h"
#include "scheduler/report/report_text.h"
#include "scheduler/run_paths.h"

namespace perennial::sched::report {
namespace {

using nlohmann::json;
namespace stdfs = std::filesystem;

json parseDetail(const std::string& detail) {
  if (detail.empty()) return json();
  json j = json::parse(detail, nullptr, false);
  return j.is_discarded() ? json() : j;
}

// The final test accuracy a run's result reports (none for regression or a non-finite value).
std::optional<double> testAccuracy(const RunRecord& r) {
  if (!r.result || r.result->test.regression || !std::isfinite(r.result->test.accuracy)) return std::nullopt;
  return r.result->test.accuracy;
}

void loadCatalog(Model& m, const std::string& path) {
  Catalog cat(path, Catalog::Access::kReadOnly);
  // One read transaction: the counts, runs and events agree although a scheduler may be ticking.
  cat.readTransaction([&] {
    const NewDataStats all = cat.shardsAfter(0);
    m.shards = all.shards;
    m.rows = all.rows;
    m.quarantinedCount = cat.quarantineCount();
    m.byState = cat.runCountsByState();
    std::vector<RunRecord> recs = cat.recentRuns(100000);
    std::reverse(recs.begin(), recs.end());
    for (auto& r : recs) {
      RunInfo ri;
      ri.rec = std::move(r);
      ri.index = m.runs.size();
      ri.accuracy = testAccuracy(ri.rec);
      m.runIndex[ri.rec.id] = ri.index;
      m.runs.push_back(std::move(ri));
    }
    std::vector<EventRecord> events = cat.events(static_cast<int64_t>(m.opt.maxEvents));
    for (auto it = events.rbegin(); it != events.rend(); ++it) {
      Event e;
      static_cast<EventRecord&>(e) = std::move(*it);
      e.detailJson = parseDetail(e.detail);
      m.events.push_back(std::move(e));
    }
    for (auto& t : cat.triggerStates()) {
      TriggerState s;
      static_cast<TriggerStateRecord&>(s) = std::move(t);
      s.detailJson = parseDetail(s.detail);
      m.triggers.push_back(std::move(s));
    }
    m.quarantine = cat.quarantined(static_cast<int64_t>(m.opt.maxQuarantine));
    m.metaChampion = cat.meta("champion");
    m.lastTick = cat.meta("last_tick_at");
  });
}

// The registry model to show: the one whose champion is the catalog's, else the first with a
// champion, else the first.
std::string pickModel(const Registry& reg, const std::vector<std::string>& models,
                      const std::optional<std::string>& metaChampion) {
  std::string pick;
  for (const auto& name : models) {
    try {
      auto champ = reg.alias(name, "champion");
      if (!champ) continue;
      if (pick.empty()) pick = name;
      if (metaChampion && reg.show(name, *champ).lineage.value("run_id", "") == *metaChampion) {
        return name;
      }
    } catch (const std::exception&) {
    }
  }
  if (pick.empty() && !models.empty()) pick = models.front();
  return pick;
}

// The registry's versions of the model shown, and the version each run was published as.
// Returns the verdicts the versions hold, by version (a run without its own verdict.json shows its
// version's).
std::map<std::string, VersionInfo> loadRegistry(Model& m) {
  std::map<std::string, VersionInfo> infos;
  if (!fs::isDirectory(m.registryDir)) return infos;
  try {
    Registry reg(m.registryDir);
    m.model = pickModel(reg, reg.models(), m.metaChampion);
    if (m.model.empty()) return infos;
    m.championVersion = reg.alias(m.model, "champion");
    m.history = reg.history(m.model);
    for (const auto& v : reg.versions(m.model)) {
      VersionRow row;
      row.version = v;
      row.dir = reg.path(m.model, v);
      try {
        VersionInfo info = reg.show(m.model, v);
        row.lineage = info.lineage;
        row.runId = text(info.lineage, "run_id");
        row.accuracy = number(info.metrics, "accuracy");
        row.holdoutId = text(info.metrics, "holdout_id");
        if (const auto rows = number(info.metrics, "holdout_rows")) row.holdoutRows = static_cast<int64_t>(*rows);
        infos.emplace(v, std::move(info));
      } catch (const std::exception&) {
        // Shown without its details; `perennial registry show` says what is wrong with it.
      }
      if (const RunInfo* r = m.run(row.runId)) row.at = r->endAt();
      if (!row.at) {
        for (const auto& e : m.history) {
          if (e.to == v && e.action == "promote") {
            row.at = e.at;
            break;
          }
        }
      }
      if (auto it = m.runIndex.find(row.runId); it != m.runIndex.end()) m.runs[it->second].version = v;
      m.versions.push_back(std::move(row));
    }
  } catch (const std::exception& e) {
    m.registryError = e.what();
  }
  return infos;
}

// The verdict of each judged run: its own verdict.json, else the one its registry version holds.
void loadVerdicts(Model& m, const std::map<std::string, VersionInfo>& versions) {
  for (auto& r : m.runs) {
    if (r.rec.state != RunState::kPromoted && r.rec.state != RunState::kRejected) continue;
    try {
      r.verdict = Verdict::read(RunPaths::of(m.opt.root, r.rec.id).verdict());
    } catch (const std::exception& e) {
      r.verdictProblem = e.what();
    }
    if (r.verdict || r.version.empty()) continue;
    auto it = versions.find(r.version);
    if (it == versions.end()) continue;
    try {
      r.verdict = Verdict::fromJson(it->second.verdict, it->second.dir + "/verdict.json");
      r.verdictProblem.clear();
    } catch (const std::exception& e) {
      if (r.verdictProblem.empty()) r.verdictProblem = e.what();
    }
  }
}

void loadCurves(Model& m) {
  for (auto it = m.runs.rbegin(); it != m.runs.rend() && m.curves.size() < m.opt.curveRuns; ++it) {
    MetricsCurves cv = readMetricsCurves(RunPaths::of(m.opt.root, it->rec.id).metrics());
    if (cv.trainLoss.empty() && cv.testAccuracy.empty()) continue;
    m.curves.push_back({it->index, std::move(cv)});
  }
  std::reverse(m.curves.begin(), m.curves.end());
}

}  // namespace

const RunInfo* Model::run(const std::string& id) const {
  auto it = runIndex.find(id);
  return it == runIndex.end() ? nullptr : &runs[it->second];
}

const VersionRow* Model::version(const std::string& v) const {
  for (const auto& r : versions) {
    if (r.version == v) return &r;
  }
  return nullptr;
}

Model loadModel(const ReportOptions& opt) {
  Model m;
  m.opt = opt;
  m.registryDir = opt.registryDir.empty() ? opt.root + "/registry" : opt.registryDir;
  const std::string catalog = opt.root + "/catalog.db";
  if (fs::exists(catalog)) {
    m.haveCatalog = true;
    loadCatalog(m, catalog);
  }
  const std::map<std::string, VersionInfo> versions = loadRegistry(m);
  loadVerdicts(m, versions);
  loadCurves(m);
  return m;
}

Champion championOf(const Model& m) {
  Champion ch;
  if (m.championVersion) {
    ch.version = m.version(*m.championVersion);
    ch.label = m.model + ":" + *m.championVersion;
    if (ch.version) {
      ch.runId = ch.version->runId;
      ch.accuracy = ch.version->accuracy;
    }
  } else if (m.metaChampion) {
    ch.runId = *m.metaChampion;
    ch.label = "run " + ch.runId;
    if (const RunInfo* r = m.run(ch.runId)) ch.accuracy = r->accuracy;
  }
  return ch;
}

}  // namespace perennial::sched::report
