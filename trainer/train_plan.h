#pragma once
// planTraining(): the checks of a training configuration that need the data (the test set fits
// the training set, checkpoint.keep_best names a metric of this task, a global batch fits the
// training set) and the step arithmetic that follows from them. A pure function: train() calls
// it once the shards are open, before any model is built, and its tests need no ranks.
#include <cstdint>
#include <string>

#include "dataset/shard_dataset.h"
#include "trainer/config/train_config.h"

namespace perennial {

struct TrainPlan {
  std::string keepBest;       // checkpoint.keep_best resolved (auto: test_accuracy or test_loss)
  int64_t localBatch = 0;     // samples per rank per micro-batch (train.batch_size)
  int64_t perStep = 0;        // samples per rank per optimizer step (x train.grad_accum)
  int64_t globalBatch = 0;    // samples per optimizer step, all ranks
  int64_t stepsPerEpoch = 0;  // at this world size
  // The learning-rate schedule's length: all epochs (train.max_steps only stops early, so a run
  // stopped by it and resumed follows the same learning rates as one that never stopped).
  int64_t scheduleSteps = 0;
  // NOTE [Prescaled gradients]: the loss is divided by micro-batches x world size.
  double lossScale = 1;
};

// Throws ConfigError naming the key (data.test, checkpoint.keep_best, train.batch_size) when
// CONFIG does not fit the data: TRAIN_ROWS rows of TRAIN, evaluated on TEST, by WORLD ranks.
TrainPlan planTraining(const TrainConfig& config, const data::DatasetSpec& train, const data::DatasetSpec& test,
                       int64_t trainRows, int world);

}  // namespace perennial
