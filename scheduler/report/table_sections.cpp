#include "scheduler/report/report_sections.h"

#include <algorithm>
#include <optional>
#include <set>
#include <string>

#include "scheduler/report/report_palette.h"
#include "scheduler/report/report_text.h"

namespace perennial::sched::report {

using nlohmann::json;

std::string lineageSection(const Model& m, const Champion& ch) {
  std::string o = "<section id=\"lineage\" class=\"card\"><h2>Champion lineage</h2>";
  if (ch.label.empty()) {
    o += emptyState("No champion yet", "the first run that passes the validation gate becomes the champion");
    return o + "</section>";
  }
  const RunInfo* run = m.run(ch.runId);
  if (!ch.version) {
    o += "<p class=\"sub\">Run <code>" + h(ch.runId) + "</code> is the champion; it is not in a registry (the scheduler runs without the validation gate).</p>";
    if (run) {
      o += "<table class=\"kv\">" + kv("run", "<code>" + h(run->rec.id) + "</code>") +
           kv("data snapshot", hashHtml(run->rec.snapshotId, 64)) + kv("config sha256", hashHtml(run->rec.configSha256, 64)) +
           kv("param sha256", hashHtml(run->rec.result ? run->rec.result->paramSha256 : "", 64)) +
           kv("code version", h(run->rec.result ? run->rec.result->perennialVersion : "")) +
           "</table>";
    }
    return o + "</section>";
  }
  const json& l = ch.version->lineage;
  o += "<p class=\"sub\">From <code>" + h(ch.version->dir + "/lineage.json") + "</code>.</p>";
  // The chain of parent versions back to the first.
  std::string chain;
  std::set<std::string> seen;
  std::string v = ch.version->version;
  size_t skipped = 0;
  while (!v.empty() && seen.insert(v).second) {
    const VersionRow* row = m.version(v);
    const std::string parent = row ? text(row->lineage, "parent_version") : "";
    // A long chain: the newest eight, then the first version.
    if (seen.size() > 8 && !parent.empty()) {
      ++skipped;
      v = parent;
      continue;
    }
    if (skipped) {
      chain += "<span class=\"arrow\">&#8592;</span><span class=\"muted\">" + std::to_string(skipped) + " more</span>";
      skipped = 0;
    }
    chain += std::string(chain.empty() ? "" : "<span class=\"arrow\">&#8592;</span>") + "<span class=\"ver" +
             (seen.size() == 1 ? " current" : "") + "\"><strong>" + h(v) + "</strong><small>" +
             (row ? h(row->runId) + " &middot; " + accText(row->accuracy) : "missing") + "</small></span>";
    v = parent;
  }
  if (seen.size() == 1) chain += "<span class=\"muted\">(the first version: no parent)</span>";
  size_t shardCount = l.is_object() && l.contains("shards") && l["shards"].is_array() ? l["shards"].size() : 0;
  std::string checkpoint = text(l, "checkpoint");
  std::string rowsText;
  if (run) {
    for (const auto& e : m.events) {
      if (e.kind == "run" && e.subject == run->rec.id) {
        if (auto rws = number(e.detailJson, "rows")) {
          rowsText = " (" + format("%.0f", *rws) + " rows)";
          break;
        }
      }
    }
  }
  o += "<table class=\"kv\">";
  o += kv("version", "<strong>" + h(ch.label) + "</strong> &middot; holdout accuracy " + accText(ch.accuracy));
  o += kv("parent chain", "<div class=\"chain\">" + chain + "</div>");
  o += kv("run", "<code>" + h(text(l, "run_id")) + "</code> &middot; started by " + h(text(l, "reason").empty() ? text(l, "trigger") : text(l, "reason")));
  o += kv("data snapshot", hashHtml(text(l, "data_snapshot"), 64));
  o += kv("shards", std::to_string(shardCount) + h(rowsText));
  o += kv("config sha256", hashHtml(text(l, "config_sha256"), 64));
  o += kv("checkpoint", (checkpoint.empty() ? std::string() : "<code>" + h(checkpoint) + "</code> &middot; sha256 ") +
                            hashHtml(text(l, "checkpoint_sha256"), 64));
  o += kv("param sha256", hashHtml(text(l, "param_sha256"), 64));
  o += kv("code version", h(text(l, "code_version").empty() ? "-" : text(l, "code_version")));
  o += kv("world size", h(text(l, "world_size").empty() ? "-" : text(l, "world_size")));
  const std::string warm = text(l, "warm_start_run");
  o += kv("warm start", warm.empty() ? "from scratch" : "from run <code>" + h(warm) + "</code>");
  o += "</table>";
  const std::string config = text(l, "config");
  if (!config.empty()) o += "<details><summary>Resolved training configuration</summary><pre>" + h(config) + "</pre></details>";
  return o + "</section>";
}

std::string verdictsSection(const Model& m) {
  std::string o = "<section id=\"verdicts\" class=\"card\"><h2>Verdicts</h2><p class=\"sub\">The validation gate's checks "
                  "for each judged run, newest first (at most " + std::to_string(m.opt.maxVerdicts) + ").</p>";
  size_t n = 0;
  for (auto it = m.runs.rbegin(); it != m.runs.rend() && n < m.opt.maxVerdicts; ++it) {
    const RunInfo& r = *it;
    if (r.rec.state != RunState::kPromoted && r.rec.state != RunState::kRejected) continue;
    const Verdict* v = r.verdict ? &*r.verdict : nullptr;
    ++n;
    const bool pass = v ? v->passed : r.rec.state == RunState::kPromoted;
    o += std::string("<details class=\"verdict\"") + (n <= 3 ? " open" : "") + "><summary><code>" + h(r.rec.id) + "</code> " +
         badge(r.rec.state) + " <span class=\"decision " + (pass ? "pass\">pass" : "reject\">reject") + "</span>";
    o += " <span class=\"muted\">candidate " + accText(v ? finite(v->candidate.metrics.accuracy) : std::nullopt) +
         " vs champion " + (v && v->champion ? accText(finite(v->champion->metrics.accuracy)) : std::string("none (first model)")) +
         (r.version.empty() ? "" : " &middot; published as " + h(m.model + ":" + r.version)) + "</span></summary>";
    if (!v) {
      o += "<p class=\"note\">" + (r.verdictProblem.empty() ? std::string("No verdict.json for this run.")
                                                           : "The verdict does not read: " + h(r.verdictProblem)) +
           "</p></details>";
      continue;
    }
    o += "<table><thead><tr><th>check</th><th>value</th><th>threshold</th><th>result</th><th>detail</th></tr></thead><tbody>";
    for (const CheckResult& ck : v->checks) {
      o += std::string("<tr class=\"") + (ck.passed ? "ok" : "bad") + "\"><td><code>" + h(ck.name) + "</code></td><td class=\"val\">" +
           valueHtml(ck.value) + "</td><td class=\"val\">" + valueHtml(ck.threshold) + "</td><td>" +
           (ck.passed ? "<span class=\"pass\">&#10003; pass</span>" : "<span class=\"fail\">&#10007; fail</span>") + "</td><td>" +
           h(ck.detail) + "</td></tr>";
    }
    o += "</tbody></table></details>";
  }
  if (n == 0) {
    o += emptyState(m.runs.empty() ? "No runs yet" : "No run has been judged yet",
                    "runs whose training succeeds are judged by the validation gate ([gate] in the scheduler's configuration)");
  }
  return o + "</section>";
}

std::string runsSection(const Model& m, const std::string& championRun) {
  std::string o = "<section id=\"runs\" class=\"card\"><h2>Runs</h2>";
  if (!m.runs.empty()) {
    o += "<p class=\"sub\">The newest " + std::to_string(std::min(m.runs.size(), m.opt.maxRuns)) + " of " +
         std::to_string(m.runs.size()) + " runs; hover a trigger for its reason.</p>";
  }
  if (m.runs.empty()) {
    o += emptyState("No runs yet", "a trigger starts a run when enough data arrived, on demand or on schedule");
    return o + "</section>";
  }
  o += "<table><thead><tr><th>run</th><th>state</th><th>trigger</th><th>created (UTC)</th><th>duration</th><th>attempts</th>"
       "<th class=\"num\">test accuracy</th><th>version</th><th>message</th></tr></thead><tbody>";
  size_t n = 0;
  for (auto it = m.runs.rbegin(); it != m.runs.rend() && n < m.opt.maxRuns; ++it, ++n) {
    const RunInfo& r = *it;
    const double end = r.rec.finishedAt ? *r.rec.finishedAt : r.rec.updatedAt;
    std::string msg = r.rec.message;
    o += "<tr><td><code>" + h(r.rec.id) + "</code>" + (r.rec.id == championRun ? " <span class=\"star\" title=\"champion\">&#9733;</span>" : "") +
         "</td><td>" + badge(r.rec.state) + "</td><td title=\"" + h(r.rec.reason) + "\">" + h(r.rec.trigger) + "</td><td class=\"nowrap\">" +
         h(isoUtc(r.rec.createdAt)) + "</td><td class=\"nowrap\">" + h(duration(end - r.rec.createdAt)) + "</td><td>" +
         std::to_string(r.rec.attempt) + "/" + std::to_string(r.rec.maxAttempts) + "</td><td class=\"num\">" + accText(r.accuracy) +
         "</td><td>" + (r.version.empty() ? "<span class=\"muted\">-</span>" : "<code>" + h(r.version) + "</code>") + "</td><td class=\"detail\" title=\"" +
         h(msg) + "\">" + h(msg.size() > 160 ? msg.substr(0, 157) + "..." : msg) + "</td></tr>";
  }
  return o + "</tbody></table></section>";
}

std::string quarantineSection(const Model& m) {
  std::string o = "<section id=\"quarantine\" class=\"card\"><h2>Quarantine</h2><p class=\"sub\">Files refused at ingest, newest first" +
                  (m.quarantine.empty() ? std::string() : " (" + std::to_string(m.quarantine.size()) + " of " + std::to_string(m.quarantinedCount) + ")") +
                  ", kept under <code>" + h(m.opt.root + "/quarantine/") + "</code> with their reasons.</p>";
  if (m.quarantine.empty()) {
    o += emptyState("Nothing quarantined", "every file that arrived passed validation");
    return o + "</section>";
  }
  o += "<table><thead><tr><th>time (UTC)</th><th>file</th><th>rule</th><th>reason</th></tr></thead><tbody>";
  for (const auto& q : m.quarantine) {
    o += "<tr><td class=\"nowrap\">" + h(isoUtc(q.at)) + "</td><td><code title=\"" + h(q.file) + "\">" + h(q.source) + "</code></td><td>" +
         "<span class=\"rule\">" + h(q.rule) + "</span></td><td class=\"detail\">" + h(q.reason) + "</td></tr>";
  }
  return o + "</tbody></table></section>";
}

}  // namespace perennial::sched::report
