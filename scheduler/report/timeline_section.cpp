#include "scheduler/report/report_sections.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "scheduler/report/report_palette.h"
#include "scheduler/report/report_text.h"
#include "scheduler/report/svg_chart.h"

namespace perennial::sched::report {

using nlohmann::json;

// The timeline: one lane per kind of event, runs as bars from creation to their end.
std::string timelineSection(const Model& m) {
  std::string o = "<section id=\"timeline\" class=\"card\"><h2>Timeline</h2><p class=\"sub\">What happened when: "
                  "shard arrivals, quarantines, trigger firings, runs from creation to their outcome, champion changes "
                  "and the drift trigger's PSI. Hover a mark for its details.</p>";
  if (m.events.empty() && m.runs.empty()) {
    o += emptyState("No events yet", m.haveCatalog ? "nothing has arrived and no trigger has fired"
                                                   : "no catalog at " + m.opt.root + "/catalog.db (the scheduler has not run here)");
    return o + "</section>";
  }
  // The time domain.
  double t0 = 1e300, t1 = -1e300;
  auto see = [&](double t) {
    if (!std::isfinite(t) || t <= 0) return;
    t0 = std::min(t0, t);
    t1 = std::max(t1, t);
  };
  for (const auto& e : m.events) see(e.at);
  for (const auto& r : m.runs) {
    see(r.rec.createdAt);
    see(r.endAt());
  }
  for (const auto& e : m.history) {
    if (e.at) see(*e.at);
  }
  for (const auto& t : m.triggers) see(t.evaluatedAt);
  if (t0 > t1) {
    o += emptyState("No events yet");
    return o + "</section>";
  }
  const double pad = std::max(5.0, (t1 - t0) * 0.02);
  // Drift measurements: each new measurement and each firing is an event; plus the latest evaluation.
  std::vector<std::pair<double, double>> psi;
  double psiThreshold = 0;
  bool haveDrift = false;
  for (const auto& e : m.events) {
    if ((e.kind != "trigger" && e.kind != "measurement") || e.subject != "drift") continue;
    const json& d = e.detailJson;
    haveDrift = true;
    if (auto th = number(d.is_object() ? d.value("thresholds", json()) : json(), "psi")) psiThreshold = *th;
    const json values = d.is_object() ? d.value("values", json()) : json();
    if (auto v = number(values.is_object() ? values.value("psi", json()) : json(), "max")) psi.emplace_back(e.at, *v);
  }
  for (const auto& t : m.triggers) {
    if (t.name != "drift") continue;
    haveDrift = true;
    const json& d = t.detailJson;
    if (auto th = number(d.is_object() ? d.value("thresholds", json()) : json(), "psi")) psiThreshold = *th;
    const json values = d.is_object() ? d.value("values", json()) : json();
    if (auto v = number(values.is_object() ? values.value("psi", json()) : json(), "max")) {
      if (psi.empty() || psi.back().first != t.evaluatedAt) psi.emplace_back(t.evaluatedAt, *v);
    }
  }
  std::sort(psi.begin(), psi.end());
  // Lanes.
  std::vector<std::string> triggerNames;
  for (const auto& e : m.events) {
    if (e.kind == "trigger" && std::find(triggerNames.begin(), triggerNames.end(), e.subject) == triggerNames.end()) {
      triggerNames.push_back(e.subject);
    }
  }
  std::sort(triggerNames.begin(), triggerNames.end());
  Frame f;
  f.width = 1140;
  f.left = 150;
  f.right = 70;
  f.top = 8;
  f.x0 = t0 - pad;
  f.x1 = t1 + pad;
  const double lane = 30, runRow = 24, driftH = 74;
  // Run rows: bars placed greedily so that none overlaps another or its label.
  std::vector<const RunInfo*> bars;
  for (const auto& r : m.runs) bars.push_back(&r);
  const size_t maxRows = 5;
  std::vector<double> rowEnd;
  std::vector<size_t> rowOf(bars.size(), 0);
  std::vector<bool> crowded(bars.size(), false);
  const double endOfTime = m.lastTick ? std::max(t1, std::atof(m.lastTick->c_str())) : t1;
  auto barEnd = [&](const RunInfo* r) { return isTerminalState(r->rec.state) ? r->endAt() : endOfTime; };
  // px positions need the frame's width settled first: the plot spans left..width-right.
  const bool runLabels = bars.size() <= 16;
  for (size_t i = 0; i < bars.size(); ++i) {
    const double start = f.px(bars[i]->rec.createdAt), end = f.px(barEnd(bars[i])) + (runLabels ? 64 : 6);
    size_t row = rowEnd.size();
    for (size_t k = 0; k < rowEnd.size(); ++k) {
      if (rowEnd[k] + 6 <= start) {
        row = k;
        break;
      }
    }
    if (row == rowEnd.size()) {
      if (rowEnd.size() < maxRows) {
        rowEnd.push_back(end);
      } else {
        row = static_cast<size_t>(std::min_element(rowEnd.begin(), rowEnd.end()) - rowEnd.begin());
        rowEnd[row] = std::max(rowEnd[row], end);
        crowded[i] = true;
      }
    } else {
      rowEnd[row] = end;
    }
    rowOf[i] = row;
  }
  const size_t runRows = std::max<size_t>(1, rowEnd.size());
  struct Lane {
    std::string label, sub;
    double y, height;
  };
  std::vector<Lane> lanes;
  double y = f.top;
  auto addLane = [&](const std::string& label, const std::string& sub, double height) {
    lanes.push_back({label, sub, y, height});
    y += height;
    return lanes.size() - 1;
  };
  const size_t shardLane = addLane("Shards", "ingested", lane);
  const size_t quarantineLane = addLane("Quarantine", "refused", lane);
  std::map<std::string, size_t> triggerLane;
  for (const auto& name : triggerNames) triggerLane[name] = addLane(name, "trigger", lane);
  const size_t runLane = addLane("Runs", "created \xE2\x86\x92 outcome", runRow * static_cast<double>(runRows) + 8);
  const size_t champLane = addLane("Champion", "promotions, rollbacks", lane);
  const size_t driftLane = haveDrift ? addLane("Drift", "PSI (max)", driftH) : 0;
  f.height = y + 40;
  f.bottom = 40;
  Ticks xt = timeTicks(f.x0, f.x1, 9);
  std::string svg = svgOpen(f, "timeline of the scheduler's events");
  for (size_t i = 0; i < lanes.size(); ++i) {
    const Lane& l = lanes[i];
    if (i % 2 == 0) {
      svg += "<rect class=\"lane\" x=\"" + c(f.plotLeft()) + "\" y=\"" + c(l.y) + "\" width=\"" + c(f.plotRight() - f.plotLeft()) +
             "\" height=\"" + c(l.height) + "\"/>";
    }
    svg += "<text class=\"lanelabel\" x=\"" + c(f.plotLeft() - 10) + "\" y=\"" + c(l.y + std::min(l.height / 2, 15.0) - 1) +
           "\" text-anchor=\"end\">" + h(l.label) + "</text>";
    svg += "<text class=\"lanesub\" x=\"" + c(f.plotLeft() - 10) + "\" y=\"" + c(l.y + std::min(l.height / 2, 15.0) + 10) +
           "\" text-anchor=\"end\">" + h(l.sub) + "</text>";
  }
  svg += "<g class=\"grid\">" + xGridLines(f, xt);
  svg += "</g><g class=\"axis\"><line x1=\"" + c(f.plotLeft()) + "\" x2=\"" + c(f.plotRight()) + "\" y1=\"" + c(f.plotBottom()) +
         "\" y2=\"" + c(f.plotBottom()) + "\"/>";
  svg += xTickMarks(f, xt);
  svg += "</g><text class=\"title\" x=\"" + c((f.plotLeft() + f.plotRight()) / 2) + "\" y=\"" + c(f.height - 6) +
         "\" text-anchor=\"middle\">time (UTC" + (t1 - t0 < 86400 ? ", " + h(utc(t0, "%Y-%m-%d")) : std::string()) + ")</text>";
  auto mid = [&](size_t laneIdx) { return lanes[laneIdx].y + lanes[laneIdx].height / 2; };
  // Runs: bars from creation to the end, the outcome's marker and the run's id.
  for (size_t i = 0; i < bars.size(); ++i) {
    const RunInfo& r = *bars[i];
    const double by = lanes[runLane].y + 4 + runRow * (static_cast<double>(rowOf[i]) + 0.5);
    const double xa = f.px(r.rec.createdAt), xb = f.px(barEnd(&r));
    const std::string colour = stateColour(r.rec.state);
    const bool done = isTerminalState(r.rec.state);
    std::string tip = h(r.rec.id) + " &#8212; " + h(runStateName(r.rec.state)) + "&#10;trigger " + h(r.rec.trigger) + ": " +
                      h(r.rec.reason.substr(0, 300)) + "&#10;created " + h(isoUtc(r.rec.createdAt)) + " UTC" +
                      (done ? "&#10;ended " + h(isoUtc(r.endAt())) + " UTC (" + h(duration(r.endAt() - r.rec.createdAt)) + ")" : "") +
                      (r.rec.message.empty() ? "" : "&#10;" + h(r.rec.message.substr(0, 300)));
    svg += "<line x1=\"" + c(xa) + "\" x2=\"" + c(std::max(xb, xa + 1)) + "\" y1=\"" + c(by) + "\" y2=\"" + c(by) +
           "\" stroke=\"" + colour + "\" stroke-width=\"6\" stroke-linecap=\"round\" opacity=\"0.45\"" +
           (done ? "" : " stroke-dasharray=\"4 3\"") + "><title>" + tip + "</title></line>";
    svg += marker(Shape::kRing, xa, by, 3.5, kMuted, tip);
    svg += marker(done ? stateShape(r.rec.state) : Shape::kRing, xb, by, 5, colour, tip);
    if (runLabels && !crowded[i]) svg += "<text class=\"runid\" x=\"" + c(xb + 9) + "\" y=\"" + c(by + 4) + "\">" + h(r.rec.id) + "</text>";
  }
  // Catalog events. Marks closer than 3 px in a lane become one, with their count beside it.
  struct Mark {
    double x;
    size_t lane;
    Shape shape;
    const char* colour;
    bool hollow;
    std::string tip;
    std::string label;  // beside the mark, where there is room (escaped)
  };
  std::vector<Mark> marks;
  for (const auto& e : m.events) {
    const double x = f.px(e.at);
    const json& d = e.detailJson;
    if (e.kind == "ingest") {
      marks.push_back({x, shardLane, Shape::kCircle, kShard, false,
                       "shard " + h(text(d, "source")) + " ingested " + h(isoUtc(e.at)) + " UTC: " + h(text(d, "rows")) +
                           " rows, seq " + h(text(d, "seq")), ""});
    } else if (e.kind == "quarantine") {
      marks.push_back({x, quarantineLane, Shape::kCross, kQuarantine, false,
                       "quarantined " + h(text(d, "source")) + " (" + h(text(d, "rule")) + ") " + h(isoUtc(e.at)) +
                           " UTC: " + h(text(d, "reason").substr(0, 300)), ""});
    } else if (e.kind == "trigger") {
      const bool held = d.is_object() && d.contains("held");
      const std::string run = text(d, "run");
      marks.push_back({x, triggerLane[e.subject], Shape::kDiamond, kTrigger, held,
                       "trigger " + h(e.subject) + (held ? " fired, held: " + h(text(d, "held")) : " fired") +
                           (run.empty() ? "" : " &#8594; " + h(run)) + " " + h(isoUtc(e.at)) + " UTC: " + h(text(d, "reason")), ""});
    }
  }
  // Champion changes from the registry's history.
  for (const auto& e : m.history) {
    if (!e.at) continue;
    const std::string& action = e.action;
    const std::string& to = e.to;
    marks.push_back({f.px(*e.at), champLane, Shape::kStar, kChampion, action == "rollback",
                     h(action) + " " + h(m.model) + ":" + h(to) + (e.from.empty() ? "" : " (from " + h(e.from) + ")") +
                         " " + h(isoUtc(*e.at)) + " UTC: " + h(e.reason),
                     (action == "rollback" ? "&#8634; " : "") + h(to)});
  }
  std::stable_sort(marks.begin(), marks.end(), [](const Mark& a, const Mark& b) { return a.lane != b.lane ? a.lane < b.lane : a.x < b.x; });
  struct Group {
    size_t from, to;  // marks[from, to)
    double x;
  };
  std::vector<Group> groups;
  for (size_t i = 0; i < marks.size();) {
    size_t j = i + 1;
    while (j < marks.size() && marks[j].lane == marks[i].lane && marks[j].hollow == marks[i].hollow &&
           marks[j].x - marks[j - 1].x < 3) {
      ++j;
    }
    groups.push_back({i, j, (marks[i].x + marks[j - 1].x) / 2});
    i = j;
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const Group& gr = groups[g];
    const Mark& first = marks[gr.from];
    const size_t n = gr.to - gr.from;
    std::string tip;
    for (size_t k = gr.from; k < gr.to && k < gr.from + 8; ++k) tip += (k > gr.from ? "&#10;" : "") + marks[k].tip;
    if (n > 8) tip += "&#10;... and " + std::to_string(n - 8) + " more";
    const double my = mid(first.lane);
    svg += marker(first.shape, gr.x, my, first.shape == Shape::kDiamond ? 5.5 : first.shape == Shape::kStar ? 7 : 4.5, first.colour,
                  tip, first.hollow);
    // Beside it: the newest label and the count, when the next mark in the lane leaves room.
    std::string label = marks[gr.to - 1].label;
    if (n > 1) label += std::string(label.empty() ? "" : " ") + "&#215;" + std::to_string(n);
    const double room = g + 1 < groups.size() && marks[groups[g + 1].from].lane == first.lane ? groups[g + 1].x - gr.x : 1e9;
    if (!label.empty() && room > 16 + 6.5 * static_cast<double>(label.size() > 6 ? label.size() - 5 : label.size())) {
      svg += "<text class=\"" + std::string(first.label.empty() ? "count" : "runid") + "\" x=\"" + c(gr.x + 9) + "\" y=\"" +
             c(first.label.empty() ? my - 3 : my + 4) + "\">" + label + "</text>";
    }
  }
  if (m.history.empty() && !m.metaChampion) {
    svg += "<text class=\"lanesub\" x=\"" + c(f.plotLeft() + 8) + "\" y=\"" + c(mid(champLane) + 4) + "\">no champion yet</text>";
  }
  // Drift: the PSI of each measurement and the threshold.
  if (haveDrift) {
    const Lane& l = lanes[driftLane];
    double top = psiThreshold;
    for (const auto& p : psi) top = std::max(top, p.second);
    top = top > 0 ? top * 1.15 : 1;
    auto dy = [&](double v) { return l.y + l.height - 8 - v / top * (l.height - 16); };
    // A small y axis on the right: 0 and the top of the lane.
    const Ticks yt = numberTicks(0, top, 2, false);
    svg += "<g class=\"axis\"><line x1=\"" + c(f.plotRight()) + "\" x2=\"" + c(f.plotRight()) + "\" y1=\"" + c(dy(top)) +
           "\" y2=\"" + c(dy(0)) + "\"/>";
    for (size_t i = 0; i < yt.at.size(); ++i) {
      if (yt.at[i] > top) continue;
      svg += "<line x1=\"" + c(f.plotRight()) + "\" x2=\"" + c(f.plotRight() + 4) + "\" y1=\"" + c(dy(yt.at[i])) + "\" y2=\"" +
             c(dy(yt.at[i])) + "\"/><text x=\"" + c(f.plotRight() + 7) + "\" y=\"" + c(dy(yt.at[i]) + 3.5) + "\">" + h(yt.labels[i]) +
             "</text>";
    }
    svg += "</g>";
    if (psiThreshold > 0) {
      svg += "<line x1=\"" + c(f.plotLeft()) + "\" x2=\"" + c(f.plotRight()) + "\" y1=\"" + c(dy(psiThreshold)) + "\" y2=\"" +
             c(dy(psiThreshold)) + "\" stroke=\"" + kQuarantine + "\" stroke-width=\"1.2\" stroke-dasharray=\"5 4\"><title>drift threshold (triggers.drift_psi) " +
             h(valueText(json(psiThreshold))) + "</title></line>";
      svg += "<text class=\"threshold\" x=\"" + c(f.plotLeft() + 6) + "\" y=\"" + c(dy(psiThreshold) - 4) + "\">threshold " +
             h(valueText(json(psiThreshold))) + "</text>";
    }
    if (psi.empty()) {
      svg += "<text class=\"lanesub\" x=\"" + c(f.plotLeft() + 8) + "\" y=\"" + c(l.y + l.height / 2 + 4) +
             "\">no PSI measured yet (it needs a champion and triggers.drift_min_rows new rows)</text>";
    } else {
      std::vector<Point> pts;
      for (const auto& [t, v] : psi) pts.push_back({t, v});
      std::string d;
      for (const auto& p : pts) d += c(f.px(p.x)) + "," + c(dy(p.y)) + " ";
      d.pop_back();
      if (pts.size() > 1) svg += "<polyline points=\"" + d + "\" fill=\"none\" stroke=\"" + kDrift + "\" stroke-width=\"2\"/>";
      for (const auto& p : pts) {
        svg += marker(Shape::kCircle, f.px(p.x), dy(p.y), 4, kDrift,
                      "drift PSI " + h(valueText(json(p.y))) + (psiThreshold > 0 ? " (threshold " + h(valueText(json(psiThreshold))) + ")" : "") +
                          "&#10;" + h(isoUtc(p.x)) + " UTC");
      }
    }
  }
  svg += "</svg>";
  o += "<div class=\"scroll\">" + svg + "</div><div class=\"legend\">";
  // The key: what this timeline shows.
  std::set<RunState> ended;
  std::set<std::string> actions;
  bool held = false, inFlight = false;
  for (const auto& r : m.runs) {
    if (isTerminalState(r.rec.state)) {
      ended.insert(r.rec.state);
    } else {
      inFlight = true;
    }
  }
  for (const auto& e : m.history) actions.insert(e.action);
  for (const auto& mk : marks) held = held || (mk.hollow && mk.shape == Shape::kDiamond);
  o += legendMarker(Shape::kCircle, kShard, "shard ingested") + legendMarker(Shape::kCross, kQuarantine, "file quarantined") +
       legendMarker(Shape::kDiamond, kTrigger, "trigger fired") + (held ? legendMarker(Shape::kDiamond, kTrigger, "fired, held", true) : "");
  if (!m.runs.empty()) o += legendMarker(Shape::kRing, kMuted, "run created");
  for (RunState s : {RunState::kPromoted, RunState::kSucceeded, RunState::kRejected, RunState::kFailed, RunState::kCancelled}) {
    if (ended.count(s)) o += legendMarker(stateShape(s), stateColour(s), runStateName(s));
  }
  if (inFlight) o += legendLine(stateColour(RunState::kRunning), "in flight", true);
  if (actions.count("promote")) o += legendMarker(Shape::kStar, kChampion, "promoted to champion");
  if (actions.count("rollback")) o += legendMarker(Shape::kStar, kChampion, "rollback", true);
  if (haveDrift) o += legendLine(kDrift, "drift PSI") + legendLine(kQuarantine, "drift threshold", true, 1.5);
  o += "</div>";
  if (!haveDrift) o += "<p class=\"note\">The drift trigger is off (<code>triggers.drift_psi = 0</code>): no PSI to show.</p>";
  // The newest events as text.
  o += "<details><summary>Latest events</summary><table><thead><tr><th>time (UTC)</th><th>kind</th><th>subject</th><th>detail</th></tr></thead><tbody>";
  size_t n = 0;
  for (auto it = m.events.rbegin(); it != m.events.rend() && n < 60; ++it, ++n) {
    std::string detail = it->detail;
    if (detail.size() > 400) detail = detail.substr(0, 397) + "...";
    o += "<tr><td class=\"nowrap\">" + h(isoUtc(it->at)) + "</td><td>" + h(it->kind) + "</td><td><code>" +
         h(it->subject.size() > 24 ? it->subject.substr(0, 16) + "\xE2\x80\xA6" : it->subject) + "</code></td><td class=\"detail\">" +
         h(detail) + "</td></tr>";
  }
  o += "</tbody></table></details>";
  return o + "</section>";
}

}  // namespace perennial::sched::report
