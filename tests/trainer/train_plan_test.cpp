// planTraining() (trainer/train_plan.h): the checks that need the data, with the key in each
// message, and the step arithmetic, without ranks or a model.
#include "trainer/train_plan.h"

#include <gtest/gtest.h>

#include <string>

#include "common/error.h"
#include "dataset/shard_validator.h"

namespace perennial {
namespace {

std::string refusal(const TrainConfig& c, const data::DatasetSpec& train, const data::DatasetSpec& test,
                    int64_t rows, int world) {
  try {
    planTraining(c, train, test, rows, world);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "accepted";
}

TEST(TrainPlan, StepArithmeticFollowsBatchAccumulationAndWorld) {
  const data::DatasetSpec spec = data::DatasetRules::fashionMnistSpec();
  TrainConfig c;
  c.batchSize = 64;
  c.gradAccum = 2;
  c.epochs = 3;
  const TrainPlan p = planTraining(c, spec, spec, 60000, 2);
  EXPECT_EQ(p.perStep, 128);
  EXPECT_EQ(p.globalBatch, 256);
  EXPECT_EQ(p.stepsPerEpoch, 30000 / 128);  // each rank's 30,000 samples in whole steps
  EXPECT_EQ(p.scheduleSteps, 3 * (30000 / 128));
  EXPECT_DOUBLE_EQ(p.lossScale, 4.0);
  EXPECT_EQ(p.keepBest, c.ckptKeepBest == "auto" ? "test_accuracy" : c.ckptKeepBest);
}

TEST(TrainPlan, RefusesWhatDoesNotFitTheDataNamingTheKey) {
  const data::DatasetSpec spec = data::DatasetRules::fashionMnistSpec();
  TrainConfig c;
  c.trainDir = "T";
  c.testDir = "E";
  c.batchSize = 64;
  EXPECT_EQ(refusal(c, spec, spec, 100, 2), "train.batch_size: 64 x train.grad_accum 1 x world size 2 exceeds the 100 training samples");
  data::DatasetSpec other = spec;
  other.numClasses = 5;
  EXPECT_EQ(refusal(c, spec, other, 60000, 1),
            "data.test: E has a different feature shape, dtype, task or class count than data.train T");
  data::DatasetSpec values = spec;
  values.targetType = DType::kFloat32;
  values.numClasses = 0;
  c.ckptKeepBest = "test_accuracy";
  EXPECT_NE(refusal(c, values, values, 60000, 1).find("checkpoint.keep_best: test_accuracy is not measured for regression"),
            std::string::npos);
  c.ckptKeepBest = "auto";
  EXPECT_EQ(planTraining(c, values, values, 60000, 1).keepBest, "test_loss");
  c.ckptKeepBest = "test_r2";
  EXPECT_NE(refusal(c, spec, spec, 60000, 1).find("checkpoint.keep_best: test_r2 is not measured for classification"),
            std::string::npos);
}

}  // namespace
}  // namespace perennial
