#include "scheduler/report.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/read_file.h"
#include "common/fs_util.h"
#include "common/text.h"
#include "perennial/build_config.h"
#include "scheduler/catalog.h"
#include "scheduler/registry.h"
#include "scheduler/run_paths.h"

namespace perennial::sched {

std::string htmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  for (char ch : text) {
    switch (ch) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      case '\t': case '\n': case '\r': out += ch; break;
      default:
        if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
          out += "\xEF\xBF\xBD";
        } else {
          out += ch;
        }
    }
  }
  return out;
}

namespace {

using nlohmann::json;
namespace stdfs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Formatting.

std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0) return "";
  if (static_cast<size_t>(n) < sizeof buf) return buf;
  std::string big(static_cast<size_t>(n) + 1, '\0');
  va_start(ap, fmt);
  std::vsnprintf(big.data(), big.size(), fmt, ap);
  va_end(ap);
  big.resize(static_cast<size_t>(n));
  return big;
}

std::string h(std::string_view s) { return htmlEscape(s); }

// An SVG coordinate.
std::string c(double v) { return format("%.1f", v); }

std::string utc(double t, const char* fmt) {
  if (!std::isfinite(t)) return "-";
  const std::time_t tt = static_cast<std::time_t>(std::floor(t));
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, fmt, &tm);
  return buf;
}
std::string isoUtc(double t) { return utc(t, "%Y-%m-%d %H:%M:%S"); }

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "-";
  if (s < 60) return format("%.1f s", s);
  const auto total = static_cast<long long>(std::llround(s));
  if (s < 3600) return format("%lld min %02lld s", total / 60, total % 60);
  if (s < 86400) return format("%lld h %02lld min", total / 3600, total % 3600 / 60);
  return format("%lld d %lld h", total / 86400, total % 86400 / 3600);
}

std::string fixed(double v, int decimals) { return format("%.*f", decimals, v); }

json parseJson(const std::string& text) {
  if (text.empty()) return json();
  json j = json::parse(text, nullptr, false);
  return j.is_discarded() ? json() : j;
}


std::optional<double> number(const json& j, const char* key) {
  if (!j.is_object()) return std::nullopt;
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  const double v = it->get<double>();
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::string text(const json& j, const char* key) {
  if (!j.is_object()) return "";
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  return it->is_string() ? it->get<std::string>() : dumpJson(*it);
}

bool isHash(const std::string& s) {
  return s.size() >= 40 && std::all_of(s.begin(), s.end(), [](char ch) {
           return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
         });
}

// A hash shortened to 12 characters, the full value in its tooltip.
std::string hashHtml(const std::string& s, size_t keep = 12) {
  if (s.empty()) return "<span class=\"muted\">-</span>";
  if (s.size() <= keep + 2) return "<code>" + h(s) + "</code>";
  return "<code title=\"" + h(s) + "\">" + h(s.substr(0, keep)) + "&hellip;</code>";
}

// A value from a verdict: numbers to 4 decimals, hashes shortened, objects as key=value lists.
std::string valueText(const json& v, int depth = 0) {
  if (v.is_null()) return "-";
  if (v.is_boolean()) return v.get<bool>() ? "true" : "false";
  if (v.is_number_integer() || v.is_number_unsigned()) return dumpJson(v);
  if (v.is_number()) {
    const double d = v.get<double>();
    if (d == std::floor(d) && std::fabs(d) < 1e12) return format("%.0f", d);
    if (std::fabs(d) >= 1e-3 || d == 0) return fixed(d, 4);
    return format("%.3g", d);
  }
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    return isHash(s) ? s.substr(0, 12) + "\xE2\x80\xA6" : s;
  }
  std::string out;
  if (v.is_array()) {
    for (const auto& e : v) out += (out.empty() ? "" : ", ") + valueText(e, depth + 1);
    return "[" + out + "]";
  }
  for (auto it = v.begin(); it != v.end(); ++it) {
    out += (out.empty() ? "" : ", ") + it.key() + "=" + valueText(it.value(), depth + 1);
  }
  return depth ? "{" + out + "}" : out;
}

std::string valueHtml(const json& v) {
  std::string t = valueText(v);
  const std::string full = v.is_string() ? v.get<std::string>() : dumpJson(v);
  if (t.size() > 240) t = t.substr(0, 237) + "...";
  return "<span title=\"" + h(full.size() > 2000 ? full.substr(0, 2000) : full) + "\">" + h(t) + "</span>";
}

// ---------------------------------------------------------------------------------------------
// Colours and markers, one meaning each across the page.

constexpr double kPi = 3.14159265358979323846;
const char* kMuted = "#6b7785";
const char* kChampion = "#c99a06";
const char* kShard = "#3f7fbf";
const char* kQuarantine = "#c62828";
const char* kTrigger = "#7b4fb8";
const char* kDrift = "#0f8b8d";
const char* kSeries[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#b6992d",
                         "#b07aa1", "#ff9da7", "#9c755f", "#79706e", "#1f77b4", "#17becf"};
constexpr size_t kNumSeries = sizeof(kSeries) / sizeof(kSeries[0]);

const char* stateColour(const std::string& s) {
  if (s == state::kPromoted) return "#2e7d32";
  if (s == state::kSucceeded) return "#3f7fbf";
  if (s == state::kRejected) return "#e8710a";
  if (s == state::kFailed) return "#c62828";
  if (s == state::kCancelled) return "#8a939c";
  if (s == state::kValidating) return "#7b4fb8";
  if (s == state::kRunning || s == state::kSubmitted) return "#1a73e8";
  return "#9aa5b1";  // pending, preempted
}

enum class Shape { kCircle, kRing, kTriangle, kSquare, kDiamond, kCross, kStar };

Shape stateShape(const std::string& s) {
  if (s == state::kRejected) return Shape::kTriangle;
  if (s == state::kFailed || s == state::kCancelled) return Shape::kCross;
  if (s == state::kPending || s == state::kSubmitted || s == state::kRunning || s == state::kPreempted) {
    return Shape::kRing;
  }
  return Shape::kCircle;
}

