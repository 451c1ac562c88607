// The validation gate (scheduler/gate.h) with hand-built measurements, and the model registry
// (scheduler/registry.h): layout, aliases, verification, crash safety, concurrency and the
// on_promote hook.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fault.h"
#include "common/sha256.h"
#include "scheduler/gate.h"
#include "scheduler/registry.h"
#include "tests/sched/shard_fixtures.h"

namespace perennial::sched {
namespace {

namespace stdfs = std::filesystem;
using testing::messageOf;
using nlohmann::json;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// A fresh directory under $TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir() {
    const char* base = ::getenv("TMPDIR");
    std::string tmpl = std::string(base && *base ? base : "/tmp") + "/perennial-gate-registry-XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed for " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    // Published files are read-only; make everything writable so that removal cannot fail.
    for (auto it = stdfs::recursive_directory_iterator(path_, ec); !ec && it != stdfs::recursive_directory_iterator();
         it.increment(ec)) {
      std::error_code ignored;
      stdfs::permissions(it->path(), stdfs::perms::owner_write, stdfs::perm_options::add, ignored);
    }
    stdfs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void writeText(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
}

json readJsonFile(const std::string& path) { return json::parse(readText(path)); }

size_t countLines(const std::string& path) {
  const std::string s = readText(path);
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

// A candidate whose integrity holds and which was evaluated.
ModelEval evalOf(double accuracy, double loss, const std::string& path = "/runs/r1/model.h5") {
  ModelEval m;
  m.path = path;
  m.metrics.accuracy = accuracy;
  m.metrics.loss = loss;
  m.metrics.samples = 1000;
  m.paramSha256 = "aa11";
  m.recordedParamSha256 = "aa11";
  m.featureShape = {28, 28};
  m.numClasses = 10;
  return m;
}

// Per-class counts: CORRECT[k] right out of TOTAL[k].
ModelEval withClasses(ModelEval m, std::vector<int64_t> correct, std::vector<int64_t> total) {
  m.metrics.classCorrect = std::move(correct);
  m.metrics.classTotal = std::move(total);
  return m;
}

std::vector<std::string> namesOf(const std::vector<std::unique_ptr<Check>>& checks) {
  std::vector<std::string> out;
  for (const auto& c : checks) out.push_back(c->name());
  return out;
}

std::vector<std::string> namesOf(const Verdict& v) {
  std::vector<std::string> out;
  for (const auto& c : v.checks) out.push_back(c.name);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Integrity

TEST(GateIntegrity, PassesWhenTheHashesAgree) {
  ModelEval c = evalOf(0.9, 0.3);
  auto r = IntegrityCheck().run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->name, "integrity");
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value, "aa11");
  EXPECT_EQ(r->threshold, "aa11");
  EXPECT_EQ(r->detail, "verified");

  c.trainerParamSha256 = "aa11";
  r = IntegrityCheck().run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
}

TEST(GateIntegrity, FailsWhenTheWeightsWereAltered) {
  ModelEval c = evalOf(0.9, 0.3, "/runs/r7/model.h5");
  c.paramSha256 = "bb22";
  const auto r = IntegrityCheck().run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->value, "bb22");
  EXPECT_EQ(r->threshold, "aa11");
  EXPECT_CONTAINS(r->detail, "/runs/r7/model.h5");
  EXPECT_CONTAINS(r->detail, "altered after training");
  EXPECT_CONTAINS(r->detail, "bb22");
  EXPECT_CONTAINS(r->detail, "aa11");
}

TEST(GateIntegrity, FailsWhenNothingIsRecorded) {
  ModelEval c = evalOf(0.9, 0.3, "/runs/r8/model.h5");
  c.recordedParamSha256.clear();
  const auto r = IntegrityCheck().run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_CONTAINS(r->detail, "/runs/r8/model.h5");
  EXPECT_CONTAINS(r->detail, "records no param_sha256");
}

TEST(GateIntegrity, FailsWithTheFilesOwnError) {
  ModelEval c = evalOf(0.9, 0.3);  // the hashes agree: the file error still wins
  c.fileError = "/runs/r1/model.h5: dataset checksum mismatch";
  const auto r = IntegrityCheck().run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->detail, c.fileError);
}

TEST(GateIntegrity, FailsWhenTheTrainersHashDiffers) {
  ModelEval c = evalOf(0.9, 0.3, "/runs/r9/model.h5");
  c.trainerParamSha256 = "cc33";
  const auto r = IntegrityCheck().run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->threshold, "cc33");
  EXPECT_CONTAINS(r->detail, "/runs/r9/model.h5");
  EXPECT_CONTAINS(r->detail, "result.json");
  EXPECT_CONTAINS(r->detail, "cc33");
}

// ---------------------------------------------------------------------------------------------
// Sanity

TEST(GateSanity, PassesForFiniteWeightsAndOutputs) {
  const auto r = SanityCheck({28, 28}, 10).run(evalOf(0.9, 0.3), nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->name, "sanity");
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value["non_finite_weights"], 0);
  EXPECT_EQ(r->value["non_finite_outputs"], 0);
  EXPECT_EQ(r->value["feature_shape"], json({28, 28}));
  EXPECT_EQ(r->threshold["classes"], 10);
}

TEST(GateSanity, FailsForNonFiniteWeights) {
  ModelEval c = evalOf(0.9, 0.3);
  c.nonFiniteWeights = 3;
  const auto r = SanityCheck({28, 28}, 10).run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->value["non_finite_weights"], 3);
  EXPECT_CONTAINS(r->detail, "3 weight value(s)");
}

TEST(GateSanity, FailsForNonFiniteOutputs) {
  ModelEval c = evalOf(0.9, 0.3);
  c.metrics.nonFiniteOutputs = 2;
  const auto r = SanityCheck({28, 28}, 10).run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->value["non_finite_outputs"], 2);
  EXPECT_CONTAINS(r->detail, "2 holdout row(s)");
}

TEST(GateSanity, FailsWhenTheModelCannotBeEvaluated) {
  ModelEval c = evalOf(0.9, 0.3);
  c.evalError = "expected input [1, 28, 28], got [1, 32, 32]";
  const auto r = SanityCheck({28, 28}, 10).run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_CONTAINS(r->detail, "cannot be evaluated");
  EXPECT_CONTAINS(r->detail, c.evalError);
}

TEST(GateSanity, ComparesTheHoldoutWithTheSpecWhenOneIsGiven) {
  ModelEval c = evalOf(0.9, 0.3);
  c.featureShape = {32, 32};
  auto r = SanityCheck({28, 28}, 10).run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_CONTAINS(r->detail, "feature shape");

  c = evalOf(0.9, 0.3);
  c.numClasses = 3;
  r = SanityCheck({28, 28}, 10).run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);

  // Without a spec the shape is not judged.
  r = SanityCheck({}, 0).run(c, nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
}

// ---------------------------------------------------------------------------------------------
// Threshold

