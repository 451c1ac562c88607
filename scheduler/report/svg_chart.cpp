#include "scheduler/report/svg_chart.h"

#include <algorithm>
#include <cmath>

#include "scheduler/report/report_text.h"

namespace perennial::sched::report {
namespace {

constexpr double kPi = 3.14159265358979323846;

}  // namespace

std::string c(double v) { return format("%.1f", v); }

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

std::string svgOpen(const Frame& f, const std::string& label) {
  return "<svg class=\"chart\" viewBox=\"0 0 " + c(f.width) + " " + c(f.height) + "\" width=\"" + c(f.width) +
         "\" height=\"" + c(f.height) + "\" role=\"img\" aria-label=\"" + h(label) + "\">";
}

std::string xGridLines(const Frame& f, const Ticks& xt) {
  std::string o;
  for (double x : xt.at) o += "<line y1=\"" + c(f.plotTop()) + "\" y2=\"" + c(f.plotBottom()) + "\" x1=\"" + c(f.px(x)) + "\" x2=\"" + c(f.px(x)) + "\"/>";
  return o;
}

std::string xTickMarks(const Frame& f, const Ticks& xt) {
  std::string o;
  for (size_t i = 0; i < xt.at.size(); ++i) {
    const double x = f.px(xt.at[i]);
    o += "<line y1=\"" + c(f.plotBottom()) + "\" y2=\"" + c(f.plotBottom() + 4) + "\" x1=\"" + c(x) + "\" x2=\"" + c(x) + "\"/>";
    o += "<text x=\"" + c(x) + "\" y=\"" + c(f.plotBottom() + 16) + "\" text-anchor=\"middle\">" + h(xt.labels[i]) + "</text>";
  }
  return o;
}

std::string axes(const Frame& f, const Ticks& xt, const Ticks& yt, const std::string& xTitle, const std::string& yTitle) {
  std::string o = "<g class=\"grid\">";
  for (double y : yt.at) o += "<line x1=\"" + c(f.plotLeft()) + "\" x2=\"" + c(f.plotRight()) + "\" y1=\"" + c(f.py(y)) + "\" y2=\"" + c(f.py(y)) + "\"/>";
  o += xGridLines(f, xt);
  o += "</g><g class=\"axis\">";
  o += "<line x1=\"" + c(f.plotLeft()) + "\" x2=\"" + c(f.plotRight()) + "\" y1=\"" + c(f.plotBottom()) + "\" y2=\"" + c(f.plotBottom()) + "\"/>";
  o += "<line x1=\"" + c(f.plotLeft()) + "\" x2=\"" + c(f.plotLeft()) + "\" y1=\"" + c(f.plotTop()) + "\" y2=\"" + c(f.plotBottom()) + "\"/>";
  for (size_t i = 0; i < yt.at.size(); ++i) {
    const double y = f.py(yt.at[i]);
    o += "<line x1=\"" + c(f.plotLeft() - 4) + "\" x2=\"" + c(f.plotLeft()) + "\" y1=\"" + c(y) + "\" y2=\"" + c(y) + "\"/>";
    o += "<text x=\"" + c(f.plotLeft() - 7) + "\" y=\"" + c(y + 3.5) + "\" text-anchor=\"end\">" + h(yt.labels[i]) + "</text>";
  }
  o += xTickMarks(f, xt);
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
                     const std::string& title) {
  std::string d;
  for (const auto& p : pts) d += c(f.px(p.x)) + "," + c(f.py(p.y)) + " ";
  if (!d.empty()) d.pop_back();
  std::string o = "<polyline points=\"" + d + "\" fill=\"none\" stroke=\"" + colour + "\" stroke-width=\"" + c(width) +
                  "\" stroke-linejoin=\"round\" stroke-linecap=\"round\"";
  if (title.empty()) return o + "/>";
  return o + "><title>" + title + "</title></polyline>";
}

std::string marker(Shape shape, double x, double y, double r, const std::string& colour, const std::string& title,
                   bool hollow) {
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

std::string legendMarker(Shape shape, const std::string& colour, const std::string& label, bool hollow) {
  return "<span class=\"key\"><svg width=\"16\" height=\"16\" viewBox=\"0 0 16 16\" aria-hidden=\"true\">" +
         marker(shape, 8, 8, 5, colour, "", hollow) + "</svg>" + h(label) + "</span>";
}
std::string legendLine(const std::string& colour, const std::string& label, bool dashed, double width) {
  return "<span class=\"key\"><svg width=\"22\" height=\"16\" viewBox=\"0 0 22 16\" aria-hidden=\"true\"><line x1=\"1\" "
         "y1=\"8\" x2=\"21\" y2=\"8\" stroke=\"" + colour + "\" stroke-width=\"" + c(width) + "\"" +
         (dashed ? " stroke-dasharray=\"4 3\"" : "") + "/></svg>" + h(label) + "</span>";
}

void Labels::mark(double x, double y, double r) { boxes_.push_back({x - r, y - r, x + r, y + r}); }

std::string Labels::place(double x, double y, double r, const std::string& label, const std::string& cls, double top,
                          double bottom) {
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

}  // namespace perennial::sched::report