// One marker centred on (X, Y) with radius R; TITLE (already escaped) becomes its tooltip.
std::string marker(Shape shape, double x, double y, double r, const std::string& colour, const std::string& title = "",
                   bool hollow = false) {
  std::string fill = hollow ? "#fff" : colour;
  std::string el;
  const std::string common = " fill=\"" + fill + "\" stroke=\"" + colour + "\" stroke-width=\"1.6\"";
  switch (shape) {
    case Shape::kCircle:
      el = "<circle cx=\"" + c(x) + "\" cy=\"" + c(y) + "\" r=\"" + c(r) + "\"" + common;
      break;
    case Shape::kRing:
      el = "<circle cx=\"" + c(x) + "\" cy=\"" + c(y) + "\" r=\"" + c(r) + "\" fill=\"#fff\" stroke=\"" + colour +
           "\" stroke-width=\"2\"";
      break;
    case Shape::kSquare:
      el = "<rect x=\"" + c(x - r) + "\" y=\"" + c(y - r) + "\" width=\"" + c(2 * r) + "\" height=\"" + c(2 * r) +
           "\"" + common;
      break;
    case Shape::kTriangle:
      el = "<path d=\"M" + c(x) + " " + c(y - r * 1.15) + "L" + c(x + r * 1.1) + " " + c(y + r * 0.8) + "L" +
           c(x - r * 1.1) + " " + c(y + r * 0.8) + "Z\"" + common;
      break;
    case Shape::kDiamond:
      el = "<path d=\"M" + c(x) + " " + c(y - r * 1.2) + "L" + c(x + r) + " " + c(y) + "L" + c(x) + " " +
           c(y + r * 1.2) + "L" + c(x - r) + " " + c(y) + "Z\"" + common;
      break;
    case Shape::kCross: {
      const double d = r * 0.85;
      el = "<path d=\"M" + c(x - d) + " " + c(y - d) + "L" + c(x + d) + " " + c(y + d) + "M" + c(x + d) + " " +
           c(y - d) + "L" + c(x - d) + " " + c(y + d) + "\" fill=\"none\" stroke=\"" + colour +
           "\" stroke-width=\"2.4\" stroke-linecap=\"round\"";
      break;
    }
    case Shape::kStar: {
      std::string d;
      for (int k = 0; k < 10; ++k) {
        const double a = -kPi / 2 + k * kPi / 5;
        const double rr = k % 2 ? r * 0.45 : r * 1.15;
        d += (k ? "L" : "M") + c(x + rr * std::cos(a)) + " " + c(y + rr * std::sin(a));
      }
      el = "<path d=\"" + d + "Z\"" + common;
      break;
    }
  }
  if (title.empty()) return el + "/>";
  return el + "><title>" + title + "</title></" + (shape == Shape::kCircle || shape == Shape::kRing ? "circle" : shape == Shape::kSquare ? "rect" : "path") + ">";
}

// A legend entry: a marker or a line sample, then its label (escaped here).
std::string legendMarker(Shape shape, const std::string& colour, const std::string& label, bool hollow = false) {
  return "<span class=\"key\"><svg width=\"16\" height=\"16\" viewBox=\"0 0 16 16\" aria-hidden=\"true\">" +
         marker(shape, 8, 8, 5, colour, "", hollow) + "</svg>" + h(label) + "</span>";
}
std::string legendLine(const std::string& colour, const std::string& label, bool dashed = false, double width = 2.5) {
  return "<span class=\"key\"><svg width=\"22\" height=\"16\" viewBox=\"0 0 22 16\" aria-hidden=\"true\"><line x1=\"1\" "
         "y1=\"8\" x2=\"21\" y2=\"8\" stroke=\"" + colour + "\" stroke-width=\"" + c(width) + "\"" +
         (dashed ? " stroke-dasharray=\"4 3\"" : "") + "/></svg>" + h(label) + "</span>";
}

// ---------------------------------------------------------------------------------------------
// Axes.

struct Ticks {
  double lo = 0, hi = 1, step = 1;
  std::vector<double> at;
  std::vector<std::string> labels;
};

// Round numbers from LO to HI, about TARGET of them; the domain is widened to whole steps when
// EXPAND is set.
Ticks numberTicks(double lo, double hi, int target, bool expand) {
  Ticks t;
  if (!(hi > lo)) {
    const double pad = lo == 0 ? 1 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10, std::floor(std::log10(raw)));
  const double f = raw / mag;
  t.step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
  if (expand) {
    lo = std::floor(lo / t.step + 1e-9) * t.step;
    hi = std::ceil(hi / t.step - 1e-9) * t.step;
  }
  t.lo = lo;
  t.hi = hi;
  const int decimals = std::max(0, static_cast<int>(-std::floor(std::log10(t.step) + 1e-9)));
  for (double v = std::ceil(lo / t.step - 1e-9) * t.step; v <= hi + t.step * 1e-6; v += t.step) {
    const double x = std::fabs(v) < t.step * 1e-6 ? 0.0 : v;
    t.at.push_back(x);
    t.labels.push_back(fixed(x, decimals));
  }
  return t;
}

// Instants from LO to HI at a round step of seconds, minutes, hours or days (UTC).
Ticks timeTicks(double lo, double hi, int target) {
  static const double kSteps[] = {1,    2,     5,     10,    15,    30,     60,     120,    300,    600,
                                  900,  1800,  3600,  7200,  10800, 21600,  43200,  86400,  172800, 604800,
                                  1209600, 2592000, 7776000, 31536000};
  Ticks t;
  t.lo = lo;
  t.hi = hi;
  const double span = hi - lo;
  t.step = 0;
  for (double s : kSteps) {
    if (span / s <= target) {
      t.step = s;
      break;
    }
  }
  if (t.step == 0) t.step = std::ceil(span / target / 31536000) * 31536000;
  const char* fmt = t.step < 60 ? "%H:%M:%S" : t.step < 86400 ? (span > 86400 ? "%m-%d %H:%M" : "%H:%M")
                                                               : (span > 400 * 86400 ? "%Y-%m-%d" : "%m-%d");
  for (double v = std::ceil(lo / t.step) * t.step; v <= hi; v += t.step) {
    t.at.push_back(v);
    t.labels.push_back(utc(v, fmt));
  }
  return t;
}

