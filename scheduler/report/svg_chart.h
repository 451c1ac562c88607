#pragma once
// The report's chart kit: inline SVG built as text. Tick positions and downsampling are pure
// functions of numbers (tests/sched/svg_chart_test.cpp); the drawing functions return SVG
// elements whose coordinates are written with one decimal. Titles and tooltips passed in as
// "(already escaped)" are HTML; every other string is escaped here.
#include <cstddef>
#include <string>
#include <vector>

namespace perennial::sched::report {

// An SVG coordinate: one decimal.
std::string c(double v);

// ---------------------------------------------------------------------------------------------
// Axes.

struct Ticks {
  double lo = 0, hi = 1, step = 1;  // the domain (widened to whole steps when asked) and the step
  std::vector<double> at;           // tick positions, ascending, within [lo, hi]
  std::vector<std::string> labels;  // one per position
};

// Round numbers from LO to HI, about TARGET of them, at a step of 1, 2 or 5 times a power of ten;
// the labels have as many decimals as the step needs. With EXPAND the domain is widened to whole
// steps. An empty domain (HI <= LO) is padded by 10% of LO (by 1 when LO is 0) on each side.
Ticks numberTicks(double lo, double hi, int target, bool expand);

// Instants from LO to HI (Unix seconds) at a round step of seconds, minutes, hours, days or
// years, the fewest steps that give at most TARGET ticks; labelled in UTC with as much of the
// date and time as the step and the span need.
Ticks timeTicks(double lo, double hi, int target);

// A plotting frame: the SVG's size, the plot area's margins and the data domain. px and py map
// data to SVG coordinates (y grows downwards); an empty domain maps to the plot area's middle.
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

// The <svg class="chart"> element's opening tag, LABEL its accessible name.
std::string svgOpen(const Frame& f, const std::string& label);
// Vertical grid lines at XT's ticks across the plot area (inside a <g class="grid">).
std::string xGridLines(const Frame& f, const Ticks& xt);
// Tick marks and labels below the plot area at XT's ticks (inside a <g class="axis">).
std::string xTickMarks(const Frame& f, const Ticks& xt);
// Grid lines, axis lines, tick labels and axis titles (an empty title is left out) of a frame.
std::string axes(const Frame& f, const Ticks& xt, const Ticks& yt, const std::string& xTitle, const std::string& yTitle);

// ---------------------------------------------------------------------------------------------
// Marks.

struct Point {
  double x, y;
};

// At most MAX_POINTS points: the first and last points as they are, the ones between averaged in
// equal buckets of consecutive points. P unchanged when it has no more than MAX_POINTS points or
// MAX_POINTS < 3.
std::vector<Point> downsample(const std::vector<Point>& p, size_t maxPoints);

// A line through PTS; TITLE (already escaped) becomes its tooltip.
// attributes as it is.
std::string polyline(const Frame& f, const std::vector<Point>& pts, const std::string& colour, double width,
                     const std::string& title);

enum class Shape { kCircle, kRing, kTriangle, kSquare, kDiamond, kCross, kStar };

// One marker centred on (X, Y) with radius R; TITLE (already escaped) becomes its tooltip. HOLLOW
// fills it white (a ring is always hollow, a cross never filled).
std::string marker(Shape shape, double x, double y, double r, const std::string& colour, const std::string& title = "",
                   bool hollow = false);

// Legend entries (HTML, for a <div class="legend">): a marker or a line sample, then LABEL
// (escaped here).
std::string legendMarker(Shape shape, const std::string& colour, const std::string& label, bool hollow = false);
std::string legendLine(const std::string& colour, const std::string& label, bool dashed = false, double width = 2.5);

// Point labels that neither overlap each other nor the marks they were placed around: each
// label goes above its mark, else below, else is left out (the mark's tooltip still has it).
class Labels {
 public:
  // A mark of radius R at (X, Y) that labels must not cover.
  void mark(double x, double y, double r);
  // A <text class="CLS"> of LABEL (escaped here) above or below the mark at (X, Y), kept between
  // TOP and BOTTOM; "" when there is no room.
  std::string place(double x, double y, double r, const std::string& label, const std::string& cls, double top, double bottom);

 private:
  struct Box {
    double x0, y0, x1, y1;
  };
  static bool overlaps(const Box& a, const Box& b) { return a.x0 < b.x1 && b.x0 < a.x1 && a.y0 < b.y1 && b.y0 < a.y1; }
  std::vector<Box> boxes_;
};

}  // namespace perennial::sched::report
