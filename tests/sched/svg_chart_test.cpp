// The report's chart kit (scheduler/report/svg_chart.h): tick positions and labels, frames,
// downsampling and label placement, with expected values worked out by hand.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "scheduler/report/svg_chart.h"

namespace perennial::sched::report {
namespace {

std::vector<double> expectedSteps(double from, double step, int n) {
  std::vector<double> out;
  for (int i = 0; i < n; ++i) out.push_back(from + step * i);
  return out;
}

void expectTicks(const Ticks& t, const std::vector<double>& at, const std::vector<std::string>& labels) {
  ASSERT_EQ(t.at.size(), at.size());
  for (size_t i = 0; i < at.size(); ++i) EXPECT_NEAR(t.at[i], at[i], 1e-9) << i;
  EXPECT_EQ(t.labels, labels);
}

TEST(NumberTicks, StepIsOneTwoOrFiveTimesAPowerOfTen) {
  // (1 - 0) / 5 = 0.2: a step of 2 x 0.1, one decimal.
  const Ticks unit = numberTicks(0, 1, 5, true);
  EXPECT_DOUBLE_EQ(unit.step, 0.2);
  expectTicks(unit, expectedSteps(0, 0.2, 6), {"0.0", "0.2", "0.4", "0.6", "0.8", "1.0"});
  // 0.34 / 5 = 0.068 rounds to 0.05, two decimals; the domain widens to whole steps.
  const Ticks acc = numberTicks(0.63, 0.97, 5, true);
  EXPECT_DOUBLE_EQ(acc.step, 0.05);
  EXPECT_NEAR(acc.lo, 0.60, 1e-12);
  EXPECT_NEAR(acc.hi, 1.00, 1e-12);
  expectTicks(acc, expectedSteps(0.60, 0.05, 9), {"0.60", "0.65", "0.70", "0.75", "0.80", "0.85", "0.90", "0.95", "1.00"});
  // 2000 / 6 = 333 rounds to 500: no decimals.
  expectTicks(numberTicks(0, 2000, 6, true), expectedSteps(0, 500, 5), {"0", "500", "1000", "1500", "2000"});
  // 0.8 / 4 = 0.2 stays 2 x 0.1; 1.2 / 3 = 0.4 becomes 5 x 0.1; 0.04 / 4 = 0.01 is 1 x 0.01.
  EXPECT_DOUBLE_EQ(numberTicks(0, 0.8, 4, true).step, 0.2);
  EXPECT_DOUBLE_EQ(numberTicks(0, 1.2, 3, true).step, 0.5);
  EXPECT_DOUBLE_EQ(numberTicks(0, 0.04, 4, true).step, 0.01);
}

TEST(NumberTicks, WithoutExpandTheDomainIsKept) {
  const Ticks t = numberTicks(0, 0.37, 2, false);
  EXPECT_DOUBLE_EQ(t.lo, 0);
  EXPECT_DOUBLE_EQ(t.hi, 0.37);
  expectTicks(t, {0, 0.2}, {"0.0", "0.2"});
}

TEST(NumberTicks, AnEmptyDomainIsPadded) {
  // 5..5 becomes 4.5..5.5 (10% of 5 each side), then whole steps of 0.2.
  const Ticks five = numberTicks(5, 5, 4, true);
  EXPECT_NEAR(five.lo, 4.4, 1e-12);
  EXPECT_NEAR(five.hi, 5.6, 1e-12);
  EXPECT_EQ(five.at.size(), 7u);
  // 0..0 becomes -1..1; the tick at zero is exactly 0, never "-0.0".
  const Ticks zero = numberTicks(0, 0, 4, true);
  expectTicks(zero, expectedSteps(-1, 0.5, 5), {"-1.0", "-0.5", "0.0", "0.5", "1.0"});
  EXPECT_EQ(zero.at[2], 0.0);
}

TEST(TimeTicks, RoundStepsLabelledInUtc) {
  // An hour in at most 6 ticks: every 10 minutes.
  const Ticks hour = timeTicks(0, 3600, 6);
  EXPECT_DOUBLE_EQ(hour.step, 600);
  expectTicks(hour, expectedSteps(0, 600, 7), {"00:00", "00:10", "00:20", "00:30", "00:40", "00:50", "01:00"});
  // 30 seconds: every 5 s, with seconds. 1700000000 is 2023-11-14 22:13:20 UTC.
  const Ticks secs = timeTicks(1700000000, 1700000030, 6);
  EXPECT_DOUBLE_EQ(secs.step, 5);
  ASSERT_EQ(secs.at.size(), 7u);
  EXPECT_EQ(secs.labels.front(), "22:13:20");
  EXPECT_EQ(secs.labels.back(), "22:13:50");
  // A day or more with an hourly step shows the date too.
  const Ticks days = timeTicks(0, 2 * 86400, 6);
  EXPECT_DOUBLE_EQ(days.step, 43200);
  EXPECT_EQ(days.labels[1], "01-01 12:00");
  // Ten days: every two days, dates only.
  expectTicks(timeTicks(0, 10 * 86400, 6), expectedSteps(0, 172800, 6), {"01-01", "01-03", "01-05", "01-07", "01-09", "01-11"});
  // Ticks start at the first whole step inside the domain.
  const Ticks offset = timeTicks(601, 3599, 6);
  EXPECT_DOUBLE_EQ(offset.at.front(), 1200);
  EXPECT_DOUBLE_EQ(offset.at.back(), 3000);
  // Beyond the largest step: whole years.
  const Ticks decades = timeTicks(0, 40 * 31536000.0, 4);
  EXPECT_DOUBLE_EQ(decades.step, 10 * 31536000.0);
  EXPECT_EQ(decades.labels.front(), "1970-01-01");
}

TEST(Frame, MapsTheDomainOntoThePlotArea) {
  Frame f;  // 560 x 300, margins left 56, right 16, top 16, bottom 46
  f.x0 = 10;
  f.x1 = 20;
  f.y0 = 0;
  f.y1 = 1;
  EXPECT_DOUBLE_EQ(f.px(10), 56);
  EXPECT_DOUBLE_EQ(f.px(20), 544);
  EXPECT_DOUBLE_EQ(f.px(15), 300);
  EXPECT_DOUBLE_EQ(f.py(0), 254);
  EXPECT_DOUBLE_EQ(f.py(1), 16);
  // An empty domain maps to the middle.
  f.x1 = f.x0;
  EXPECT_DOUBLE_EQ(f.px(123), 300);
  EXPECT_EQ(c(f.py(0.25)), "194.5");
}

std::vector<Point> line(size_t n) {
  std::vector<Point> p;
  for (size_t i = 0; i < n; ++i) p.push_back({static_cast<double>(i), static_cast<double>(i) * 2});
  return p;
}

TEST(Downsample, ShortOrUnboundedCurvesAreKept) {
  EXPECT_EQ(downsample(line(10), 10).size(), 10u);
  EXPECT_EQ(downsample(line(10), 2).size(), 10u) << "fewer than 3 points cannot keep both ends";
  EXPECT_TRUE(downsample({}, 5).empty());
}

TEST(Downsample, AveragesEqualBucketsAndKeepsTheEnds) {
  // 10 points to 4: the ends, then points 1..4 and 5..8 averaged.
  const std::vector<Point> d = downsample(line(10), 4);
  ASSERT_EQ(d.size(), 4u);
  EXPECT_DOUBLE_EQ(d[0].x, 0);
  EXPECT_DOUBLE_EQ(d[1].x, 2.5);
  EXPECT_DOUBLE_EQ(d[1].y, 5);
  EXPECT_DOUBLE_EQ(d[2].x, 6.5);
  EXPECT_DOUBLE_EQ(d[2].y, 13);
  EXPECT_DOUBLE_EQ(d[3].x, 9);
  // A long curve: at most the bound, in order, ends kept, and a straight line stays on itself.
  const std::vector<Point> big = downsample(line(2000), 300);
  ASSERT_LE(big.size(), 300u);
  EXPECT_GE(big.size(), 299u);
  EXPECT_DOUBLE_EQ(big.front().x, 0);
  EXPECT_DOUBLE_EQ(big.back().x, 1999);
  for (size_t i = 1; i < big.size(); ++i) {
    EXPECT_LT(big[i - 1].x, big[i].x) << i;
    EXPECT_DOUBLE_EQ(big[i].y, big[i].x * 2) << i;
  }
}

TEST(Labels, PlacedAboveElseBelowElseLeftOut) {
  Labels labels;
  labels.mark(100, 100, 5);
  // Above: the baseline 5 px over the mark.
  EXPECT_EQ(labels.place(100, 100, 5, "a<b", "pt", 0, 300),
            "<text class=\"pt\" x=\"100.0\" y=\"90.0\" text-anchor=\"middle\">a&lt;b</text>");
  // The same spot again: below (13 px under the mark), then nowhere.
  EXPECT_NE(labels.place(100, 100, 5, "0.95", "pt", 0, 300).find("y=\"118.0\""), std::string::npos);
  EXPECT_EQ(labels.place(100, 100, 5, "0.95", "pt", 0, 300), "");
  // A label that would leave the plot area is left out.
  Labels edge;
  EXPECT_EQ(edge.place(50, 12, 5, "x", "pt", 10, 20), "");
}

TEST(Markers, OneElementPerShapeWithItsTooltip) {
  EXPECT_EQ(marker(Shape::kCircle, 1, 2, 3, "#abc"), "<circle cx=\"1.0\" cy=\"2.0\" r=\"3.0\" fill=\"#abc\" stroke=\"#abc\" stroke-width=\"1.6\"/>");
  EXPECT_EQ(marker(Shape::kSquare, 10, 10, 2, "#abc", "t", true),
            "<rect x=\"8.0\" y=\"8.0\" width=\"4.0\" height=\"4.0\" fill=\"#fff\" stroke=\"#abc\" stroke-width=\"1.6\"><title>t</title></rect>");
  for (Shape s : {Shape::kTriangle, Shape::kDiamond, Shape::kCross, Shape::kStar}) {
    const std::string m = marker(s, 5, 5, 4, "#000", "tip");
    EXPECT_EQ(m.rfind("<path d=\"M", 0), 0u) << m;
    EXPECT_NE(m.find("><title>tip</title></path>"), std::string::npos) << m;
  }
  EXPECT_NE(legendLine("#123", "a&b", true).find("stroke-dasharray=\"4 3\"/></svg>a&amp;b</span>"), std::string::npos);
}

}  // namespace
}  // namespace perennial::sched::report