// A plotting frame: the SVG's size, the plot area's margins and the data domain.
struct Frame {
  double width = 560, height = 300;
  double left = 56, right = 16, top = 16, bottom = 46;
  double x0 = 0, x1 = 1, y0 = 0, y1 = 1;
  double px(double x) const { return x1 == x0 ? (left + width - right) / 2 : left + (x - x0) / (x1 - x0) * (width - left - right); }
  double py(double y) const { return y1 == y0 ? (top + height - bottom) / 2 : height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom); }
  double plotLeft() const { return left; }
  double plotRight() const { return width - right; }
  double plotTop() const { return top; }
  double plotBottom() const { return height - bottom; }
};

std::string svgOpen(const Frame& f, const std::string& label) {
  return "<svg class=\"chart\" viewBox=\"0 0 " + c(f.width) + " " + c(f.height) + "\" width=\"" + c(f.width) +
         "\" height=\"" + c(f.height) + "\" role=\"img\" aria-label=\"" + h(label) + "\">";
}

// Grid lines, tick labels and axis titles of a frame.
std::string axes(const Frame& f, const Ticks& xt, const Ticks& yt, const std::string& xTitle, const std::string& yTitle) {
  std::string o = "<g class=\"grid\">";
  for (double y : yt.at) o += "<line x1=\"" + c(f.plotLeft()) + "\" x2=\"" + c(f.plotRight()) + "\" y1=\"" + c(f.py(y)) + "\" y2=\"" + c(f.py(y)) + "\"/>";
  for (double x : xt.at) o += "<line y1=\"" + c(f.plotTop()) + "\" y2=\"" + c(f.plotBottom()) + "\" x1=\"" + c(f.px(x)) + "\" x2=\"" + c(f.px(x)) + "\"/>";
  o += "</g><g class=\"axis\">";
  o += "<line x1=\"" + c(f.plotLeft()) + "\" x2=\"" + c(f.plotRight()) + "\" y1=\"" + c(f.plotBottom()) + "\" y2=\"" + c(f.plotBottom()) + "\"/>";
  o += "<line x1=\"" + c(f.plotLeft()) + "\" x2=\"" + c(f.plotLeft()) + "\" y1=\"" + c(f.plotTop()) + "\" y2=\"" + c(f.plotBottom()) + "\"/>";
  for (size_t i = 0; i < yt.at.size(); ++i) {
    const double y = f.py(yt.at[i]);
    o += "<line x1=\"" + c(f.plotLeft() - 4) + "\" x2=\"" + c(f.plotLeft()) + "\" y1=\"" + c(y) + "\" y2=\"" + c(y) + "\"/>";
    o += "<text x=\"" + c(f.plotLeft() - 7) + "\" y=\"" + c(y + 3.5) + "\" text-anchor=\"end\">" + h(yt.labels[i]) + "</text>";
  }
  for (size_t i = 0; i < xt.at.size(); ++i) {
    const double x = f.px(xt.at[i]);
    o += "<line y1=\"" + c(f.plotBottom()) + "\" y2=\"" + c(f.plotBottom() + 4) + "\" x1=\"" + c(x) + "\" x2=\"" + c(x) + "\"/>";
    o += "<text x=\"" + c(x) + "\" y=\"" + c(f.plotBottom() + 16) + "\" text-anchor=\"middle\">" + h(xt.labels[i]) + "</text>";
  }
  o += "</g>";
  if (!xTitle.empty()) {
    o += "<text class=\"title\" x=\"" + c((f.plotLeft() + f.plotRight()) / 2) + "\" y=\"" + c(f.height - 8) +
         "\" text-anchor=\"middle\">" + h(xTitle) + "</text>";
  }
  if (!yTitle.empty()) {
    const double cy = (f.plotTop() + f.plotBottom()) / 2;
    o += "<text class=\"title\" transform=\"translate(14 " + c(cy) + ") rotate(-90)\" text-anchor=\"middle\">" + h(yTitle) + "</text>";
  }
  return o;
}

struct Point {
  double x, y;
};

// At most MAX_POINTS points: consecutive points averaged in equal buckets (the first and last
// points kept as they are).
std::vector<Point> downsample(const std::vector<Point>& p, size_t maxPoints) {
  if (p.size() <= maxPoints || maxPoints < 3) return p;
  std::vector<Point> out{p.front()};
  const size_t inner = maxPoints - 2;
  const double per = static_cast<double>(p.size() - 2) / static_cast<double>(inner);
  for (size_t b = 0; b < inner; ++b) {
    const size_t from = 1 + static_cast<size_t>(std::floor(static_cast<double>(b) * per));
    const size_t to = std::min(p.size() - 1, 1 + static_cast<size_t>(std::floor(static_cast<double>(b + 1) * per)));
    if (to <= from) continue;
    double sx = 0, sy = 0;
    for (size_t i = from; i < to; ++i) {
      sx += p[i].x;
      sy += p[i].y;
    }
    const double n = static_cast<double>(to - from);
    out.push_back({sx / n, sy / n});
  }
  out.push_back(p.back());
  return out;
}

std::string polyline(const Frame& f, const std::vector<Point>& pts, const std::string& colour, double width,
                     const std::string& title, const std::string& extra = "") {
  std::string d;
  for (const auto& p : pts) d += c(f.px(p.x)) + "," + c(f.py(p.y)) + " ";
  if (!d.empty()) d.pop_back();
  std::string o = "<polyline points=\"" + d + "\" fill=\"none\" stroke=\"" + colour + "\" stroke-width=\"" + c(width) +
                  "\" stroke-linejoin=\"round\" stroke-linecap=\"round\"" + extra;
  if (title.empty()) return o + "/>";
  return o + "><title>" + title + "</title></polyline>";
}

