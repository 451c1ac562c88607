#include "scheduler/report/report_sections.h"

#include <string>

#include "scheduler/report/report_palette.h"
#include "scheduler/report/report_text.h"

namespace perennial::sched::report {

using nlohmann::json;

std::string summarySection(const Model& m, const Champion& ch) {
  std::string o = "<section id=\"summary\" class=\"cards\">";
  // Champion.
  o += "<div class=\"stat champion\"><div class=\"label\">Champion</div>";
  if (ch.label.empty()) {
    o += "<div class=\"value\">none yet</div><div class=\"detail\">no run has been promoted</div>";
  } else {
    o += "<div class=\"value\">" + h(ch.label) + "</div><div class=\"detail\">run <code>" + h(ch.runId.empty() ? "-" : ch.runId) +
         "</code> &middot; accuracy <strong>" + accText(ch.accuracy) + "</strong></div>";
  }
  o += "</div>";
  // Data.
  o += "<div class=\"stat\"><div class=\"label\">Shards</div><div class=\"value\">" + std::to_string(m.shards) +
       "</div><div class=\"detail\">" + std::to_string(m.rows) + " rows ingested</div></div>";
  o += "<div class=\"stat\"><div class=\"label\">Quarantined</div><div class=\"value" +
       std::string(m.quarantinedCount ? " warn" : "") + "\">" + std::to_string(m.quarantinedCount) +
       "</div><div class=\"detail\">files refused at ingest</div></div>";
  // Runs by state.
  int64_t total = 0;
  std::string chips;
  for (const auto& [s, n] : m.byState) {
    total += n;
    const std::optional<RunState> st = parseRunState(s);
    chips += "<span class=\"chip\" style=\"--c:" + std::string(st ? stateColour(*st) : kWaiting) + "\">" + std::to_string(n) + " " + h(s) + "</span>";
  }
  o += "<div class=\"stat wide\"><div class=\"label\">Runs</div><div class=\"value\">" + std::to_string(total) +
       "</div><div class=\"detail\">" + (chips.empty() ? "no runs yet" : chips) + "</div></div>";
  o += "</section>";
  // The triggers' latest decisions.
  o += "<section id=\"triggers\" class=\"card\"><h2>Triggers</h2><p class=\"sub\">The latest decision of each "
       "trigger the configuration turns on.</p>";
  if (m.triggers.empty()) {
    o += emptyState("No trigger has been evaluated yet", "the scheduler evaluates them on every tick");
  } else {
    o += "<table><thead><tr><th>trigger</th><th>fires</th><th>evaluated (UTC)</th><th>last fired (UTC)</th><th>why</th></tr></thead><tbody>";
    for (const auto& t : m.triggers) {
      const json& d = t.detailJson;
      std::string why = text(d, "reason");
      if (d.is_object() && d.contains("held")) why += " [held: " + text(d, "held") + "]";
      o += "<tr><td><code>" + h(t.name) + "</code></td><td>" +
           (t.fired ? "<span class=\"yes\">yes</span>" : "<span class=\"muted\">no</span>") + "</td><td>" +
           h(isoUtc(t.evaluatedAt)) + "</td><td>" + (t.lastFiredAt ? h(isoUtc(*t.lastFiredAt)) : "<span class=\"muted\">-</span>") +
           "</td><td>" + h(why) + "</td></tr>";
    }
    o += "</tbody></table>";
  }
  o += "</section>";
  return o;
}

}  // namespace perennial::sched::report