TEST(GateThreshold, AccuracyMustBeAtLeastTheBound) {
  const ThresholdCheck check("accuracy", 0.75, true);
  EXPECT_EQ(check.name(), "threshold.accuracy");
  auto r = check.run(evalOf(0.75, 9), nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value, 0.75);
  EXPECT_EQ(r->threshold, 0.75);
  EXPECT_EQ(r->detail, "accuracy 0.75 >= 0.75");

  r = check.run(evalOf(0.875, 9), nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;

  r = check.run(evalOf(0.5, 0), nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->detail, "accuracy 0.5 < 0.75");
}

TEST(GateThreshold, NaNAccuracyFails) {
  const auto r = ThresholdCheck("accuracy", 0.5, true).run(evalOf(kNaN, 0.3), nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
}

TEST(GateThreshold, LossMustBeAtMostTheBound) {
  const ThresholdCheck check("loss", 0.5, false);
  EXPECT_EQ(check.name(), "threshold.loss");
  auto r = check.run(evalOf(0.1, 0.5), nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->detail, "loss 0.5 <= 0.5");

  r = check.run(evalOf(0.1, 0.25), nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;

  r = check.run(evalOf(0.99, 0.75), nullptr);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->detail, "loss 0.75 > 0.5");

  for (double bad : {kNaN, std::numeric_limits<double>::infinity()}) {
    r = check.run(evalOf(0.99, bad), nullptr);
    ASSERT_TRUE(r.has_value());
    EXPECT_FALSE(r->passed) << "loss " << bad;
  }
}

// ---------------------------------------------------------------------------------------------
// Change against the champion (bounds and values chosen to be exact in binary)

TEST(GateChange, AccuracyDropAbsolute) {
  const ChangeCheck check("accuracy", 0.25, false, true);
  EXPECT_EQ(check.name(), "change.accuracy");
  const ModelEval champion = evalOf(0.75, 0.5);

  auto r = check.run(evalOf(0.5, 0.5), &champion);  // exactly at the bound
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value, 0.25);
  EXPECT_EQ(r->threshold, 0.25);
  EXPECT_CONTAINS(r->detail, "drop 0.25 <= 0.25");

  r = check.run(evalOf(0.25, 0.5), &champion);  // beyond
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->value, 0.5);
  EXPECT_CONTAINS(r->detail, "accuracy 0.25 vs champion 0.75");
  EXPECT_CONTAINS(r->detail, "drop 0.5 > 0.25");

  r = check.run(evalOf(0.875, 0.5), &champion);  // an improvement
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value, -0.125);
}

TEST(GateChange, AccuracyDropRelative) {
  const ChangeCheck check("accuracy", 0.5, true, true);
  EXPECT_EQ(check.name(), "change.accuracy.relative");
  const ModelEval champion = evalOf(0.5, 0.5);

  auto r = check.run(evalOf(0.25, 0.5), &champion);  // half of 0.5: exactly at the bound
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value, 0.5);
  EXPECT_CONTAINS(r->detail, "relative drop");

  r = check.run(evalOf(0.125, 0.5), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->value, 0.75);

  r = check.run(evalOf(0.75, 0.5), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value, -0.5);
}

