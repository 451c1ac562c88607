// Reading a run's metrics.jsonl back as curves (trainer/metrics_curves.h): step order, the last
// record of a step winning (a resumed run appends), and lines that are skipped.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "trainer/metrics_curves.h"

namespace perennial {
namespace {

class MetricsCurvesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::path(::testing::TempDir()) / "perennial-curves-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << tmpl;
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string write(const std::string& content) {
    const std::string path = dir_ + "/metrics.jsonl";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
    return path;
  }
  std::string dir_;
};

void expectCurve(const std::vector<CurvePoint>& curve, const std::vector<std::pair<double, double>>& expected) {
  ASSERT_EQ(curve.size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_DOUBLE_EQ(curve[i].step, expected[i].first) << i;
    EXPECT_DOUBLE_EQ(curve[i].value, expected[i].second) << i;
  }
}

TEST_F(MetricsCurvesTest, TrainLossAndTestAccuracyInStepOrder) {
  const std::string path = write(
      "{\"kind\":\"train\",\"step\":10,\"loss\":2.5,\"lr\":0.1}\n"
      "{\"kind\":\"train\",\"step\":20,\"loss\":2.0}\n"
      "{\"kind\":\"eval\",\"step\":20,\"epoch\":1,\"test_accuracy\":0.5,\"test_loss\":1.5}\n"
      "{\"kind\":\"train\",\"step\":30,\"loss\":1.25}\n"
      "{\"kind\":\"eval\",\"step\":40,\"epoch\":2,\"test_accuracy\":0.75,\"test_loss\":1.0}\n");
  const MetricsCurves c = readMetricsCurves(path);
  expectCurve(c.trainLoss, {{10, 2.5}, {20, 2.0}, {30, 1.25}});
  expectCurve(c.testAccuracy, {{20, 0.5}, {40, 0.75}});
}

TEST_F(MetricsCurvesTest, AStepLoggedAgainKeepsItsLastValue) {
  // A run resumed from step 20 logs 20 and 30 again, after a line cut short by the kill.
  const std::string path = write(
      "{\"kind\":\"train\",\"step\":10,\"loss\":3}\n"
      "{\"kind\":\"train\",\"step\":20,\"loss\":2}\n"
      "{\"kind\":\"train\",\"step\":30,\"lo\n"
      "{\"kind\":\"train\",\"step\":20,\"loss\":1.5}\n"
      "{\"kind\":\"train\",\"step\":30,\"loss\":1}\n");
  expectCurve(readMetricsCurves(path).trainLoss, {{10, 3}, {20, 1.5}, {30, 1}});
}

TEST_F(MetricsCurvesTest, RecordsThatDoNotFitAreSkipped) {
  const std::string path = write(
      "\n"
      "not json\n"
      "[1, 2]\n"
      "{\"kind\":\"train\",\"loss\":1}\n"                         // no step
      "{\"kind\":\"train\",\"step\":\"5\",\"loss\":1}\n"           // a step that is no number
      "{\"kind\":\"train\",\"step\":5,\"loss\":\"x\"}\n"           // a loss that is no number
      "{\"kind\":7,\"step\":6,\"loss\":1}\n"                      // a kind that is no string
      "{\"kind\":\"other\",\"step\":7,\"loss\":1}\n"              // another kind
      "{\"kind\":\"eval\",\"step\":8,\"test_loss\":0.5}\n"        // a regression run's evaluation
      "{\"kind\":\"train\",\"step\":9,\"loss\":0.5}\n");
  const MetricsCurves c = readMetricsCurves(path);
  expectCurve(c.trainLoss, {{9, 0.5}});
  EXPECT_TRUE(c.testAccuracy.empty());
}

TEST_F(MetricsCurvesTest, AMissingFileGivesNoCurves) {
  const MetricsCurves c = readMetricsCurves(dir_ + "/absent.jsonl");
  EXPECT_TRUE(c.trainLoss.empty());
  EXPECT_TRUE(c.testAccuracy.empty());
}

}  // namespace
}  // namespace perennial