// Point labels that neither overlap each other nor the marks they were placed around: each
// label goes above its mark, else below, else is left out (the mark's tooltip still has it).
class Labels {
 public:
  void mark(double x, double y, double r) { boxes_.push_back({x - r, y - r, x + r, y + r}); }
  std::string place(double x, double y, double r, const std::string& label, const std::string& cls, double top, double bottom) {
    const double halfW = (6.8 * static_cast<double>(label.size()) + 4) / 2;
    for (double baseline : {y - r - 5, y + r + 13}) {
      const Box b{x - halfW, baseline - 10, x + halfW, baseline + 2};
      if (b.y0 < top || b.y1 > bottom) continue;
      if (std::any_of(boxes_.begin(), boxes_.end(), [&](const Box& o) { return overlaps(b, o); })) continue;
      boxes_.push_back(b);
      return "<text class=\"" + cls + "\" x=\"" + c(x) + "\" y=\"" + c(baseline) + "\" text-anchor=\"middle\">" + h(label) + "</text>";
    }
    return "";
  }

 private:
  struct Box {
    double x0, y0, x1, y1;
  };
  static bool overlaps(const Box& a, const Box& b) { return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1; }
  std::vector<Box> boxes_;
};

std::string emptyState(const std::string& what, const std::string& hint = "") {
  return "<div class=\"empty\"><strong>" + h(what) + "</strong>" + (hint.empty() ? "" : "<br><span>" + h(hint) + "</span>") +
         "</div>";
}

std::string badge(const std::string& s) {
  return "<span class=\"badge\" style=\"--c:" + std::string(stateColour(s)) + "\">" + h(s) + "</span>";
}

// ---------------------------------------------------------------------------------------------
// What the page shows, read from the root.

struct RunInfo {
  RunRecord rec;
  json result;   // result.json as recorded by the catalog
  json verdict;  // runs/<id>/verdict.json
  std::optional<double> accuracy;  // the trainer's final test accuracy
  std::string version;             // registry version published from the run
  size_t colour = 0;
  double endAt() const { return rec.finishedAt ? *rec.finishedAt : rec.updatedAt; }
};

struct VersionRow {
  std::string version, runId, error;
  std::optional<double> accuracy;
  std::optional<double> at;
  std::vector<std::string> aliases;
  json lineage, metrics;
};

struct Curves {
  std::vector<Point> loss, accuracy;
  size_t trainPoints = 0;
};

struct Model {
  ReportOptions opt;
  std::string registryDir;
  bool haveCatalog = false;
  std::string catalogError;
  int64_t shards = 0, rows = 0, quarantinedCount = 0;
  std::map<std::string, int64_t> byState;
  std::vector<RunInfo> runs;  // oldest first
  std::map<std::string, size_t> runIndex;
  std::vector<EventRecord> events;  // oldest first
  std::vector<TriggerStateRecord> triggers;
  std::vector<QuarantineRecord> quarantine;  // newest first
  std::optional<std::string> metaChampion, lastTick, createdAt;
  // registry
  std::string registryError;
  std::vector<std::string> models;
  std::string model;  // the model shown
  std::vector<VersionRow> versions;
  std::optional<std::string> championVersion;
  json history = json::array();

  const RunInfo* run(const std::string& id) const {
    auto it = runIndex.find(id);
    return it == runIndex.end() ? nullptr : &runs[it->second];
  }
  const VersionRow* version(const std::string& v) const {
    for (const auto& r : versions) {
      if (r.version == v) return &r;
    }
    return nullptr;
  }
};

Curves readCurves(const std::string& path) {
  Curves cv;
  std::ifstream in(path);
  if (!in) return cv;
  // A resumed run appends: the last value logged for a step wins.
  std::map<double, double> loss, acc;
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    const std::string kind = text(j, "kind");
    const auto step = number(j, "step");
    if (!step) continue;
    if (kind == "train") {
      if (auto v = number(j, "loss")) loss[*step] = *v;
    } else if (kind == "eval") {
      if (auto v = number(j, "test_accuracy")) acc[*step] = *v;
    }
  }
  for (const auto& [x, y] : loss) cv.loss.push_back({x, y});
  for (const auto& [x, y] : acc) cv.accuracy.push_back({x, y});
  cv.trainPoints = cv.loss.size();
  cv.loss = downsample(cv.loss, 300);
  cv.accuracy = downsample(cv.accuracy, 300);
  return cv;
}