TEST(GateChange, LossIncreaseAbsolute) {
  const ChangeCheck check("loss", 0.25, false, false);
  EXPECT_EQ(check.name(), "change.loss");
  const ModelEval champion = evalOf(0.9, 1.0);

  auto r = check.run(evalOf(0.9, 1.25), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value, 0.25);
  EXPECT_CONTAINS(r->detail, "increase 0.25 <= 0.25");

  r = check.run(evalOf(0.9, 1.5), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_CONTAINS(r->detail, "loss 1.5 vs champion 1");

  r = check.run(evalOf(0.9, 0.5), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value, -0.5);
}

TEST(GateChange, LossIncreaseRelative) {
  const ChangeCheck check("loss", 0.5, true, false);
  EXPECT_EQ(check.name(), "change.loss.relative");
  const ModelEval champion = evalOf(0.9, 0.5);

  auto r = check.run(evalOf(0.9, 0.75), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value, 0.5);

  r = check.run(evalOf(0.9, 1.0), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->value, 1.0);

  r = check.run(evalOf(0.9, 0.25), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;

  // Any increase over a zero loss is infinitely large in relative terms.
  const ModelEval perfect = evalOf(1.0, 0.0);
  r = check.run(evalOf(0.9, 0.25), &perfect);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  r = check.run(evalOf(1.0, 0.0), &perfect);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
}

TEST(GateChange, NaNCandidateFails) {
  const ModelEval champion = evalOf(0.75, 0.5);
  auto r = ChangeCheck("accuracy", 0.25, false, true).run(evalOf(kNaN, 0.5), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  r = ChangeCheck("loss", 0.25, false, false).run(evalOf(0.75, kNaN), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
}

TEST(GateChange, SkippedWithoutAChampion) {
  const ModelEval c = evalOf(0.1, 9.0);
  EXPECT_FALSE(ChangeCheck("accuracy", 0.25, false, true).run(c, nullptr).has_value());
  EXPECT_FALSE(ChangeCheck("accuracy", 0.25, true, true).run(c, nullptr).has_value());
  EXPECT_FALSE(ChangeCheck("loss", 0.25, false, false).run(c, nullptr).has_value());
  EXPECT_FALSE(ChangeCheck("loss", 0.25, true, false).run(c, nullptr).has_value());
  EXPECT_FALSE(SliceCheck(0.05, 20).run(c, nullptr).has_value());
  EXPECT_FALSE(ImprovementCheck(0.01).run(c, nullptr).has_value());
}

// A drop of exactly the configured amount, measured on decimal accuracies, passes: 9000/10000 vs
// 8950/10000 gives 0.9 - 0.895 = 0.0050000000000000044, which is a drop of 0.005.
TEST(GateChange, DecimalDropExactlyAtTheBoundPasses) {
  const ModelEval champion = evalOf(9000.0 / 10000.0, 0.5);
  const auto r = ChangeCheck("accuracy", 0.005, false, true).run(evalOf(8950.0 / 10000.0, 0.5), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
}

// ---------------------------------------------------------------------------------------------
// Slices

TEST(GateSlices, OneClassDroppingMoreThanTheMarginFails) {
  const ModelEval champion = withClasses(evalOf(0.8, 0.5), {90, 80, 60}, {100, 100, 100});
  const ModelEval cand = withClasses(evalOf(0.8, 0.5), {95, 60, 60}, {100, 100, 100});
  const SliceCheck check(0.05, 20);
  EXPECT_EQ(check.name(), "slices");
  const auto r = check.run(cand, &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->value["worst_class"], 1);
  EXPECT_NEAR(r->value["worst_drop"].get<double>(), 0.2, 1e-12);
  EXPECT_NEAR(r->value["drops"]["0"].get<double>(), -0.05, 1e-12);
  EXPECT_EQ(r->threshold, 0.05);
  EXPECT_CONTAINS(r->detail, "class 1");
  EXPECT_CONTAINS(r->detail, "accuracy 0.6 vs champion 0.8");
}

TEST(GateSlices, SmallClassesAreIgnored) {
  // Class 2 falls from 10/10 to 0/10, but has fewer than 20 samples.
  const ModelEval champion = withClasses(evalOf(0.8, 0.5), {90, 80, 10}, {100, 100, 10});
  const ModelEval cand = withClasses(evalOf(0.8, 0.5), {90, 80, 0}, {100, 100, 10});
  const auto r = SliceCheck(0.05, 20).run(cand, &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_FALSE(r->value["drops"].contains("2"));
  EXPECT_NE(r->value["worst_class"], 2);

  // With a lower minimum the same class is judged.
  const auto strict = SliceCheck(0.05, 10).run(cand, &champion);
  ASSERT_TRUE(strict.has_value());
  EXPECT_FALSE(strict->passed);
  EXPECT_EQ(strict->value["worst_class"], 2);
}

TEST(GateSlices, NoClassLargeEnough) {
  const ModelEval champion = withClasses(evalOf(0.8, 0.5), {9, 8}, {10, 10});
  const ModelEval cand = withClasses(evalOf(0.8, 0.5), {0, 0}, {10, 10});
  const auto r = SliceCheck(0.05, 20).run(cand, &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed);
  EXPECT_EQ(r->value["worst_class"], -1);
  EXPECT_TRUE(r->value["worst_drop"].is_null());
  EXPECT_CONTAINS(r->detail, "no class has enough holdout samples");
}

TEST(GateSlices, ADropExactlyAtTheMarginPasses) {
  const ModelEval champion = withClasses(evalOf(0.8, 0.5), {75, 50}, {100, 100});
  const ModelEval cand = withClasses(evalOf(0.8, 0.5), {50, 75}, {100, 100});
  const auto r = SliceCheck(0.25, 20).run(cand, &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value["worst_class"], 0);
  EXPECT_EQ(r->value["worst_drop"], 0.25);
}

// ---------------------------------------------------------------------------------------------
// Improvement

TEST(GateImprovement, CandidateMustBeatTheChampion) {
  const ImprovementCheck check(0.125);
  EXPECT_EQ(check.name(), "improvement");
  const ModelEval champion = evalOf(0.5, 0.5);

  auto r = check.run(evalOf(0.625, 0.5), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;
  EXPECT_EQ(r->value, 0.125);
  EXPECT_EQ(r->threshold, 0.125);

  r = check.run(evalOf(0.75, 0.5), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->passed) << r->detail;

  r = check.run(evalOf(0.5, 0.5), &champion);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->passed);
  EXPECT_EQ(r->detail, "accuracy gain 0 < 0.125");
}

// ---------------------------------------------------------------------------------------------
// makeChecks, judge, Verdict

GateConfig allOn() {
  GateConfig g;
  g.minAccuracy = 0.5;
  g.maxLoss = 2;
  g.maxAccuracyDrop = 0.25;
  g.maxAccuracyDropRel = 0.5;
  g.maxLossIncrease = 0.25;
  g.maxLossIncreaseRel = 0.5;
  g.maxClassDrop = 0.25;
  g.minClassSamples = 20;
  g.minImprovement = 0.125;
  return g;
}

TEST(GateMakeChecks, AllChecksInOrder) {
  const auto checks = makeChecks(allOn(), {28, 28}, 10);
  EXPECT_EQ(namesOf(checks),
            (std::vector<std::string>{"integrity", "sanity", "threshold.accuracy", "threshold.loss", "change.accuracy",
                                      "change.accuracy.relative", "change.loss", "change.loss.relative", "slices",
                                      "improvement"}));
}

TEST(GateMakeChecks, DefaultsAndOff) {
  EXPECT_EQ(namesOf(makeChecks(GateConfig{}, {28, 28}, 10)),
            (std::vector<std::string>{"integrity", "sanity", "change.accuracy", "slices"}));

  GateConfig off;
  off.maxAccuracyDrop = -1;
  off.maxClassDrop = -1;
  EXPECT_EQ(namesOf(makeChecks(off, {28, 28}, 10)), (std::vector<std::string>{"integrity", "sanity"}));

  // 0 is "no drop at all" for the change checks, but "off" for thresholds and improvement.
  GateConfig zero = off;
  zero.maxAccuracyDrop = 0;
  zero.maxLossIncrease = 0;
  zero.maxClassDrop = 0;
  zero.minAccuracy = 0;
  zero.maxLoss = 0;
  zero.minImprovement = 0;
  EXPECT_EQ(namesOf(makeChecks(zero, {28, 28}, 10)),
            (std::vector<std::string>{"integrity", "sanity", "change.accuracy", "change.loss", "slices"}));

  GateConfig one = off;
  one.maxLossIncreaseRel = 0.1;
  one.minImprovement = 0.01;
  EXPECT_EQ(namesOf(makeChecks(one, {28, 28}, 10)),
            (std::vector<std::string>{"integrity", "sanity", "change.loss.relative", "improvement"}));
}

TEST(GateJudge, UnevaluatedCandidateKeepsOnlyIntegrityAndSanity) {
  const auto checks = makeChecks(allOn(), {28, 28}, 10);
  const ModelEval champion = withClasses(evalOf(0.75, 0.5), {75}, {100});
  ModelEval cand = withClasses(evalOf(0, 0), {0}, {100});
  cand.evalError = "wrong input shape";
  const Verdict v = judge(checks, cand, &champion);
  EXPECT_FALSE(v.passed);
  EXPECT_EQ(namesOf(v), (std::vector<std::string>{"integrity", "sanity"}));
  EXPECT_EQ(v.failed(), (std::vector<std::string>{"sanity"}));
}

TEST(GateJudge, WithoutAChampionOnlyAbsoluteChecksAreListed) {
  const auto checks = makeChecks(allOn(), {28, 28}, 10);
  const Verdict v = judge(checks, withClasses(evalOf(0.75, 0.5), {75}, {100}), nullptr);
  EXPECT_TRUE(v.passed);
  EXPECT_EQ(namesOf(v), (std::vector<std::string>{"integrity", "sanity", "threshold.accuracy", "threshold.loss"}));
  EXPECT_TRUE(v.failed().empty());
}

TEST(GateJudge, WithAChampionEveryCheckRunsAndFailuresAreNamed) {
  const auto checks = makeChecks(allOn(), {28, 28}, 10);
  const ModelEval champion = withClasses(evalOf(0.75, 0.5), {75, 75}, {100, 100});

  const Verdict good = judge(checks, withClasses(evalOf(0.875, 0.25), {88, 87}, {100, 100}), &champion);
  EXPECT_TRUE(good.passed);
  EXPECT_EQ(good.checks.size(), 10u);
  EXPECT_TRUE(good.failed().empty());

  // Accuracy below the champion: the improvement check fails, nothing else does.
  const Verdict flat = judge(checks, withClasses(evalOf(0.625, 0.5), {70, 55}, {100, 100}), &champion);
  EXPECT_FALSE(flat.passed);
  EXPECT_EQ(flat.failed(), (std::vector<std::string>{"improvement"}));

  ModelEval altered = withClasses(evalOf(0.875, 0.25), {88, 87}, {100, 100});
  altered.paramSha256 = "ffff";
  const Verdict bad = judge(checks, altered, &champion);
  EXPECT_FALSE(bad.passed);
  EXPECT_EQ(bad.failed(), (std::vector<std::string>{"integrity"}));
}

TEST(GateVerdict, ToJson) {
  const auto checks = makeChecks(allOn(), {28, 28}, 10);
  const ModelEval cand = withClasses(evalOf(0.375, 0.5, "/runs/r2/model.h5"), {30, 45}, {100, 100});
  const Verdict first = judge(checks, cand, nullptr);
  const json j = first.toJson();
  EXPECT_EQ(j["decision"], "reject");
  EXPECT_EQ(j["failed"], json({"threshold.accuracy"}));
  ASSERT_TRUE(j["checks"].is_array());
  ASSERT_EQ(j["checks"].size(), 4u);
  for (const auto& c : j["checks"]) {
    for (const char* key : {"name", "passed", "value", "threshold", "detail"}) EXPECT_TRUE(c.contains(key)) << key;
  }
  const json& t = j["checks"][2];
  EXPECT_EQ(t["name"], "threshold.accuracy");
  EXPECT_EQ(t["passed"], false);
  EXPECT_EQ(t["value"], 0.375);
  EXPECT_EQ(t["threshold"], 0.5);
  EXPECT_EQ(t["detail"], "accuracy 0.375 < 0.5");
  EXPECT_EQ(j["candidate"]["path"], "/runs/r2/model.h5");
  EXPECT_EQ(j["candidate"]["accuracy"], 0.375);
  EXPECT_EQ(j["candidate"]["loss"], 0.5);
  EXPECT_EQ(j["candidate"]["samples"], 1000);
  EXPECT_EQ(j["candidate"]["param_sha256"], "aa11");
  EXPECT_EQ(j["candidate"]["class_accuracy"], json({0.3, 0.45}));
  EXPECT_TRUE(j.contains("champion"));
  EXPECT_TRUE(j["champion"].is_null());

  const ModelEval champion = withClasses(evalOf(0.5, 0.75, "/registry/m/versions/v1/model.h5"), {50, 50}, {100, 100});
  const ModelEval better = withClasses(evalOf(0.75, 0.5), {75, 75}, {100, 100});
  const Verdict second = judge(checks, better, &champion);
  const json k = second.toJson();
  EXPECT_EQ(k["decision"], "pass");
  EXPECT_EQ(k["failed"], json::array());
  EXPECT_EQ(k["checks"].size(), 10u);
  EXPECT_EQ(k["champion"]["path"], "/registry/m/versions/v1/model.h5");
  EXPECT_EQ(k["champion"]["accuracy"], 0.5);
}

// verdict.json is read back as the Verdict that wrote it (the scheduler publishes from it).
TEST(GateVerdict, RoundTripsThroughJson) {
  const auto checks = makeChecks(allOn(), {28, 28}, 10);
  const ModelEval champion = withClasses(evalOf(0.5, 0.75, "/registry/m/versions/v1/model.h5"), {50, 50}, {100, 100});
  ModelEval cand = withClasses(evalOf(0.375, 0.5, "/runs/r2/model.h5"), {30, 45}, {100, 100});
  cand.device = "cpu";
  Verdict v = judge(checks, cand, &champion);
  v.holdout = {"/data/holdout", "/root/data/abc.h5"};
  v.holdoutId = std::string(64, 'c');
  v.holdoutRows = 12000;
  v.config = "/etc/sched.cfg";
  ASSERT_FALSE(v.passed);
  const Verdict back = Verdict::fromJson(json::parse(v.toJson().dump(2)), "RUN/verdict.json");
  EXPECT_EQ(back.toJson(), v.toJson());
  EXPECT_FALSE(back.passed);
  EXPECT_EQ(back.failed(), v.failed());
  EXPECT_EQ(back.candidate.metrics, cand.metrics);
  ASSERT_TRUE(back.champion.has_value());
  EXPECT_EQ(back.champion->metrics, champion.metrics);
  EXPECT_EQ(back.champion->path, champion.path);
  EXPECT_EQ(back.holdout, v.holdout);
  EXPECT_EQ(back.holdoutId, std::string(64, 'c'));
  EXPECT_EQ(back.holdoutRows, 12000);
  EXPECT_EQ(back.device, "cpu");
  // A verdict written before the holdout's identity was recorded still reads, without it.
  json old = v.toJson();
  old.erase("holdout_id");
  old.erase("holdout_rows");
  const Verdict older = Verdict::fromJson(old, "RUN/verdict.json");
  EXPECT_EQ(older.holdoutId, "");
  EXPECT_EQ(older.holdoutRows, 0);

  // A regression candidate keeps its regression metrics; the first model has no champion.
  ModelEval reg = evalOf(-1, 0.25, "/runs/r3/model.h5");
  reg.metrics.regression = true;
  reg.metrics.mse = 0.25;
  reg.metrics.mae = 0.5;
  reg.metrics.r2 = 0.75;
  const Verdict first = judge(makeChecks(GateConfig{}, {}, 0), reg, nullptr);
  const Verdict firstBack = Verdict::fromJson(first.toJson(), "v");
  EXPECT_EQ(firstBack.candidate.metrics, reg.metrics);
  EXPECT_EQ(firstBack.toJson()["candidate"]["r2"], 0.75);
  EXPECT_FALSE(firstBack.champion.has_value());
}

TEST(GateVerdict, FromJsonRefusesWhatIsNotAVerdict) {
  const auto expectRefused = [](const json& j, const std::string& message) {
    try {
      Verdict::fromJson(j, "RUN/verdict.json");
      ADD_FAILURE() << "read " << j.dump();
    } catch (const DataError& e) {
      EXPECT_EQ(std::string(e.what()), message);
    }
  };
  const json candidate{{"path", "m.h5"}, {"accuracy", 0.5}, {"loss", 1.0}};
  expectRefused(json::array(), "RUN/verdict.json: not a JSON object");
  expectRefused({{"decision", "maybe"}, {"checks", json::array()}, {"candidate", candidate}},
                "RUN/verdict.json: 'decision' must be \"pass\" or \"reject\" (got \"maybe\")");
  expectRefused({{"decision", "reject"}, {"checks", json::array()}, {"candidate", candidate}},
                "RUN/verdict.json: 'decision' \"reject\" disagrees with its checks");
  expectRefused({{"decision", "pass"}, {"checks", json::array()}},
                "RUN/verdict.json: 'candidate' is missing");
  expectRefused({{"decision", "pass"}, {"checks", json::array()}, {"candidate", {{"path", "m.h5"}, {"loss", 1.0}}}},
                "RUN/verdict.json: candidate: 'accuracy' is missing");
  expectRefused({{"decision", "pass"}, {"checks", json::array()}, {"candidate", candidate}, {"holdout_id", 7}},
                "RUN/verdict.json: 'holdout_id' must be a string");
  expectRefused({{"decision", "pass"}, {"checks", json::array()}, {"candidate", candidate}, {"holdout_rows", -1}},
                "RUN/verdict.json: 'holdout_rows' must be a non-negative integer");
}

// Verdict::read: none for a file that is not there; DataError naming the file for one that is
// not JSON or does not fit, whatever the field's type.
TEST(GateVerdict, ReadNamesTheFileThatDoesNotRead) {
  TempDir tmp;
  const std::string path = tmp.path() + "/verdict.json";
  EXPECT_FALSE(Verdict::read(path).has_value());

  const Verdict first = judge(makeChecks(GateConfig{}, {}, 0), evalOf(0.5, 0.75, "m.h5"), nullptr);
  writeText(path, first.toJson().dump());
  const std::optional<Verdict> back = Verdict::read(path);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->toJson(), first.toJson());

  writeText(path, "{\"decision\": \"pa");
  EXPECT_EQ(messageOf<DataError>([&] { Verdict::read(path); }), path + ": not JSON");
  json wrongType = first.toJson();
  wrongType["checks"][0]["detail"] = 7;  // a number where the gate writes text
  writeText(path, wrongType.dump());
  EXPECT_EQ(messageOf<DataError>([&] { Verdict::read(path); }).rfind(path + ": ", 0), 0u);
}

// ---------------------------------------------------------------------------------------------
// loadGateConfig

TEST(GateConfigFile, DefaultsWithAnEmptyPath) {
  const GateConfig g = loadGateConfig("");
  const GateConfig d;
  EXPECT_EQ(g.source, "");
  EXPECT_EQ(g.minAccuracy, d.minAccuracy);
  EXPECT_EQ(g.maxLoss, d.maxLoss);
  EXPECT_EQ(g.maxAccuracyDrop, 0.005);
  EXPECT_EQ(g.maxAccuracyDropRel, -1);
  EXPECT_EQ(g.maxLossIncrease, -1);
  EXPECT_EQ(g.maxLossIncreaseRel, -1);
  EXPECT_EQ(g.maxClassDrop, 0.05);
  EXPECT_EQ(g.minClassSamples, 20);
  EXPECT_EQ(g.minImprovement, 0);
  EXPECT_EQ(g.newestShards, 0);
}

TEST(GateConfigFile, ReadsTheGateSectionAndIgnoresOthers) {
  TempDir tmp;
  const std::string file = tmp.path() + "/sched.ini";
  writeText(file,
            "[train]\nconfig = x\n\n"
            "[gate]\n"
            "min_accuracy = 0.8\n"
            "max_loss = 1.5\n"
            "max_accuracy_drop = -1\n"
            "max_accuracy_drop_rel = 0.02\n"
            "max_loss_increase = 0.1\n"
            "max_loss_increase_rel = 0.2\n"
            "max_class_drop = 0.1\n"
            "min_class_samples = 5\n"
            "min_improvement = 0.001\n"
            "newest_shards = 3\n"
            "\n[sched]\npoll_s = 7\nsomething_else = y\n");
  const GateConfig g = loadGateConfig(file);
  EXPECT_EQ(g.source, file);
  EXPECT_EQ(g.minAccuracy, 0.8);
  EXPECT_EQ(g.maxLoss, 1.5);
  EXPECT_EQ(g.maxAccuracyDrop, -1);
  EXPECT_EQ(g.maxAccuracyDropRel, 0.02);
  EXPECT_EQ(g.maxLossIncrease, 0.1);
  EXPECT_EQ(g.maxLossIncreaseRel, 0.2);
  EXPECT_EQ(g.maxClassDrop, 0.1);
  EXPECT_EQ(g.minClassSamples, 5);
  EXPECT_EQ(g.minImprovement, 0.001);
  EXPECT_EQ(g.newestShards, 3);

  // Keys left out keep their defaults.
  writeText(file, "[train]\nconfig = x\n[gate]\nmin_accuracy = 0.5\n");
  const GateConfig h = loadGateConfig(file);
  EXPECT_EQ(h.minAccuracy, 0.5);
  EXPECT_EQ(h.maxAccuracyDrop, 0.005);
  EXPECT_EQ(h.maxClassDrop, 0.05);
  EXPECT_EQ(h.minClassSamples, 20);
}

TEST(GateConfigFile, BadKeysAndValuesNameTheFileAndTheKey) {
  TempDir tmp;
  const std::string file = tmp.path() + "/gate.ini";
  const std::vector<std::pair<std::string, std::string>> cases{
      {"min_acuracy = 0.8", "gate.min_acuracy"},       // unknown key
      {"max_class_drop = 2", "gate.max_class_drop"},   // out of range
      {"min_accuracy = abc", "gate.min_accuracy"},     // not a number
      {"min_accuracy = 1.5", "gate.min_accuracy"},
      {"max_accuracy_drop = -0.5", "gate.max_accuracy_drop"},
      {"max_loss = -1", "gate.max_loss"},
      {"max_loss = nan", "gate.max_loss"},
      {"max_loss_increase = -0.5", "gate.max_loss_increase"},
      {"max_loss_increase_rel = -2", "gate.max_loss_increase_rel"},
      {"min_class_samples = 0", "gate.min_class_samples"},
      {"min_class_samples = 2.5", "gate.min_class_samples"},
      {"min_improvement = -1", "gate.min_improvement"},
      {"newest_shards = -1", "gate.newest_shards"},
  };
  for (const auto& [line, key] : cases) {
    SCOPED_TRACE(line);
    writeText(file, "[train]\nconfig = x\n[gate]\n" + line + "\n");
    const std::string msg = messageOf<ConfigError>([&] { loadGateConfig(file); });
    EXPECT_CONTAINS(msg, file);
    EXPECT_CONTAINS(msg, key);
  }
}

TEST(GateConfigFile, MissingFileIsAConfigError) {
  TempDir tmp;
  const std::string file = tmp.path() + "/absent.ini";
  EXPECT_CONTAINS(messageOf<ConfigError>([&] { loadGateConfig(file); }), file);
}

// ---------------------------------------------------------------------------------------------
// Registry

PublishRequest requestFor(const std::string& name, const std::string& weights, const std::string& runId,
                          double accuracy = 0.9) {
  PublishRequest r;
  r.name = name;
  r.weights = weights;
  r.runId = runId;
  r.spec = {{"model", "mlp"}, {"dataset", "fashion-mnist"}};
  r.lineage = {{"shards", {"s1", "s2"}}, {"warm_from", nullptr}};
  r.metrics = {{"accuracy", accuracy}, {"loss", 0.3}};
  r.verdict = {{"decision", "pass"}};
  return r;
}

bool readOnly(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return false;
  return (st.st_mode & 0222) == 0;
}

class RegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/registry";
    weights_ = tmp_.path() + "/model.h5";
    writeText(weights_, std::string("\x89HDF\r\n\x1a\n", 8) + "not really HDF5 but any bytes will do\n");
  }
  std::string publish(Registry& reg, const std::string& runId, const std::string& name = "m") {
    return reg.publish(requestFor(name, weights_, runId));
  }
  std::string versionsDir(const std::string& name = "m") const { return root_ + "/" + name + "/versions"; }
  std::vector<std::string> entriesOf(const std::string& dir) const {
    std::vector<std::string> out;
    for (const auto& e : stdfs::directory_iterator(dir)) out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }

  TempDir tmp_;
  std::string root_, weights_;
};

TEST_F(RegistryTest, CheckNameRefusesNamesThatEscapeOrConfuse) {
  const std::vector<std::string> bad{"../x", "a/b", "a\\b", "x\ny", "", ".hidden", "-x", "..", ".",
                                     "a..b", "tab\there", std::string(101, 'a'), std::string("nul\0x", 5), "del\x7f"};
  for (const auto& name : bad) {
    SCOPED_TRACE("name: '" + name + "'");
    const std::string msg = messageOf<ConfigError>([&] { Registry::checkName("model name", name); });
    EXPECT_EQ(msg.rfind("model name '", 0), 0u) << msg;
  }
  const std::vector<std::string> good{"fashion-mnist_v2.1", "v1", "champion", "a", std::string(100, 'a')};
  for (const auto& name : good) {
    EXPECT_NO_THROW(Registry::checkName("model name", name)) << name;
  }
}

TEST_F(RegistryTest, PublishWritesAReadOnlyVersion) {
  Registry reg(root_);
  EXPECT_EQ(reg.dir(), root_);
  EXPECT_TRUE(reg.models().empty());
  EXPECT_EQ(publish(reg, "r000001"), "v1");
  const std::string v1 = versionsDir() + "/v1";
  EXPECT_EQ(entriesOf(v1), (std::vector<std::string>{"files.json", "lineage.json", "metrics.json", "model.h5",
                                                     "spec.json", "verdict.json"}));
  for (const auto& f : entriesOf(v1)) EXPECT_TRUE(readOnly(v1 + "/" + f)) << f;

  EXPECT_EQ(readText(v1 + "/model.h5"), readText(weights_));
  EXPECT_EQ(readJsonFile(v1 + "/spec.json"), json({{"model", "mlp"}, {"dataset", "fashion-mnist"}}));
  EXPECT_EQ(readJsonFile(v1 + "/metrics.json"), json({{"accuracy", 0.9}, {"loss", 0.3}}));
  EXPECT_EQ(readJsonFile(v1 + "/verdict.json"), json({{"decision", "pass"}}));
  const json lineage = readJsonFile(v1 + "/lineage.json");
  EXPECT_EQ(lineage["run_id"], "r000001");
  EXPECT_EQ(lineage["model"], "m");
  EXPECT_EQ(lineage["version"], "v1");
  EXPECT_EQ(lineage["shards"], json({"s1", "s2"}));
  const json files = readJsonFile(v1 + "/files.json");
  EXPECT_EQ(files.size(), 5u);
  for (const char* f : {"model.h5", "spec.json", "lineage.json", "metrics.json", "verdict.json"}) {
    ASSERT_TRUE(files.contains(f)) << f;
    EXPECT_EQ(files[f].get<std::string>().size(), 64u) << f;
  }
  EXPECT_EQ(reg.models(), (std::vector<std::string>{"m"}));
  EXPECT_EQ(reg.versions("m"), (std::vector<std::string>{"v1"}));
  EXPECT_TRUE(reg.aliases("m").empty());  // publishing promotes nothing

  EXPECT_EQ(publish(reg, "r000002"), "v2");
  EXPECT_EQ(reg.versions("m"), (std::vector<std::string>{"v1", "v2"}));
  EXPECT_EQ(readJsonFile(versionsDir() + "/v2/lineage.json")["version"], "v2");
}

TEST_F(RegistryTest, PublishIsIdempotentPerRun) {
  Registry reg(root_);
  EXPECT_EQ(publish(reg, "r1"), "v1");
  EXPECT_EQ(publish(reg, "r2"), "v2");
  EXPECT_EQ(publish(reg, "r1"), "v1");
  EXPECT_EQ(publish(reg, "r2"), "v2");
  EXPECT_EQ(reg.versions("m"), (std::vector<std::string>{"v1", "v2"}));
  EXPECT_EQ(entriesOf(versionsDir()), (std::vector<std::string>{"v1", "v2"}));
  // Without a run id every publish is a new version.
  EXPECT_EQ(publish(reg, ""), "v3");
  EXPECT_EQ(publish(reg, ""), "v4");
}

TEST_F(RegistryTest, VersionsAreInNumericOrderAndModelsAreSeparate) {
  Registry reg(root_);
  for (int i = 1; i <= 10; ++i) EXPECT_EQ(publish(reg, "r" + std::to_string(i)), "v" + std::to_string(i));
  EXPECT_EQ(reg.versions("m"), (std::vector<std::string>{"v1", "v2", "v3", "v4", "v5", "v6", "v7", "v8", "v9", "v10"}));
  EXPECT_EQ(publish(reg, "r1", "other"), "v1");
  EXPECT_EQ(reg.models(), (std::vector<std::string>{"m", "other"}));
  EXPECT_TRUE(reg.versions("absent").empty());
  EXPECT_THROW(reg.versions("../m"), ConfigError);
}

TEST_F(RegistryTest, PublishRefusesBadNames) {
  Registry reg(root_);
  EXPECT_THROW(reg.publish(requestFor("../escape", weights_, "r1")), ConfigError);
  EXPECT_THROW(reg.publish(requestFor(".hidden", weights_, "r1")), ConfigError);
  EXPECT_FALSE(stdfs::exists(tmp_.path() + "/escape"));
  EXPECT_TRUE(reg.models().empty());
}

TEST_F(RegistryTest, PromoteMovesChampionAndPrevious) {
  Registry reg(root_);
  publish(reg, "r1");
  publish(reg, "r2");
  EXPECT_EQ(reg.promote("m", "v1", "first"), std::nullopt);
  EXPECT_EQ(reg.aliases("m"), json({{"champion", "v1"}}));
  EXPECT_EQ(reg.promote("m", "v2", "better"), std::optional<std::string>("v1"));
  EXPECT_EQ(reg.aliases("m"), json({{"champion", "v2"}, {"previous", "v1"}}));
  EXPECT_EQ(readJsonFile(root_ + "/m/aliases.json"), json({{"champion", "v2"}, {"previous", "v1"}}));
  EXPECT_EQ(reg.alias("m", "champion"), std::optional<std::string>("v2"));
  EXPECT_EQ(reg.alias("m", "previous"), std::optional<std::string>("v1"));
  EXPECT_EQ(reg.alias("m", "latest"), std::nullopt);

  // Promoting the champion again changes nothing (no history entry either).
  const size_t entries = countLines(root_ + "/m/history.jsonl");
  EXPECT_EQ(entries, 2u);
  EXPECT_EQ(reg.promote("m", "v2", "again"), std::optional<std::string>("v2"));
  EXPECT_EQ(reg.aliases("m"), json({{"champion", "v2"}, {"previous", "v1"}}));
  EXPECT_EQ(countLines(root_ + "/m/history.jsonl"), entries);

  std::ifstream in(root_ + "/m/history.jsonl");
  std::string line;
  ASSERT_TRUE(std::getline(in, line));
  const json e1 = json::parse(line);
  EXPECT_EQ(e1["action"], "promote");
  EXPECT_TRUE(e1["from"].is_null());
  EXPECT_EQ(e1["to"], "v1");
  EXPECT_EQ(e1["reason"], "first");
  ASSERT_TRUE(std::getline(in, line));
  const json e2 = json::parse(line);
  EXPECT_EQ(e2["from"], "v1");
  EXPECT_EQ(e2["to"], "v2");
  EXPECT_EQ(e2["reason"], "better");
}

// A promotion whose history entry cannot be written (a full disk; here RLIMIT_FSIZE a few bytes
// past the end of the file, so the line is written in part) moves no alias and leaves no torn
// line: the file is as before, and the next promotion's entry follows the last complete one.
TEST_F(RegistryTest, AFailedHistoryAppendMovesNoAliasAndLeavesNoTornLine) {
  Registry reg(root_);
  publish(reg, "r1");
  publish(reg, "r2");
  reg.promote("m", "v1", "first");
  const std::string history = root_ + "/m/history.jsonl";
  const auto before = stdfs::file_size(history);
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  struct rlimit low = old;
  low.rlim_cur = static_cast<rlim_t>(before + 10);
  auto handler = std::signal(SIGXFSZ, SIG_IGN);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &low), 0);
  bool threw = false;
  try {
    reg.promote("m", "v2", "second");
  } catch (const IoError&) {
    threw = true;
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, handler);
  EXPECT_TRUE(threw) << "a failed history append must fail the promotion";
  EXPECT_EQ(stdfs::file_size(history), before);
  EXPECT_EQ(reg.alias("m", "champion"), std::optional<std::string>("v1"));

  EXPECT_EQ(reg.promote("m", "v2", "second"), std::optional<std::string>("v1"));
  std::ifstream in(history);
  size_t lines = 0;
  for (std::string line; std::getline(in, line); ++lines) EXPECT_TRUE(json::accept(line)) << line;
  EXPECT_EQ(lines, 2u);
}

TEST_F(RegistryTest, PromoteRefusesUnknownVersionsAndBadNames) {
  Registry reg(root_);
  publish(reg, "r1");
  EXPECT_THROW(reg.promote("m", "v2", "x"), ConfigError);
  EXPECT_THROW(reg.promote("m", "../v1", "x"), ConfigError);
  EXPECT_THROW(reg.promote("../m", "v1", "x"), ConfigError);
  EXPECT_TRUE(reg.aliases("m").empty());
}

TEST_F(RegistryTest, RollbackRestoresThePreviousChampions) {
  Registry reg(root_);
  for (const char* run : {"r1", "r2", "r3"}) publish(reg, run);
  reg.promote("m", "v1", "p1");
  reg.promote("m", "v2", "p2");
  reg.promote("m", "v3", "p3");
  EXPECT_EQ(reg.aliases("m"), json({{"champion", "v3"}, {"previous", "v2"}}));

  EXPECT_EQ(reg.rollback("m", "v3 is bad"), "v2");
  EXPECT_EQ(reg.aliases("m"), json({{"champion", "v2"}, {"previous", "v1"}}));
  EXPECT_EQ(reg.rollback("m", "v2 is bad too"), "v1");
  EXPECT_EQ(reg.aliases("m"), json({{"champion", "v1"}}));
  EXPECT_CONTAINS(messageOf<ConfigError>([&] { reg.rollback("m", "again"); }), "no previous champion");
  EXPECT_EQ(reg.aliases("m"), json({{"champion", "v1"}}));

  std::ifstream in(root_ + "/m/history.jsonl");
  std::vector<json> entries;
  for (std::string line; std::getline(in, line);) entries.push_back(json::parse(line));
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(entries[3]["action"], "rollback");
  EXPECT_EQ(entries[3]["from"], "v3");
  EXPECT_EQ(entries[3]["to"], "v2");
  EXPECT_EQ(entries[3]["reason"], "v3 is bad");
  EXPECT_EQ(entries[4]["to"], "v1");
}

// history(): every promotion and rollback, oldest first, as the registry wrote them; a torn
// line is skipped and a field of another type reads as absent.
TEST_F(RegistryTest, HistoryListsPromotionsAndRollbacks) {
  Registry reg(root_);
  EXPECT_TRUE(reg.history("m").empty());
  for (const char* run : {"r1", "r2"}) publish(reg, run);
  reg.promote("m", "v1", "first");
  reg.promote("m", "v2", "better");
  reg.rollback("m", "v2 is bad");
  std::vector<HistoryEntry> h = reg.history("m");
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h[0].action, "promote");
  EXPECT_EQ(h[0].from, "");
  EXPECT_EQ(h[0].to, "v1");
  EXPECT_EQ(h[0].reason, "first");
  ASSERT_TRUE(h[0].at.has_value());
  EXPECT_NEAR(*h[0].at, static_cast<double>(::time(nullptr)), 60);
  EXPECT_EQ(h[1].from, "v1");
  EXPECT_EQ(h[1].to, "v2");
  EXPECT_EQ(h[2].action, "rollback");
  EXPECT_EQ(h[2].from, "v2");
  EXPECT_EQ(h[2].to, "v1");
  EXPECT_EQ(h[2].reason, "v2 is bad");

  {
    std::ofstream out(root_ + "/m/history.jsonl", std::ios::app);
    out << "{\"action\":\"promote\",\"to\":5,\"from\":null,\"reason\":[],\"at\":\"noon\"}\n";
    out << "[]\n\n{\"action\":\"prom";
  }
  h = reg.history("m");
  ASSERT_EQ(h.size(), 4u);
  EXPECT_EQ(h[3].action, "promote");
  EXPECT_EQ(h[3].to, "");
  EXPECT_EQ(h[3].reason, "");
  EXPECT_FALSE(h[3].at.has_value());
  EXPECT_THROW(reg.history("../m"), ConfigError);
}

