#include "trainer/train_plan.h"

#include "common/error.h"

namespace perennial {

TrainPlan planTraining(const TrainConfig& c, const data::DatasetSpec& spec, const data::DatasetSpec& test,
                       int64_t trainRows, int world) {
  if (!(test.featureShape == spec.featureShape) || test.numClasses != spec.numClasses ||
      test.featureType != spec.featureType || test.targetType != spec.targetType) {
    throw ConfigError("data.test: " + c.testDir + " has a different feature shape, dtype, task or class count than data.train " +
                      c.trainDir);
  }
  TrainPlan plan;
  // checkpoint.keep_best must name a metric this task measures.
  plan.keepBest = c.ckptKeepBest;
  if (plan.keepBest == "auto") plan.keepBest = spec.regression() ? "test_loss" : "test_accuracy";
  if ((plan.keepBest == "test_accuracy" && spec.regression()) || (plan.keepBest == "test_r2" && !spec.regression())) {
    throw ConfigError("checkpoint.keep_best: " + plan.keepBest + " is not measured for " +
                      (spec.regression() ? "regression (use test_loss or test_r2)" : "classification (use test_accuracy or test_loss)"));
  }
  plan.localBatch = c.batchSize;
  plan.perStep = plan.localBatch * c.gradAccum;
  plan.globalBatch = plan.perStep * world;
  // Each rank's share of an epoch (DistributedSampler::samplesPerRank) in whole steps.
  plan.stepsPerEpoch = (trainRows / world) / plan.perStep;
  if (plan.stepsPerEpoch == 0) {
    throw ConfigError("train.batch_size: " + std::to_string(plan.localBatch) + " x train.grad_accum " +
                      std::to_string(c.gradAccum) + " x world size " + std::to_string(world) +
                      " exceeds the " + std::to_string(trainRows) + " training samples");
  }
  plan.scheduleSteps = c.epochs * plan.stepsPerEpoch;
  plan.lossScale = static_cast<double>(c.gradAccum) * static_cast<double>(world);
  return plan;
}

}  // namespace perennial
