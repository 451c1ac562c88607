#pragma once
// Built-in models, as torch::nn::Sequential so that parameter names are the ones PyTorch's
// state_dict gives the same nn.Sequential in Python ("1.weight", "1.bias", ...).
//
// mlp:  Flatten, then per hidden size h: Linear(prev, h), ReLU[, Dropout]; Linear(prev, classes)
// cnn:  Unflatten(1, {1, H}) (for [N, H, W] images), then per channel count c:
//       Conv2d(prev, c, k, padding k/2), ReLU, MaxPool2d(2); Flatten; then per fc size h:
//       [Dropout,] Linear(prev, h), ReLU; [Dropout,] Linear(prev, classes)
// Input: float32 [N, ...feature_shape]; output: logits [N, classes].
#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <vector>

#include "trainer/config/train_config.h"

namespace perennial {

struct ModelInput {
  std::vector<int64_t> featureShape;
  int64_t numClasses;
};

// Throws ConfigError when the architecture does not fit the input (for example more pooling
// stages than the image size allows).
torch::nn::Sequential makeModel(const TrainConfig& config, const ModelInput& input);

}  // namespace perennial