TEST_F(RegistryTest, RollbackWithNoPreviousThrows) {
  Registry reg(root_);
  EXPECT_THROW(reg.rollback("m", "nothing published"), ConfigError);
  publish(reg, "r1");
  EXPECT_THROW(reg.rollback("m", "nothing promoted"), ConfigError);
  reg.promote("m", "v1", "first");
  EXPECT_THROW(reg.rollback("m", "only one champion so far"), ConfigError);
  EXPECT_EQ(reg.aliases("m"), json({{"champion", "v1"}}));
  EXPECT_THROW(reg.rollback("../m", "bad name"), ConfigError);
}

TEST_F(RegistryTest, Resolve) {
  Registry reg(root_);
  publish(reg, "r1");
  publish(reg, "r2");
  EXPECT_EQ(reg.resolve("m", "v1"), "v1");
  EXPECT_EQ(reg.resolve("m", "v2"), "v2");
  EXPECT_CONTAINS(messageOf<ConfigError>([&] { reg.resolve("m", "champion"); }), "champion");
  reg.promote("m", "v1", "p");
  reg.promote("m", "v2", "p");
  EXPECT_EQ(reg.resolve("m", "champion"), "v2");
  EXPECT_EQ(reg.resolve("m", "previous"), "v1");

  EXPECT_CONTAINS(messageOf<ConfigError>([&] { reg.resolve("m", "v7"); }), "no version v7");
  EXPECT_THROW(reg.resolve("m", "v0"), ConfigError);
  EXPECT_THROW(reg.resolve("m", "latest"), ConfigError);
  EXPECT_THROW(reg.resolve("absent", "v1"), ConfigError);
  const std::vector<std::string> badVersions{"../v1", "v1/../v2", "a/b", ".hidden", "", "x\ny"};
  for (const auto& bad : badVersions) {
    EXPECT_THROW(reg.resolve("m", bad), ConfigError) << bad;
  }
  EXPECT_THROW(reg.resolve("../m", "v1"), ConfigError);
  EXPECT_THROW(reg.resolve("", "v1"), ConfigError);
}

