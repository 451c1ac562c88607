#include "trainer/models/model_factory.h"

#include <torch/torch.h>

#include "common/dtype.h"
#include "common/error.h"

namespace perennial {
namespace {

torch::nn::Sequential makeMlp(const TrainConfig& c, const ModelInput& in) {
  torch::nn::Sequential net;
  net->push_back(torch::nn::Flatten());
  int64_t prev = shapeElements(in.featureShape);
  for (int64_t h : c.hidden) {
    net->push_back(torch::nn::Linear(prev, h));
    net->push_back(torch::nn::ReLU());
    if (c.dropout > 0) net->push_back(torch::nn::Dropout(c.dropout));
    prev = h;
  }
  net->push_back(torch::nn::Linear(prev, in.numClasses));
  return net;
}

torch::nn::Sequential makeCnn(const TrainConfig& c, const ModelInput& in) {
  int64_t channels = 1, h = 0, w = 0;
  torch::nn::Sequential net;
  if (in.featureShape.size() == 2) {
    h = in.featureShape[0];
    w = in.featureShape[1];
    net->push_back(torch::nn::Unflatten(torch::nn::UnflattenOptions(1, {1, h})));
  } else if (in.featureShape.size() == 3) {
    channels = in.featureShape[0];
    h = in.featureShape[1];
    w = in.featureShape[2];
  } else {
    throw ConfigError("model.arch: cnn needs [H, W] or [C, H, W] features, the dataset has " +
                      std::to_string(in.featureShape.size()) + " dimensions");
  }
  for (int64_t out : c.convChannels) {
    if (h < 2 || w < 2) {
      throw ConfigError("model.conv_channels: " + std::to_string(c.convChannels.size()) +
                        " pooling stages shrink the " + std::to_string(in.featureShape.back()) +
                        "-pixel input below 1 pixel");
    }
    net->push_back(torch::nn::Conv2d(
        torch::nn::Conv2dOptions(channels, out, c.kernelSize).padding(c.kernelSize / 2)));
    net->push_back(torch::nn::ReLU());
    net->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2)));
    channels = out;
    h /= 2;
    w /= 2;
  }
  net->push_back(torch::nn::Flatten());
  int64_t prev = channels * h * w;
  for (int64_t f : c.fcHidden) {
    if (c.dropout > 0) net->push_back(torch::nn::Dropout(c.dropout));
    net->push_back(torch::nn::Linear(prev, f));
    net->push_back(torch::nn::ReLU());
    prev = f;
  }
  if (c.dropout > 0) net->push_back(torch::nn::Dropout(c.dropout));
  net->push_back(torch::nn::Linear(prev, in.numClasses));
  return net;
}

}  // namespace

torch::nn::Sequential makeModel(const TrainConfig& config, const ModelInput& input) {
  PERENNIAL_CHECK(input.numClasses >= 2, "numClasses " << input.numClasses);
  if (config.arch == "mlp") return makeMlp(config, input);
  if (config.arch == "cnn") return makeCnn(config, input);
  throw ConfigError("model.arch: unknown architecture '" + config.arch + "' (expected mlp or cnn)");
}

}  // namespace perennial
