// The trainer's result types (trainer/results.h): JSON round trips, for classification and
// regression, and the messages for documents that do not fit.
#include <gtest/gtest.h>

#include "common/error.h"
#include "trainer/results.h"

namespace perennial {
namespace {
using nlohmann::json;

EvalMetrics classification() {
  EvalMetrics m;
  m.accuracy = 0.875;
  m.loss = 0.3125;
  m.samples = 200;
  m.nonFiniteOutputs = 1;
  m.classCorrect = {90, 85};
  m.classTotal = {100, 100};
  return m;
}

EvalMetrics regression() {
  EvalMetrics m;
  m.regression = true;
  m.accuracy = -1;
  m.loss = 0.25;
  m.mse = 0.25;
  m.mae = 0.375;
  m.r2 = 0.9375;
  m.samples = 64;
  return m;
}

TrainResult resultWith(const EvalMetrics& test) {
  TrainResult r;
  r.test = test;
  r.epochs = 3;
  r.steps = 1500;
  r.samplesSeen = 96000;
  r.worldSize = 2;
  r.nodes = 2;
  r.hosts = {"node1", "node2"};
  r.globalBatch = 64;
  r.samplesPerSecond = 51234.5;
  r.trainSeconds = 1.875;
  r.wallSeconds = 2.5;
  r.paramSha256 = std::string(64, 'a');
  r.configSha256 = std::string(64, 'b');
  r.dataSnapshot = std::string(64, 'c');
  r.resumedFrom = "checkpoints/ckpt-0000000750.h5";
  r.arch = "mlp";
  r.parameters = 203530;
  r.commBackend = "mpi";
  r.device = "cpu";
  r.deterministic = true;
  r.perennialVersion = "0.1.0";
  r.stepTimeMs = {{"forward", 0.5}, {"backward", 0.75}, {"reduce", 0.125}};
  return r;
}

void expectSameResult(const TrainResult& a, const TrainResult& b) {
  // Per-class counts are not part of result.json; everything else is.
  EXPECT_EQ(a.test.regression, b.test.regression);
  EXPECT_EQ(a.test.accuracy, b.test.accuracy);
  EXPECT_EQ(a.test.loss, b.test.loss);
  EXPECT_EQ(a.test.mse, b.test.mse);
  EXPECT_EQ(a.test.mae, b.test.mae);
  EXPECT_EQ(a.test.r2, b.test.r2);
  EXPECT_EQ(a.test.samples, b.test.samples);
  EXPECT_EQ(a.epochs, b.epochs);
  EXPECT_EQ(a.steps, b.steps);
  EXPECT_EQ(a.samplesSeen, b.samplesSeen);
  EXPECT_EQ(a.worldSize, b.worldSize);
  EXPECT_EQ(a.nodes, b.nodes);
  EXPECT_EQ(a.hosts, b.hosts);
  EXPECT_EQ(a.globalBatch, b.globalBatch);
  EXPECT_EQ(a.samplesPerSecond, b.samplesPerSecond);
  EXPECT_EQ(a.trainSeconds, b.trainSeconds);
  EXPECT_EQ(a.wallSeconds, b.wallSeconds);
  EXPECT_EQ(a.paramSha256, b.paramSha256);
  EXPECT_EQ(a.configSha256, b.configSha256);
  EXPECT_EQ(a.dataSnapshot, b.dataSnapshot);
  EXPECT_EQ(a.resumedFrom, b.resumedFrom);
  EXPECT_EQ(a.model, b.model);
  EXPECT_EQ(a.arch, b.arch);
  EXPECT_EQ(a.parameters, b.parameters);
  EXPECT_EQ(a.commBackend, b.commBackend);
  EXPECT_EQ(a.device, b.device);
  EXPECT_EQ(a.deterministic, b.deterministic);
  EXPECT_EQ(a.perennialVersion, b.perennialVersion);
  EXPECT_EQ(a.stepTimeMs, b.stepTimeMs);
}

TEST(EvalMetrics, ClassificationRoundTrips) {
  const EvalMetrics m = classification();
  const json j = m.toJson();
  EXPECT_EQ(j["task"], "classification");
  EXPECT_EQ(j["class_accuracy"], json({0.9, 0.85}));
  EXPECT_FALSE(j.contains("mse"));
  EXPECT_EQ(EvalMetrics::fromJson(j, "eval.json"), m);
  EXPECT_EQ(EvalMetrics::fromJson(json::parse(j.dump()), "eval.json"), m) << "through text";
}

TEST(EvalMetrics, RegressionRoundTrips) {
  const EvalMetrics m = regression();
  const json j = m.toJson();
  EXPECT_EQ(j["task"], "regression");
  EXPECT_EQ(j["r2"], 0.9375);
  EXPECT_EQ(EvalMetrics::fromJson(j, "eval.json"), m);
}

TEST(EvalMetrics, TestMetricsNameTheTasksMetrics) {
  EXPECT_EQ(classification().testMetrics(), (std::map<std::string, double>{{"test_accuracy", 0.875}, {"test_loss", 0.3125}}));
  EXPECT_EQ(regression().testMetrics(),
            (std::map<std::string, double>{{"test_loss", 0.25}, {"test_mse", 0.25}, {"test_mae", 0.375}, {"test_r2", 0.9375}}));
}

TEST(EvalMetrics, CountsFollowFromOlderDocumentsAccuracies) {
  // Verdicts written before class_correct existed carry only the per-class accuracies.
  const json old{{"accuracy", 0.875}, {"loss", 0.5}, {"samples", 200}, {"class_accuracy", {0.9, 0.85}},
                 {"class_samples", {100, 100}}};
  const EvalMetrics m = EvalMetrics::fromJson(old, "verdict.json");
  EXPECT_EQ(m.classCorrect, (std::vector<int64_t>{90, 85}));
}

TEST(EvalMetrics, DocumentsThatDoNotFitNameTheFileAndTheField) {
  try {
    EvalMetrics::fromJson(json{{"accuracy", "high"}, {"loss", 0.5}}, "x/eval.json");
    FAIL() << "a string accuracy was read";
  } catch (const DataError& e) {
    EXPECT_STREQ(e.what(), "x/eval.json: 'accuracy' must be a number (got \"high\")");
  }
  EXPECT_THROW(EvalMetrics::fromJson(json{{"task", "ranking"}, {"accuracy", 1}, {"loss", 0}}, "e"), DataError);
  EXPECT_THROW(EvalMetrics::fromJson(json{{"task", "regression"}, {"accuracy", -1}, {"loss", 0}}, "e"), DataError)
      << "a regression without its metrics";
  EXPECT_THROW(EvalMetrics::fromJson(json{{"accuracy", 1}, {"loss", 0}, {"class_samples", {1, 2}}, {"class_correct", {1}}},
                                     "e"),
               DataError);
  EXPECT_THROW(EvalMetrics::fromJson(json::array(), "e"), DataError);
}

TEST(TrainResult, ClassificationRoundTrips) {
  const TrainResult r = resultWith(classification());
  const json j = r.toJson();
  // The names result.json has always used.
  for (const char* key : {"test_accuracy", "test_loss", "task", "epochs", "steps", "samples_seen", "world_size", "nodes", "hosts",
                          "global_batch", "samples_per_second", "train_seconds", "wall_seconds", "param_sha256",
                          "config_sha256", "data_snapshot", "resumed_from", "model", "arch", "parameters",
                          "comm_backend", "device", "deterministic", "step_time_ms", "perennial_version"}) {
    EXPECT_TRUE(j.contains(key)) << key;
  }
  EXPECT_FALSE(j.contains("test_r2"));
  TrainResult back = TrainResult::parse(j.dump(2), "RUN/result.json");
  EXPECT_FALSE(back.preempted);
  expectSameResult(back, r);
}

TEST(TrainResult, RegressionRoundTrips) {
  const TrainResult r = resultWith(regression());
  const json j = r.toJson();
  EXPECT_EQ(j["task"], "regression");
  EXPECT_FALSE(j.contains("test_accuracy"));
  EXPECT_EQ(j["test_r2"], 0.9375);
  expectSameResult(TrainResult::fromJson(j, "RUN/result.json"), r);
}

TEST(TrainResult, OnlyWhatReadersActOnIsRequired) {
  const TrainResult r =
      TrainResult::fromJson(json{{"test_accuracy", 0.5}, {"test_loss", 1.0}, {"param_sha256", "p"}}, "old/result.json");
  EXPECT_EQ(r.test.accuracy, 0.5);
  EXPECT_EQ(r.worldSize, 1);
  EXPECT_EQ(r.nodes, 1);
  EXPECT_TRUE(r.hosts.empty());
  EXPECT_EQ(r.model, "model.h5");
  try {
    TrainResult::fromJson(json{{"test_accuracy", 0.5}, {"test_loss", 1.0}}, "RUN/result.json");
    FAIL() << "a result without param_sha256 was read";
  } catch (const DataError& e) {
    EXPECT_STREQ(e.what(), "RUN/result.json: 'param_sha256' is missing");
  }
  EXPECT_THROW(TrainResult::fromJson(json{{"test_accuracy", 0.5}, {"test_loss", 1.0}, {"param_sha256", "p"},
                                          {"steps", "many"}},
                                     "r"),
               DataError)
      << "an optional field of the wrong type";
  for (const json& hosts : {json("node1"), json{"node1", 2}}) {
    try {
      TrainResult::fromJson(json{{"test_accuracy", 0.5}, {"test_loss", 1.0}, {"param_sha256", "p"}, {"hosts", hosts}},
                            "RUN/result.json");
      FAIL() << "hosts " << hosts.dump() << " was read";
    } catch (const DataError& e) {
      EXPECT_STREQ(e.what(), "RUN/result.json: 'hosts' must be an array of host names");
    }
  }
  EXPECT_THROW(TrainResult::parse("{\"test_accuracy\": 0.5", "RUN/result.json"), DataError);
  EXPECT_THROW(TrainResult::parse("", "RUN/result.json"), DataError);
}

}  // namespace
}  // namespace perennial