// A version number with more digits than a version may have is a ConfigError, not an escape of
// std::out_of_range.
TEST_F(RegistryTest, ResolveOfAHugeVersionNumberIsAConfigError) {
  Registry reg(root_);
  publish(reg, "r1");
  EXPECT_THROW(reg.resolve("m", "v99999999999999999999"), ConfigError);
}

TEST_F(RegistryTest, ShowListsMetadataAndAliases) {
  Registry reg(root_);
  for (const char* run : {"r1", "r2", "r3"}) publish(reg, run);
  reg.promote("m", "v1", "p");
  reg.promote("m", "v2", "p");

  const VersionInfo v2 = reg.show("m", "champion");
  EXPECT_EQ(v2.name, "m");
  EXPECT_EQ(v2.version, "v2");
  EXPECT_EQ(v2.dir, versionsDir() + "/v2");
  EXPECT_EQ(v2.aliases, (std::vector<std::string>{"champion"}));
  EXPECT_EQ(v2.lineage["run_id"], "r2");
  EXPECT_EQ(v2.metrics["accuracy"], 0.9);
  EXPECT_EQ(v2.spec["model"], "mlp");
  EXPECT_EQ(v2.verdict["decision"], "pass");

  EXPECT_EQ(reg.show("m", "v1").aliases, (std::vector<std::string>{"previous"}));
  EXPECT_TRUE(reg.show("m", "v3").aliases.empty());
  EXPECT_THROW(reg.show("m", "v4"), ConfigError);
}

