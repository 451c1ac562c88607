#include "trainer/models/model_factory.h"

#include <torch/torch.h>

#include <algorithm>
#include <map>
#include <mutex>

#include "common/dtype.h"
#include "common/error.h"

namespace perennial {

Model makeTorchScriptModel(const TrainConfig& config, const ModelInput& input);  // torchscript.cpp

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
  net->push_back(torch::nn::Linear(prev, in.outputs));
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
  net->push_back(torch::nn::Linear(prev, in.outputs));
  return net;
}

struct Registry {
  std::mutex mu;
  std::map<std::string, ModelBuilder> builders;
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    reg->builders["mlp"] = [](const TrainConfig& c, const ModelInput& in) { return wrapModule(makeMlp(c, in)); };
    reg->builders["cnn"] = [](const TrainConfig& c, const ModelInput& in) { return wrapModule(makeCnn(c, in)); };
    reg->builders["torchscript"] = makeTorchScriptModel;
    return reg;
  }();
  return *r;
}

}  // namespace

void registerModel(const std::string& name, ModelBuilder builder) {
  if (!isValidModelName(name)) {
    throw ConfigError("registerModel: '" + name + "' is not a valid model name (" + kModelNameRule + ")");
  }
  if (!builder) throw ConfigError("registerModel: '" + name + "': the builder is empty");
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  if (!r.builders.emplace(name, std::move(builder)).second) {
    throw ConfigError("registerModel: a model named '" + name + "' is already registered");
  }
}

std::vector<std::string> registeredModels() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  std::vector<std::string> out;
  for (const auto& [name, builder] : r.builders) out.push_back(name);
  return out;
}

void requireRegisteredModel(const std::string& name) {
  const std::vector<std::string> names = registeredModels();
  if (std::find(names.begin(), names.end(), name) != names.end()) return;
  std::string known;
  for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
  throw ConfigError("model.arch: unknown architecture '" + name + "' (registered: " + known +
                    "; a program of your own can add more with perennial::registerModel)");
}

Model makeModel(const TrainConfig& config, const ModelInput& input) {
  PERENNIAL_CHECK(input.outputs >= 1, "outputs " << input.outputs);
  ModelBuilder builder;
  {
    Registry& r = registry();
    std::lock_guard<std::mutex> lock(r.mu);
    auto it = r.builders.find(config.arch);
    if (it != r.builders.end()) builder = it->second;
  }
  if (!builder) requireRegisteredModel(config.arch);
  TrainConfig tracked = config;  // records the model.options keys the builder reads
  tracked.optionsRead.clear();
  Model m = builder(tracked, input);
  if (!m.module || !m.forward) {
    throw ConfigError("model.arch: the builder of '" + config.arch + "' returned an empty model");
  }
  for (const auto& [key, value] : config.modelOptions) {
    if (tracked.optionsRead.count(key)) continue;
    std::string read;
    for (const auto& k : tracked.optionsRead) read += (read.empty() ? "" : ", ") + k;
    throw ConfigError("model.options: unknown key '" + key + "': model '" + config.arch + "' does not read it (" +
                      (read.empty() ? std::string("it reads no options") : "it reads: " + read) + ")");
  }
  return m;
}

}  // namespace perennial
