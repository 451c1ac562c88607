#include "scheduler/report/report_sections.h"

#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "scheduler/report/report_palette.h"
#include "scheduler/report/report_text.h"
#include "scheduler/report/svg_chart.h"

namespace perennial::sched::report {
namespace {

// A run's curves as drawn: long curves averaged down to 300 points.
struct Curves {
  std::vector<Point> loss, accuracy;
};

std::vector<Point> chartPoints(const std::vector<CurvePoint>& curve) {
  std::vector<Point> out;
  out.reserve(curve.size());
  for (const auto& p : curve) out.push_back({p.step, p.value});
  return downsample(out, 300);
}

// Accuracy domain shared by both quality charts.
Ticks accuracyTicks(const Model& m) {
  double lo = 1, hi = 0;
  auto see = [&](std::optional<double> v) {
    if (!v) return;
    lo = std::min(lo, *v);
    hi = std::max(hi, *v);
  };
  for (const auto& v : m.versions) see(v.accuracy);
  for (const auto& r : m.runs) see(r.accuracy);
  if (hi < lo) return numberTicks(0, 1, 5, true);
  lo = std::max(0.0, lo - 0.03);
  hi = std::min(1.0, hi + 0.03);
  return numberTicks(lo, hi, 5, true);
}

std::string versionsChart(const Model& m, const Ticks& yt) {
  std::string o = "<figure><figcaption>Registry versions <span>holdout accuracy measured by the gate, in publication order";
  if (!m.model.empty()) o += " &middot; model <code>" + h(m.model) + "</code>";
  o += "</span></figcaption>";
  std::vector<const VersionRow*> rows;
  std::set<std::string> holdouts;
  for (const auto& v : m.versions) {
    if (!v.accuracy) continue;
    rows.push_back(&v);
    holdouts.insert(v.holdoutId);
  }
  if (holdouts.size() > 1) {
    o.insert(o.rfind("</span></figcaption>"),
             " &middot; <b>measured on " + std::to_string(holdouts.size()) +
                 " different holdouts</b>: points are joined only where the holdout is the same "
                 "(<code>perennial registry list --holdout DIR</code> measures every version on one)");
  }
  if (rows.empty()) {
    o += emptyState("No registry versions yet", m.registryError.empty()
                                                     ? "a run that passes the validation gate is published to " + m.registryDir
                                                     : "registry: " + m.registryError);
    return o + "</figure>";
  }
  Frame f;
  f.x0 = 0.5;
  f.x1 = static_cast<double>(rows.size()) + 0.5;
  f.y0 = yt.lo;
  f.y1 = yt.hi;
  Ticks xt;
  const size_t every = std::max<size_t>(1, (rows.size() + 11) / 12);
  for (size_t i = 0; i < rows.size(); i += every) {
    xt.at.push_back(static_cast<double>(i + 1));
    xt.labels.push_back(rows[i]->version);
  }
  o += svgOpen(f, "holdout accuracy of each registry version");
  o += axes(f, xt, yt, "version", "holdout accuracy");
  std::vector<Point> pts;
  for (size_t i = 0; i < rows.size(); ++i) pts.push_back({static_cast<double>(i + 1), *rows[i]->accuracy});
  // Accuracies measured on different holdouts are not comparable: the line joins only
  // neighbours measured on the same one (the gate adds the newest shards to the holdout when
  // gate.newest_shards is set, so it changes from run to run).
  for (size_t begin = 0; begin < rows.size();) {
    size_t end = begin + 1;
    while (end < rows.size() && rows[end]->holdoutId == rows[begin]->holdoutId) ++end;
    if (end - begin > 1) o += polyline(f, std::vector<Point>(pts.begin() + begin, pts.begin() + end), kVersionLine, 2, "");
    begin = end;
  }
  Labels labels;
  for (const auto& p : pts) labels.mark(f.px(p.x), f.py(p.y), 5);
  std::string marks, texts;
  for (size_t i = 0; i < rows.size(); ++i) {
    const VersionRow& v = *rows[i];
    const bool champ = m.championVersion && *m.championVersion == v.version;
    const double x = f.px(pts[i].x), y = f.py(pts[i].y);
    std::string tip = h(m.model + ":" + v.version) + " &#8212; holdout accuracy " + fixed(*v.accuracy, 4) +
                      "&#10;holdout " + (v.holdoutId.empty() ? std::string("not recorded")
                                                             : h(v.holdoutId.substr(0, 12)) + " (" +
                                                                   std::to_string(v.holdoutRows) + " rows)") +
                      "&#10;run " +
                      h(v.runId) + (v.at ? "&#10;published " + h(isoUtc(*v.at)) + " UTC" : "") +
                      (champ ? "&#10;champion" : "");
    if (champ) {
      marks += marker(Shape::kStar, x, y, 9, kChampion, tip);
    } else {
      marks += marker(Shape::kCircle, x, y, 4.5, kVersionLine, tip);
    }
    if (champ || rows.size() <= 12) {
      texts += labels.place(x, y, champ ? 10 : 5, fixed(*v.accuracy, 3) + (champ ? " champion" : ""),
                            champ ? "pt champ" : "pt", f.plotTop(), f.plotBottom());
    }
  }
  o += marks + texts + "</svg><div class=\"legend\">" + legendLine(kVersionLine, "version") + legendMarker(Shape::kStar, kChampion, "champion") + "</div>";
  return o + "</figure>";
}

std::string runsChart(const Model& m, const Ticks& yt) {
  std::string o = "<figure><figcaption>Runs <span>final test accuracy reported by the trainer, by the time each run ended</span></figcaption>";
  std::vector<const RunInfo*> rows;
  for (const auto& r : m.runs) {
    if (isTerminalState(r.rec.state)) rows.push_back(&r);
  }
  if (rows.empty()) {
    o += emptyState(m.runs.empty() ? "No runs yet" : "No run has ended yet",
                    "a trigger starts a run when enough data arrived, on demand or on schedule");
    return o + "</figure>";
  }
  Frame f;
  double t0 = rows.front()->endAt(), t1 = t0;
  for (const auto* r : rows) {
    t0 = std::min(t0, r->endAt());
    t1 = std::max(t1, r->endAt());
  }
  const double pad = std::max(30.0, (t1 - t0) * 0.06);
  f.x0 = t0 - pad;
  f.x1 = t1 + pad;
  f.y0 = yt.lo;
  f.y1 = yt.hi;
  Ticks xt = timeTicks(f.x0, f.x1, 6);
  o += svgOpen(f, "final test accuracy of each run over time");
  o += axes(f, xt, yt, "run ended (UTC" + (t1 - t0 < 86400 ? ", " + utc(t0, "%Y-%m-%d") : std::string()) + ")", "test accuracy");
  const Champion ch = championOf(m);
  Labels labels;
  std::string texts;
  std::set<RunState> seen;
  for (const auto* r : rows) {
    const RunState s = r->rec.state;
    seen.insert(s);
    const double x = f.px(r->endAt());
    const bool noAcc = !r->accuracy;
    const double y = noAcc ? f.plotBottom() - 7 : f.py(*r->accuracy);
    std::string tip = h(r->rec.id) + " &#8212; " + h(runStateName(s)) + (noAcc ? "" : ", test accuracy " + fixed(*r->accuracy, 4)) +
                      "&#10;ended " + h(isoUtc(r->endAt())) + " UTC&#10;trigger " + h(r->rec.trigger) +
                      (r->version.empty() ? "" : "&#10;published as " + h(r->version)) +
                      (r->rec.message.empty() ? "" : "&#10;" + h(r->rec.message.substr(0, 300)));
    if (r->rec.id == ch.runId && !noAcc) o += marker(Shape::kRing, x, y, 9, kChampion);
    o += marker(stateShape(s), x, y, 5.5, stateColour(s), tip);
    labels.mark(x, y, r->rec.id == ch.runId ? 9 : 6);
  }
  if (rows.size() <= 16) {
    for (const auto* r : rows) {
      const double y = r->accuracy ? f.py(*r->accuracy) : f.plotBottom() - 7;
      texts += labels.place(f.px(r->endAt()), y, r->rec.id == ch.runId ? 9 : 6, r->rec.id, "pt", f.plotTop(), f.plotBottom());
    }
  }
  o += texts + "</svg><div class=\"legend\">";
  for (RunState s : {RunState::kPromoted, RunState::kSucceeded, RunState::kRejected, RunState::kFailed, RunState::kCancelled}) {
    if (seen.count(s)) o += legendMarker(stateShape(s), stateColour(s), std::string(runStateName(s)) + (stateShape(s) == Shape::kCross ? " (no accuracy)" : ""));
  }
  if (!ch.runId.empty()) o += legendMarker(Shape::kRing, kChampion, "champion");
  return o + "</div></figure>";
}

}  // namespace

std::string qualitySection(const Model& m) {
  const Ticks yt = accuracyTicks(m);
  return "<section id=\"quality\" class=\"card\"><h2>Model quality</h2><p class=\"sub\">Hover a point for its details.</p>"
         "<div class=\"grid2\">" + versionsChart(m, yt) + runsChart(m, yt) + "</div></section>";
}

std::string curvesSection(const Model& m, const std::string& championRun) {
  std::string o = "<section id=\"curves\" class=\"card\"><h2>Training curves</h2>";
  std::vector<const RunInfo*> shown;
  std::vector<Curves> curves;
  for (const RunCurves& rc : m.curves) {
    shown.push_back(&m.runs[rc.run]);
    curves.push_back({chartPoints(rc.curves.trainLoss), chartPoints(rc.curves.testAccuracy)});
  }
  o += "<p class=\"sub\">From each run's <code>train/metrics.jsonl</code>: the training loss every "
       "<code>train.log_every</code> steps and the validation accuracy after each epoch";
  o += shown.empty() ? "." : ", for the " + std::to_string(shown.size()) + " newest runs that logged any (at most " +
                                 std::to_string(m.opt.curveRuns) + "; long curves averaged down to 300 points).";
  o += "</p>";
  if (shown.empty()) {
    o += emptyState(m.runs.empty() ? "No runs yet" : "No training metrics yet", "curves appear once a run has trained for train.log_every steps");
    return o + "</section>";
  }
  auto chart = [&](bool loss) {
    double x1 = 1, ylo = 1e300, yhi = -1e300;
    size_t points = 0;
    for (const auto& cv : curves) {
      for (const auto& p : loss ? cv.loss : cv.accuracy) {
        x1 = std::max(x1, p.x);
        ylo = std::min(ylo, p.y);
        yhi = std::max(yhi, p.y);
        ++points;
      }
    }
    std::string fig = std::string("<figure><figcaption>") + (loss ? "Training loss <span>mean over ranks and the logging window</span>"
                                                                   : "Validation accuracy <span>on the holdout, after each epoch</span>") +
                      "</figcaption>";
    if (points == 0) return fig + emptyState(loss ? "No training loss logged" : "No epoch has ended yet") + "</figure>";
    Frame f;
    const Ticks xt = numberTicks(0, x1, 6, true);
    Ticks yt = loss ? numberTicks(std::max(0.0, ylo - (yhi - ylo) * 0.05), yhi + (yhi - ylo) * 0.05, 5, true)
                    : numberTicks(std::max(0.0, ylo - 0.03), std::min(1.0, yhi + 0.03), 5, true);
    f.x0 = xt.lo;
    f.x1 = xt.hi;
    f.y0 = yt.lo;
    f.y1 = yt.hi;
    fig += svgOpen(f, loss ? "training loss per run" : "validation accuracy per run");
    fig += axes(f, xt, yt, "step", loss ? "loss" : "validation accuracy");
    for (size_t i = 0; i < shown.size(); ++i) {
      const auto& pts = loss ? curves[i].loss : curves[i].accuracy;
      if (pts.empty()) continue;
      const std::string colour = runColour(shown[i]->index, m.runs.size());
      const bool champ = shown[i]->rec.id == championRun;
      const std::string tip = h(shown[i]->rec.id) + " (" + h(runStateName(shown[i]->rec.state)) + ")";
      if (pts.size() > 1) fig += polyline(f, pts, colour, champ ? 3 : 1.8, tip);
      if ((!loss && pts.size() <= 30) || pts.size() == 1) {
        for (const auto& p : pts) {
          fig += marker(Shape::kCircle, f.px(p.x), f.py(p.y), champ ? 4.5 : 3.5, colour,
                        tip + "&#10;step " + format("%.0f", p.x) + ": " + fixed(p.y, 4));
        }
      }
    }
    return fig + "</svg></figure>";
  };
  o += "<div class=\"grid2\">" + chart(true) + chart(false) + "</div><div class=\"legend runs\">";
  for (const auto* r : shown) {
    o += legendLine(runColour(r->index, m.runs.size()), r->rec.id + " \xC2\xB7 " + runStateName(r->rec.state) + (r->rec.id == championRun ? " \xC2\xB7 champion" : ""),
                    false, r->rec.id == championRun ? 4 : 2.5);
  }
  return o + "</div></section>";
}

}  // namespace perennial::sched::report