TEST_F(RegistryTest, VerifyFindsNothingWrongWithAFreshVersion) {
  Registry reg(root_);
  publish(reg, "r1");
  EXPECT_TRUE(reg.verify("m", "v1").empty());
  reg.promote("m", "v1", "p");
  EXPECT_TRUE(reg.verify("m", "champion").empty());
}

TEST_F(RegistryTest, VerifyReportsAModifiedFile) {
  Registry reg(root_);
  publish(reg, "r1");
  const std::string model = versionsDir() + "/v1/model.h5";
  ASSERT_EQ(::chmod(model.c_str(), 0644), 0);
  std::vector<std::string> problems = reg.verify("m", "v1");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_CONTAINS(problems[0], model);
  EXPECT_CONTAINS(problems[0], "writable");

  std::string bytes = readText(model);
  bytes[10] = static_cast<char>(bytes[10] ^ 0x01);
  writeText(model, bytes);
  problems = reg.verify("m", "v1");
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_CONTAINS(problems[1], model);
  EXPECT_CONTAINS(problems[1], "differs from files.json");

  // Read-only again but still altered.
  ASSERT_EQ(::chmod(model.c_str(), 0444), 0);
  problems = reg.verify("m", "v1");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_CONTAINS(problems[0], "differs from files.json");
}