Model load(const ReportOptions& opt) {
  Model m;
  m.opt = opt;
  m.registryDir = opt.registryDir.empty() ? opt.root + "/registry" : opt.registryDir;
  const std::string dbPath = opt.root + "/catalog.db";
  if (stdfs::exists(dbPath)) {
    m.haveCatalog = true;
    Catalog cat(dbPath);
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
      if (ri.rec.result) ri.result = ri.rec.result->toJson();
      ri.accuracy = number(ri.result, "test_accuracy");
      m.runIndex[ri.rec.id] = m.runs.size();
      m.runs.push_back(std::move(ri));
    }
    m.events = cat.events(static_cast<int64_t>(opt.maxEvents));
    std::reverse(m.events.begin(), m.events.end());
    m.triggers = cat.triggerStates();
    m.quarantine = cat.quarantined(static_cast<int64_t>(opt.maxQuarantine));
    m.metaChampion = cat.meta("champion");
    m.lastTick = cat.meta("last_tick_at");
    m.createdAt = cat.meta("created_at");
  }
  // Verdicts of judged runs, newest first, and colours of the runs whose curves are drawn.
  for (auto& r : m.runs) {
    if (r.rec.state == state::kPromoted || r.rec.state == state::kRejected || r.rec.state == state::kFailed) {
      r.verdict = parseJson(fs::readFileIfPresent(RunPaths::of(opt.root, r.rec.id).verdict()));
    }
  }
  // The registry: the model whose champion is the catalog's, else the first one.
  if (stdfs::is_directory(m.registryDir)) {
    try {
      Registry reg(m.registryDir);
      m.models = reg.models();
      std::string pick;
      for (const auto& name : m.models) {
        try {
          auto champ = reg.alias(name, "champion");
          if (!champ) continue;
          if (pick.empty()) pick = name;
          if (m.metaChampion && reg.show(name, *champ).lineage.value("run_id", "") == *m.metaChampion) {
            pick = name;
            break;
          }
        } catch (const std::exception&) {
        }
      }
      if (pick.empty() && !m.models.empty()) pick = m.models.front();
      m.model = pick;
      if (!pick.empty()) {
        m.championVersion = reg.alias(pick, "champion");
        for (const auto& line : [&] {
               std::vector<std::string> lines;
               std::istringstream in(fs::readFileIfPresent(m.registryDir + "/" + pick + "/history.jsonl"));
               for (std::string l; std::getline(in, l);) lines.push_back(l);
               return lines;
             }()) {
          json e = parseJson(line);
          if (e.is_object()) m.history.push_back(e);
        }
        for (const auto& v : reg.versions(pick)) {
          VersionRow row;
          row.version = v;
          try {
            VersionInfo info = reg.show(pick, v);
            row.lineage = info.lineage;
            row.metrics = info.metrics;
            row.aliases = info.aliases;
            row.runId = text(info.lineage, "run_id");
            row.accuracy = number(info.metrics, "accuracy");
          } catch (const std::exception& e) {
            row.error = e.what();
          }
          if (const RunInfo* r = m.run(row.runId)) row.at = r->endAt();
          if (!row.at) {
            for (const auto& e : m.history) {
              if (text(e, "to") == v && text(e, "action") == "promote") {
                row.at = number(e, "at");
                break;
              }
            }
          }
          if (auto it = m.runIndex.find(row.runId); it != m.runIndex.end()) m.runs[it->second].version = v;
          m.versions.push_back(std::move(row));
        }
      }
    } catch (const std::exception& e) {
      m.registryError = e.what();
    }
  }
  return m;
}

// ---------------------------------------------------------------------------------------------
// Sections.

struct Champion {
  std::string label;  // model:version, or the run id without a registry
  std::string runId;
  std::optional<double> accuracy;
  const VersionRow* version = nullptr;
};

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

