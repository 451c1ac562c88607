#pragma once
// Models the trainer can train, and the registry that names them (`model.arch`).
//
// A Model is a torch::nn::Module whose parameters and buffers carry the names PyTorch's
// state_dict gives the equivalent Python module, plus the function that runs it. Checkpoints,
// weights files, the gradient reducer and evaluation only ever use these two.
//
// Built in:
//   mlp:  Flatten, then per hidden size h: Linear(prev, h), ReLU[, Dropout]; Linear(prev, outputs)
//         (model.hidden empty: one Linear layer, i.e. a linear model)
//   cnn:  Unflatten(1, {1, H}) (for [N, H, W] images), then per channel count c:
//         Conv2d(prev, c, k, padding k/2), ReLU, MaxPool2d(2); Flatten; then per fc size h:
//         [Dropout,] Linear(prev, h), ReLU; [Dropout,] Linear(prev, outputs)
//   torchscript: the module saved by torch.jit.script(...).save(model.path)
// Your own: call registerModel("name", builder) before perennial::runCli() or train() (see
// examples/custom_model/). Input: float32 [N, ...feature_shape]; output: [N, outputs] (logits
// for classification; values for regression, where [N] is accepted too).
#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trainer/config/train_config.h"

namespace perennial {

struct ModelInput {
  std::vector<int64_t> featureShape;  // of one sample
  int64_t outputs = 0;                // classes (classification) or 1 (regression)
  bool regression = false;
};

struct Model {
  std::shared_ptr<torch::nn::Module> module;  // parameters and buffers, under state_dict names
  std::function<torch::Tensor(const torch::Tensor&)> forward;

  torch::nn::Module* operator->() const { return module.get(); }
  torch::nn::Module& operator*() const { return *module; }
};

// Wraps a module with a `torch::Tensor forward(torch::Tensor)` (a ModuleHolder such as
// torch::nn::Sequential, or a std::shared_ptr to your torch::nn::Module subclass).
template <class M>
Model wrapModule(std::shared_ptr<M> m) {
  return Model{m, [m](const torch::Tensor& x) -> torch::Tensor { return m->forward(x); }};
}
template <class Impl>
Model wrapModule(torch::nn::ModuleHolder<Impl> holder) {
  return wrapModule(holder.ptr());
}

// Builds a model for CONFIG (its model.* keys, including model.options) and the data's INPUT.
// Throw ConfigError naming the key when the configuration does not fit.
using ModelBuilder = std::function<Model(const TrainConfig& config, const ModelInput& input)>;

// Registers BUILDER under NAME (letters, digits, '_', '-'; not a built-in name). Throws
// ConfigError when the name is malformed or already registered. Thread-safe.
void registerModel(const std::string& name, ModelBuilder builder);

// Names of every model that makeModel() can build, sorted.
std::vector<std::string> registeredModels();

// Builds config.arch. Throws ConfigError for an unknown name (listing the known ones) or when
// the architecture does not fit the input (for example more pooling stages than the image
// size allows, or a TorchScript module whose output has the wrong shape).
Model makeModel(const TrainConfig& config, const ModelInput& input);

// NOTE [TorchScript export]: a trained model is handed over as TorchScript (model.pt), which
// PyTorch loads with torch.jit.load and LibTorch with torch::jit::load, with no Perennial code.
// saveAsTorchScript writes MODEL with its current weights to PATH, in eval mode, and returns true:
//  - a torchscript model: its scripted module as it is;
//  - a torch::nn::Sequential of Linear, Conv2d (zero padding), ReLU, Dropout, Flatten, Unflatten
//    and MaxPool2d layers (the built-in mlp and cnn): a module built in C++ whose forward() is
//    TorchScript source calling, layer by layer, the operators the C++ layers call (so its
//    outputs are the trainer's), with the parameters copied under their state_dict names
//    ("1.weight"), as trainable parameters (requires_grad).
// Any other model (a registered C++ module of another shape): writes nothing, returns false and
// says why in WHY_NOT. The module takes what the model takes: float32 [N, ...feature_shape],
// uint8 images scaled to [0, 1], standardised features when the run normalises them (the mean and
// standard deviation are in model.h5, docs/checkpoint-format.md).
bool saveAsTorchScript(const Model& model, const std::string& path, std::string* whyNot);

}  // namespace perennial