TEST_F(RegistryTest, VerifyReportsAMissingFile) {
  Registry reg(root_);
  publish(reg, "r1");
  const std::string metrics = versionsDir() + "/v1/metrics.json";
  ASSERT_TRUE(stdfs::remove(metrics));
  const auto problems = reg.verify("m", "v1");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_CONTAINS(problems[0], metrics);
  EXPECT_CONTAINS(problems[0], "missing");

  // Without files.json nothing can be verified: that is the one problem reported.
  ASSERT_TRUE(stdfs::remove(versionsDir() + "/v1/files.json"));
  const auto none = reg.verify("m", "v1");
  ASSERT_EQ(none.size(), 1u);
  EXPECT_CONTAINS(none[0], "files.json");
}

// What makes a champion unusable (issue 17, point 11): damage() judges content, not modes.
TEST_F(RegistryTest, DamageReportsContentThatCannotBeUsedAndNotPermissions) {
  Registry reg(root_);
  publish(reg, "r1");
  EXPECT_TRUE(reg.damage("m", "v1").empty());
  const std::string lineage = versionsDir() + "/v1/lineage.json";
  ASSERT_EQ(::chmod(lineage.c_str(), 0644), 0);
  EXPECT_TRUE(reg.damage("m", "v1").empty()) << "a writable file is still intact";
  EXPECT_EQ(reg.verify("m", "v1").size(), 1u);
  writeText(lineage, "{\"run_id\": \"r1\"");  // truncated
  auto problems = reg.damage("m", "v1");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_CONTAINS(problems[0], lineage);
  EXPECT_CONTAINS(problems[0], "differs from files.json");
  // files.json rewritten to match: the JSON itself is judged.
  const std::string files = versionsDir() + "/v1/files.json";
  ASSERT_EQ(::chmod(files.c_str(), 0644), 0);
  nlohmann::json f = nlohmann::json::parse(readText(files));
  f["lineage.json"] = toHex(sha256File(lineage));
  writeText(files, f.dump());
  problems = reg.damage("m", "v1");
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_CONTAINS(problems[0], "not valid JSON");
  EXPECT_FALSE(reg.damage("m", "v7").empty()) << "a version that does not exist";
}

TEST_F(RegistryTest, ADamagedVersionDoesNotStopPublishing) {
  Registry reg(root_);
  publish(reg, "r1");
  const std::string lineage = versionsDir() + "/v1/lineage.json";
  ASSERT_EQ(::chmod(lineage.c_str(), 0644), 0);
  writeText(lineage, "\xff not json");
  EXPECT_EQ(publish(reg, "r2"), "v2");
  EXPECT_EQ(publish(reg, "r2"), "v2") << "still idempotent per run";
}

TEST_F(RegistryTest, ExportCopiesTheFilesAndRefusesAnExistingDestination) {
  Registry reg(root_);
  publish(reg, "r1");
  reg.promote("m", "v1", "p");
  const std::string out = tmp_.path() + "/export/m-v1";
  reg.exportTo("m", "champion", out);
  const std::string src = versionsDir() + "/v1";
  EXPECT_EQ(entriesOf(out), entriesOf(src));
  for (const auto& f : entriesOf(src)) EXPECT_EQ(readText(out + "/" + f), readText(src + "/" + f)) << f;

  EXPECT_CONTAINS(messageOf<ConfigError>([&] { reg.exportTo("m", "v1", out); }), "already exists");
  const std::string emptyDir = tmp_.path() + "/empty";
  stdfs::create_directories(emptyDir);
  EXPECT_THROW(reg.exportTo("m", "v1", emptyDir), ConfigError);
  EXPECT_TRUE(stdfs::is_empty(emptyDir));
  EXPECT_THROW(reg.exportTo("m", "v2", tmp_.path() + "/nope"), ConfigError);
  EXPECT_FALSE(stdfs::exists(tmp_.path() + "/nope"));
}