std::string accText(const std::optional<double>& a) { return a ? fixed(*a, 4) : "-"; }

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
    chips += "<span class=\"chip\" style=\"--c:" + std::string(stateColour(s)) + "\">" + std::to_string(n) + " " + h(s) + "</span>";
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
      json d = parseJson(t.detail);
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
  for (const auto& v : m.versions) {
    if (v.accuracy) rows.push_back(&v);
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
  o += polyline(f, pts, kSeries[0], 2, "");
  Labels labels;
  for (const auto& p : pts) labels.mark(f.px(p.x), f.py(p.y), 5);
  std::string marks, texts;
  for (size_t i = 0; i < rows.size(); ++i) {
    const VersionRow& v = *rows[i];
    const bool champ = m.championVersion && *m.championVersion == v.version;
    const double x = f.px(pts[i].x), y = f.py(pts[i].y);
    std::string tip = h(m.model + ":" + v.version) + " &#8212; holdout accuracy " + fixed(*v.accuracy, 4) + "&#10;run " +
                      h(v.runId) + (v.at ? "&#10;published " + h(isoUtc(*v.at)) + " UTC" : "") +
                      (champ ? "&#10;champion" : "");
    if (champ) {
      marks += marker(Shape::kStar, x, y, 9, kChampion, tip);
    } else {
      marks += marker(Shape::kCircle, x, y, 4.5, kSeries[0], tip);
    }
    if (champ || rows.size() <= 12) {
      texts += labels.place(x, y, champ ? 10 : 5, fixed(*v.accuracy, 3) + (champ ? " champion" : ""),
                            champ ? "pt champ" : "pt", f.plotTop(), f.plotBottom());
    }
  }
  o += marks + texts + "</svg><div class=\"legend\">" + legendLine(kSeries[0], "version") + legendMarker(Shape::kStar, kChampion, "champion") + "</div>";
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
  std::set<std::string> seen;
  for (const auto* r : rows) {
    const std::string& s = r->rec.state;
    seen.insert(s);
    const double x = f.px(r->endAt());
    const bool noAcc = !r->accuracy;
    const double y = noAcc ? f.plotBottom() - 7 : f.py(*r->accuracy);
    std::string tip = h(r->rec.id) + " &#8212; " + h(s) + (noAcc ? "" : ", test accuracy " + fixed(*r->accuracy, 4)) +
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
  for (const char* s : {state::kPromoted, state::kSucceeded, state::kRejected, state::kFailed, state::kCancelled}) {
    if (seen.count(s)) o += legendMarker(stateShape(s), stateColour(s), std::string(s) + (stateShape(s) == Shape::kCross ? " (no accuracy)" : ""));
  }
  if (!ch.runId.empty()) o += legendMarker(Shape::kRing, kChampion, "champion");
  return o + "</div></figure>";
}

std::string qualitySection(const Model& m) {
  const Ticks yt = accuracyTicks(m);
  return "<section id=\"quality\" class=\"card\"><h2>Model quality</h2><p class=\"sub\">Hover a point for its details.</p>"
         "<div class=\"grid2\">" + versionsChart(m, yt) + runsChart(m, yt) + "</div></section>";
}

std::string curvesSection(const Model& m, const std::string& championRun) {
  std::string o = "<section id=\"curves\" class=\"card\"><h2>Training curves</h2>";
  std::vector<const RunInfo*> shown;
  std::vector<Curves> curves;
  for (auto it = m.runs.rbegin(); it != m.runs.rend() && shown.size() < m.opt.curveRuns; ++it) {
    Curves cv = readCurves(RunPaths::of(m.opt.root, it->rec.id).metrics());
    if (cv.loss.empty() && cv.accuracy.empty()) continue;
    shown.push_back(&*it);
    curves.push_back(std::move(cv));
  }
  std::reverse(shown.begin(), shown.end());
  std::reverse(curves.begin(), curves.end());
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
      const std::string colour = kSeries[shown[i]->colour % kNumSeries];
      const bool champ = shown[i]->rec.id == championRun;
      const std::string tip = h(shown[i]->rec.id) + " (" + h(shown[i]->rec.state) + ")";
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
    o += legendLine(kSeries[r->colour % kNumSeries], r->rec.id + " \xC2\xB7 " + r->rec.state + (r->rec.id == championRun ? " \xC2\xB7 champion" : ""),
                    false, r->rec.id == championRun ? 4 : 2.5);
  }
  return o + "</div></section>";
}

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
    if (auto at = number(e, "at")) see(*at);
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
    json d = parseJson(e.detail);
    haveDrift = true;
    if (auto th = number(d.is_object() ? d.value("thresholds", json()) : json(), "psi")) psiThreshold = *th;
    const json values = d.is_object() ? d.value("values", json()) : json();
    if (auto v = number(values.is_object() ? values.value("psi", json()) : json(), "max")) psi.emplace_back(e.at, *v);
  }
  for (const auto& t : m.triggers) {
    if (t.name != "drift") continue;
    haveDrift = true;
    json d = parseJson(t.detail);
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
  svg += "<g class=\"grid\">";
  for (double x : xt.at) {
    svg += "<line y1=\"" + c(f.plotTop()) + "\" y2=\"" + c(f.plotBottom()) + "\" x1=\"" + c(f.px(x)) + "\" x2=\"" + c(f.px(x)) + "\"/>";
  }
  svg += "</g><g class=\"axis\"><line x1=\"" + c(f.plotLeft()) + "\" x2=\"" + c(f.plotRight()) + "\" y1=\"" + c(f.plotBottom()) +
         "\" y2=\"" + c(f.plotBottom()) + "\"/>";
  for (size_t i = 0; i < xt.at.size(); ++i) {
    const double x = f.px(xt.at[i]);
    svg += "<line y1=\"" + c(f.plotBottom()) + "\" y2=\"" + c(f.plotBottom() + 4) + "\" x1=\"" + c(x) + "\" x2=\"" + c(x) + "\"/>";
    svg += "<text x=\"" + c(x) + "\" y=\"" + c(f.plotBottom() + 16) + "\" text-anchor=\"middle\">" + h(xt.labels[i]) + "</text>";
  }
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
    std::string tip = h(r.rec.id) + " &#8212; " + h(r.rec.state) + "&#10;trigger " + h(r.rec.trigger) + ": " +
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
    json d = parseJson(e.detail);
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
    auto at = number(e, "at");
    if (!at) continue;
    const std::string action = text(e, "action"), to = text(e, "to");
    marks.push_back({f.px(*at), champLane, Shape::kStar, kChampion, action == "rollback",
                     h(action) + " " + h(m.model) + ":" + h(to) + (text(e, "from").empty() ? "" : " (from " + h(text(e, "from")) + ")") +
                         " " + h(isoUtc(*at)) + " UTC: " + h(text(e, "reason")),
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
  std::set<std::string> states, actions;
  bool held = false;
  for (const auto& r : m.runs) states.insert(isTerminalState(r.rec.state) ? r.rec.state : "in flight");
  for (const auto& e : m.history) actions.insert(text(e, "action"));
  for (const auto& mk : marks) held = held || (mk.hollow && mk.shape == Shape::kDiamond);
  o += legendMarker(Shape::kCircle, kShard, "shard ingested") + legendMarker(Shape::kCross, kQuarantine, "file quarantined") +
       legendMarker(Shape::kDiamond, kTrigger, "trigger fired") + (held ? legendMarker(Shape::kDiamond, kTrigger, "fired, held", true) : "");
  if (!m.runs.empty()) o += legendMarker(Shape::kRing, kMuted, "run created");
  for (const char* s : {state::kPromoted, state::kSucceeded, state::kRejected, state::kFailed, state::kCancelled}) {
    if (states.count(s)) o += legendMarker(stateShape(s), stateColour(s), s);
  }
  if (states.count("in flight")) o += legendLine(stateColour(state::kRunning), "in flight", true);
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

std::string kv(const std::string& key, const std::string& valueHtml) {
  return "<tr><th>" + h(key) + "</th><td>" + valueHtml + "</td></tr>";
}

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
           kv("param sha256", hashHtml(text(run->result, "param_sha256"), 64)) + kv("code version", h(text(run->result, "perennial_version"))) +
           "</table>";
    }
    return o + "</section>";
  }
  const json& l = ch.version->lineage;
  o += "<p class=\"sub\">From <code>" + h(m.registryDir + "/" + m.model + "/versions/" + ch.version->version + "/lineage.json") + "</code>.</p>";
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
        json d = parseJson(e.detail);
        if (auto rws = number(d, "rows")) {
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
    if (r.rec.state != state::kPromoted && r.rec.state != state::kRejected) continue;
    json v = r.verdict;
    if (!v.is_object() && !r.version.empty()) {
      v = parseJson(fs::readFileIfPresent(m.registryDir + "/" + m.model + "/versions/" + r.version + "/verdict.json"));
    }
    ++n;
    const bool pass = v.is_object() ? text(v, "decision") == "pass" : r.rec.state == state::kPromoted;
    const json cand = v.is_object() ? v.value("candidate", json()) : json();
    const json champ = v.is_object() ? v.value("champion", json()) : json();
    o += std::string("<details class=\"verdict\"") + (n <= 3 ? " open" : "") + "><summary><code>" + h(r.rec.id) + "</code> " +
         badge(r.rec.state) + " <span class=\"decision " + (pass ? "pass\">pass" : "reject\">reject") + "</span>";
    o += " <span class=\"muted\">candidate " + accText(number(cand, "accuracy")) + " vs champion " +
         (champ.is_object() ? accText(number(champ, "accuracy")) : std::string("none (first model)")) +
         (r.version.empty() ? "" : " &middot; published as " + h(m.model + ":" + r.version)) + "</span></summary>";
    if (!v.is_object() || !v.contains("checks") || !v["checks"].is_array()) {
      o += "<p class=\"note\">No verdict.json for this run.</p></details>";
      continue;
    }
    o += "<table><thead><tr><th>check</th><th>value</th><th>threshold</th><th>result</th><th>detail</th></tr></thead><tbody>";
    for (const auto& ck : v["checks"]) {
      const bool ok = ck.is_object() && ck.value("passed", false);
      o += std::string("<tr class=\"") + (ok ? "ok" : "bad") + "\"><td><code>" + h(text(ck, "name")) + "</code></td><td class=\"val\">" +
           valueHtml(ck.is_object() ? ck.value("value", json()) : json()) + "</td><td class=\"val\">" +
           valueHtml(ck.is_object() ? ck.value("threshold", json()) : json()) + "</td><td>" +
           (ok ? "<span class=\"pass\">&#10003; pass</span>" : "<span class=\"fail\">&#10007; fail</span>") + "</td><td>" +
           h(text(ck, "detail")) + "</td></tr>";
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

const char* kStyle = R"css(
:root { --ink:#1f2933; --muted:#6b7785; --line:#e4e7eb; --bg:#f4f6f8; --card:#fff; --accent:#3f7fbf; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin:0; background:var(--bg); color:var(--ink);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Liberation Sans", "DejaVu Sans", Arial, sans-serif; }
code, pre { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", "DejaVu Sans Mono", monospace; font-size: 12.5px; }
header.top { background:#1d2733; color:#e9eef3; }
header.top .wrap { padding: 18px 24px 0; }
header.top h1 { margin:0; font-size:22px; font-weight:600; letter-spacing:.2px; }
header.top h1 span { color:#9fb3c8; font-weight:400; }
header.top .meta { color:#aab8c5; margin-top:4px; font-size:13px; }
header.top .meta code { color:#e9eef3; background:rgba(255,255,255,.08); padding:1px 5px; border-radius:4px; }
header.top nav { display:flex; flex-wrap:wrap; gap:2px; margin-top:12px; }
header.top nav a { color:#cfd9e3; text-decoration:none; padding:7px 12px; border-radius:6px 6px 0 0; font-size:13px; }
header.top nav a:hover { background:rgba(255,255,255,.08); color:#fff; }
.wrap { max-width: 1200px; margin: 0 auto; padding: 20px 24px; }
main.wrap { padding-top: 20px; }
.cards { display:grid; grid-template-columns: 1.6fr 1fr 1fr 1.6fr; gap:14px; margin-bottom:16px; }
.stat { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:14px 16px; }
.stat .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.6px; font-weight:600; }
.stat .value { font-size:26px; font-weight:600; margin:2px 0; font-variant-numeric: tabular-nums; }
.stat .value.warn { color:#c62828; }
.stat .detail { color:var(--muted); font-size:13px; }
.stat.champion { border-top:3px solid #c99a06; }
.chip { display:inline-block; margin:2px 4px 2px 0; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600;
  color:var(--c); background: color-mix(in srgb, var(--c) 12%, #fff); border:1px solid color-mix(in srgb, var(--c) 35%, #fff); }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:16px 20px 18px; margin-bottom:16px; }
h2 { font-size:17px; margin:0 0 2px; font-weight:600; }
.sub { color:var(--muted); margin:0 0 12px; font-size:13px; }
.note { color:var(--muted); font-size:13px; margin:8px 0 0; }
.grid2 { display:grid; grid-template-columns: 1fr 1fr; gap:20px; }
figure { margin:0; min-width:0; }
figcaption { font-weight:600; font-size:14px; margin-bottom:4px; }
figcaption span { display:block; color:var(--muted); font-weight:400; font-size:12.5px; }
svg.chart { width:100%; height:auto; display:block; overflow:visible; }
svg.chart text { font-size:11px; fill:#52606d; }
svg.chart text.title { font-size:12px; fill:#3e4c59; font-weight:600; }
svg.chart text.pt { font-size:10.5px; fill:#3e4c59; }
svg.chart text.pt.champ { fill:#8a6a00; font-weight:600; }
svg.chart text.runid { font-size:10.5px; fill:#3e4c59; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
svg.chart text.lanelabel { font-size:12px; fill:#1f2933; font-weight:600; }
svg.chart text.lanesub { font-size:10.5px; fill:#7b8794; }
svg.chart text.count { font-size:10px; fill:#52606d; font-weight:600; }
svg.chart text.threshold { font-size:10px; fill:#c62828; }
svg.chart .grid line { stroke:#edf0f3; stroke-width:1; }
svg.chart .axis line { stroke:#9aa5b1; stroke-width:1; }
svg.chart rect.lane { fill:#f7f9fb; }
.scroll { overflow-x:auto; }
.legend { display:flex; flex-wrap:wrap; gap:4px 16px; margin-top:8px; font-size:12.5px; color:#3e4c59; }
.legend .key { display:inline-flex; align-items:center; gap:6px; }
.legend.runs { margin-top:12px; padding-top:10px; border-top:1px solid var(--line); font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size:12px; }
.empty { border:1px dashed #cbd2d9; border-radius:8px; padding:26px 16px; text-align:center; color:#52606d; background:#fafbfc; }
.empty span { color:var(--muted); font-size:13px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
thead th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.4px; background:#f9fafb; }
tbody tr:hover td { background:#f7f9fc; }
td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
td.nowrap { white-space:nowrap; }
td.detail { color:#3e4c59; word-break:break-word; }
td.val { font-variant-numeric: tabular-nums; word-break:break-word; max-width:320px; }
table.kv th { width:160px; color:var(--muted); font-weight:600; font-size:12.5px; text-transform:none; letter-spacing:0; background:none; }
table.kv td code { word-break:break-all; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; color:var(--c);
  background: color-mix(in srgb, var(--c) 12%, #fff); border:1px solid color-mix(in srgb, var(--c) 35%, #fff); }
.rule { display:inline-block; padding:1px 7px; border-radius:4px; background:#fdecea; color:#b71c1c; font-size:12px; font-weight:600; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.star { color:#c99a06; }
.muted { color:var(--muted); }
.yes { color:#2e7d32; font-weight:600; }
.pass { color:#2e7d32; font-weight:600; white-space:nowrap; }
.fail { color:#c62828; font-weight:600; white-space:nowrap; }
tr.bad td { background:#fff6f5; }
.decision { font-weight:700; font-size:12px; text-transform:uppercase; letter-spacing:.5px; padding:1px 7px; border-radius:4px; }
.decision.pass { background:#e6f4ea; } .decision.reject { background:#fdecea; color:#c62828; }
details { margin-top:10px; }
details > summary { cursor:pointer; padding:6px 0; font-size:13.5px; }
details.verdict { border:1px solid var(--line); border-radius:8px; padding:4px 12px 8px; }
details.verdict[open] > summary { border-bottom:1px solid var(--line); margin-bottom:6px; }
pre { background:#f6f8fa; border:1px solid var(--line); border-radius:6px; padding:10px 12px; overflow:auto; max-height:320px; }
.chain { display:flex; flex-wrap:wrap; align-items:center; gap:6px; }
.chain .ver { display:inline-flex; flex-direction:column; border:1px solid var(--line); border-radius:6px; padding:2px 10px; background:#fafbfc; line-height:1.3; }
.chain .ver.current { border-color:#c99a06; background:#fffaeb; }
.chain .ver small { color:var(--muted); font-size:11.5px; }
.chain .arrow { color:var(--muted); }
footer { color:var(--muted); font-size:12px; text-align:center; padding:8px 0 28px; }
@media (max-width: 960px) { .grid2 { grid-template-columns: 1fr; } .cards { grid-template-columns: 1fr 1fr; } }
)css";

}  // namespace

std::string renderReport(const ReportOptions& opt) {
  if (opt.root.empty()) throw ConfigError("--root: required (the scheduler's root directory)");
  if (!stdfs::is_directory(opt.root)) throw ConfigError("--root: " + opt.root + ": no such directory");
  Model m = load(opt);
  // Colours: the newest runs' curves get distinct colours, in run order.
  const size_t firstColoured = m.runs.size() > kNumSeries ? m.runs.size() - kNumSeries : 0;
  for (size_t i = 0; i < m.runs.size(); ++i) m.runs[i].colour = i >= firstColoured ? i - firstColoured : i % kNumSeries;
  const double now = opt.now > 0 ? opt.now : static_cast<double>(std::time(nullptr));
  const Champion ch = championOf(m);

  std::string o;
  o.reserve(256 * 1024);
  o += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
       "<meta name=\"generator\" content=\"perennial " PERENNIAL_VERSION "\">\n"
       "<link rel=\"icon\" href=\"data:,\">\n<title>Perennial report &#8212; " + h(opt.root) + "</title>\n<style>" + kStyle +
       "</style>\n</head>\n<body>\n";
  o += "<header class=\"top\"><div class=\"wrap\"><h1>Perennial <span>&middot; scheduler report</span></h1><div class=\"meta\">root <code>" +
       h(opt.root) + "</code> &middot; generated " + h(isoUtc(now)) + " UTC";
  if (m.lastTick) o += " &middot; last tick " + h(isoUtc(std::atof(m.lastTick->c_str()))) + " UTC";
  o += " &middot; registry <code>" + h(m.registryDir) + "</code></div><nav>";
  for (const auto& [id, label] : std::vector<std::pair<const char*, const char*>>{
           {"quality", "Quality"}, {"curves", "Training"}, {"timeline", "Timeline"}, {"lineage", "Lineage"},
           {"verdicts", "Verdicts"}, {"runs", "Runs"}, {"quarantine", "Quarantine"}}) {
    o += std::string("<a href=\"#") + id + "\">" + label + "</a>";
  }
  o += "</nav></div></header>\n<main class=\"wrap\">\n";
  if (!m.haveCatalog) {
    o += "<div class=\"card\">" + emptyState("No catalog yet", "there is no " + opt.root + "/catalog.db: start the scheduler with `perennial sched run` or `perennial sched tick`") + "</div>\n";
  }
  o += summarySection(m, ch) + "\n";
  o += qualitySection(m) + "\n";
  o += curvesSection(m, ch.runId) + "\n";
  o += timelineSection(m) + "\n";
  o += lineageSection(m, ch) + "\n";
  o += verdictsSection(m) + "\n";
  o += runsSection(m, ch.runId) + "\n";
  o += quarantineSection(m) + "\n";
  o += "</main>\n<footer>perennial " PERENNIAL_VERSION " &middot; a static page: every chart is inline SVG, nothing is "
       "loaded from the network</footer>\n";
  o += "<script>\n(function () {\n  document.documentElement.setAttribute('data-report-ready', '1');\n"
       "  console.log('report-ok: ' + document.querySelectorAll('section').length + ' sections, ' +\n"
       "              document.querySelectorAll('svg.chart').length + ' charts');\n})();\n</script>\n</body>\n</html>\n";
  return o;
}

void writeReport(const std::string& root, const std::string& registryDir, const std::string& out) {
  ReportOptions opt;
  opt.root = root;
  opt.registryDir = registryDir;
  const std::string page = renderReport(opt);
  const stdfs::path parent = stdfs::path(out).parent_path();
  if (!parent.empty() && !stdfs::is_directory(parent)) throw ConfigError("--out: " + out + ": no such directory " + parent.string());
  fs::writeFileAtomic(out, page);
}

}  // namespace perennial::sched