TEST_F(RegistryTest, CrashAfterFilesWrittenLeavesNoVersion) {
  Registry reg(root_);
  {
    fault::ScopedHandler faults([](const std::string& step) {
      if (step == "publish-files-written") throw std::runtime_error("injected at " + step);
    });
    EXPECT_THROW(publish(reg, "r1"), std::runtime_error);
  }
  EXPECT_TRUE(reg.versions("m").empty());
  const auto left = entriesOf(versionsDir());
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].rfind(".tmp-", 0), 0u) << left[0];

  // The next publish (a restarted scheduler) removes the leftover and publishes v1 complete.
  Registry again(root_);
  EXPECT_EQ(publish(again, "r1"), "v1");
  EXPECT_EQ(entriesOf(versionsDir()), (std::vector<std::string>{"v1"}));
  EXPECT_TRUE(again.verify("m", "v1").empty());
}

TEST_F(RegistryTest, CrashAfterRenameLeavesACompleteVersion) {
  Registry reg(root_);
  std::vector<std::string> steps;
  {
    fault::ScopedHandler faults([&](const std::string& step) {
      steps.push_back(step);
      if (step == "publish-renamed") throw std::runtime_error("injected at " + step);
    });
    EXPECT_THROW(publish(reg, "r1"), std::runtime_error);
  }
  EXPECT_EQ(steps, (std::vector<std::string>{"publish-files-written", "publish-renamed"}));
  EXPECT_EQ(reg.versions("m"), (std::vector<std::string>{"v1"}));
  EXPECT_EQ(entriesOf(versionsDir()), (std::vector<std::string>{"v1"}));
  EXPECT_TRUE(reg.verify("m", "v1").empty());

  // Publishing the same run again finds it.
  Registry again(root_);
  EXPECT_EQ(publish(again, "r1"), "v1");
  EXPECT_EQ(publish(again, "r2"), "v2");
}

TEST_F(RegistryTest, ConcurrentPublishesGetDistinctVersions) {
  for (int round = 0; round < 5; ++round) {
    const std::string name = "m" + std::to_string(round);
    Registry a(root_), b(root_);
    std::string va, vb;
    std::thread ta([&] { va = publish(a, "ra", name); });
    std::thread tb([&] { vb = publish(b, "rb", name); });
    ta.join();
    tb.join();
    EXPECT_EQ((std::set<std::string>{va, vb}), (std::set<std::string>{"v1", "v2"})) << va << " " << vb;
    EXPECT_EQ(a.versions(name), (std::vector<std::string>{"v1", "v2"}));
    EXPECT_EQ(a.show(name, va).lineage["run_id"], "ra");
    EXPECT_EQ(a.show(name, vb).lineage["run_id"], "rb");
    EXPECT_TRUE(a.verify(name, "v1").empty());
    EXPECT_TRUE(a.verify(name, "v2").empty());
  }
}

// ---------------------------------------------------------------------------------------------
// runOnPromote

class OnPromoteTest : public ::testing::Test {
 protected:
  TempDir tmp_;
  std::string log() const { return tmp_.path() + "/on_promote.log"; }
  // A hand-built version, as show() would return it (lineage and metrics are JSON objects).
  VersionInfo version(const std::string& name = "m") const {
    VersionInfo v;
    v.name = name;
    v.version = "v1";
    v.dir = tmp_.path() + "/v1";
    v.spec = v.lineage = v.metrics = v.verdict = json::object();
    return v;
  }
};

TEST_F(OnPromoteTest, PassesTheVersionInTheEnvironment) {
  const std::string weights = tmp_.path() + "/w.h5";
  writeText(weights, "weights");
  Registry reg(tmp_.path() + "/registry");
  reg.publish(requestFor("m", weights, "r000042", 0.875));
  reg.publish(requestFor("m", weights, "r000043", 0.875));
  const VersionInfo v = reg.show("m", "v2");

  EXPECT_EQ(runOnPromote({"/usr/bin/env"}, v, "v1", log(), 30), 0);
  const std::string out = readText(log());
  EXPECT_CONTAINS(out, "PERENNIAL_MODEL=m\n");
  EXPECT_CONTAINS(out, "PERENNIAL_VERSION=v2\n");
  EXPECT_CONTAINS(out, "PERENNIAL_VERSION_DIR=" + v.dir + "\n");
  EXPECT_CONTAINS(out, "PERENNIAL_WEIGHTS=" + v.dir + "/model.h5\n");
  EXPECT_CONTAINS(out, "PERENNIAL_PREVIOUS=v1\n");
  EXPECT_CONTAINS(out, "PERENNIAL_RUN=r000043\n");
  EXPECT_CONTAINS(out, "PERENNIAL_ACCURACY=0.875\n");
  EXPECT_TRUE(stdfs::is_regular_file(v.dir + "/model.h5"));
}

TEST_F(OnPromoteTest, ReturnsTheExitStatusAndAppendsToTheLog) {
  const VersionInfo v = version();
  EXPECT_EQ(runOnPromote({"/bin/false"}, v, "", log(), 30), 1);
  EXPECT_EQ(runOnPromote({"/usr/bin/printenv", "PERENNIAL_VERSION"}, v, "", log(), 0), 0);
  EXPECT_EQ(runOnPromote({"/usr/bin/printenv", "PERENNIAL_MODEL"}, v, "", log(), 0), 0);
  EXPECT_EQ(readText(log()), "v1\nm\n");
  // Without metrics there is no accuracy; printenv exits 1 for an unset variable.
  EXPECT_EQ(runOnPromote({"/usr/bin/printenv", "PERENNIAL_ACCURACY"}, v, "", log(), 30), 1);
}

TEST_F(OnPromoteTest, AMissingProgramThrowsIoError) {
  const VersionInfo v = version();
  const std::string program = tmp_.path() + "/no-such-hook";
  const std::string msg = messageOf<IoError>([&] { runOnPromote({program}, v, "", log(), 30); });
  EXPECT_CONTAINS(msg, program);
  EXPECT_CONTAINS(msg, "cannot start");
}

TEST_F(OnPromoteTest, ATimeoutGives124) {
  const VersionInfo v = version();
  EXPECT_EQ(runOnPromote({"/bin/sleep", "30"}, v, "", log(), 0.2), 124);
}

TEST_F(OnPromoteTest, ValuesArePassedVerbatimWithoutAShell) {
  const std::string pwned = tmp_.path() + "/pwned";
  VersionInfo v = version("m;touch " + pwned);
  v.dir = tmp_.path() + "/a b$(touch " + pwned + ")`touch " + pwned + "` ; touch " + pwned;
  EXPECT_EQ(runOnPromote({"/usr/bin/printenv", "PERENNIAL_VERSION_DIR"}, v, "", log(), 30), 0);
  EXPECT_EQ(runOnPromote({"/usr/bin/printenv", "PERENNIAL_MODEL"}, v, "", log(), 30), 0);
  EXPECT_EQ(readText(log()), v.dir + "\n" + v.name + "\n");
  EXPECT_FALSE(stdfs::exists(pwned));
}

// A VersionInfo without lineage or metrics (built by hand) still runs the hook, with an empty
// PERENNIAL_RUN.
TEST_F(OnPromoteTest, AVersionWithoutMetadataRunsTheHook) {
  VersionInfo v;
  v.name = "m";
  v.version = "v1";
  v.dir = tmp_.path() + "/v1";
  EXPECT_EQ(runOnPromote({"/usr/bin/printenv", "PERENNIAL_VERSION"}, v, "", log(), 30), 0);
  EXPECT_EQ(readText(log()), "v1\n");
}

}  // namespace
}  // namespace perennial::sched
