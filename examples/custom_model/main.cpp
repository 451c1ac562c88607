// A program of your own that trains a model of your own with Perennial: it registers a residual
// MLP under the name "resmlp" and then runs the whole `perennial` command line with it, so
//
//   mpirun -np 2 ./custom_model train --config ... --model.arch resmlp --model.options
//   width=64,depth=3
//
// trains it data-parallel, `./custom_model eval` evaluates its model.h5, and `./custom_model sched
// run` retrains it continuously (the scheduler starts its runs and evaluations as this same
// executable). See README.md.
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "cli/run_cli.h"
#include "common/error.h"
#include "trainer/models/model_factory.h"

namespace {

// x + fc2(relu(fc1(layer_norm(x)))): a pre-norm residual block of constant width.
struct ResidualBlockImpl : torch::nn::Module {
  explicit ResidualBlockImpl(int64_t width)
      : norm(register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({width})))),
        fc1(register_module("fc1", torch::nn::Linear(width, width))),
        fc2(register_module("fc2", torch::nn::Linear(width, width))) {}

  torch::Tensor forward(const torch::Tensor& x) { return x + fc2(torch::relu(fc1(norm(x)))); }

  torch::nn::LayerNorm norm;
  torch::nn::Linear fc1, fc2;
};
TORCH_MODULE(ResidualBlock);

// Flatten, Linear(inputs, width), ReLU, `depth` residual blocks, Linear(width, outputs).
// Parameters are named as PyTorch's state_dict would name the same Python module (stem.weight,
// blocks.0.fc1.weight, ..., head.bias), which is how checkpoints and model.h5 store them.
struct ResMlpImpl : torch::nn::Module {
  ResMlpImpl(int64_t inputs, int64_t width, int64_t depth, int64_t outputs)
      : stem(register_module("stem", torch::nn::Linear(inputs, width))),
        blocks(register_module("blocks", torch::nn::ModuleList())),
        head(register_module("head", torch::nn::Linear(width, outputs))) {
    for (int64_t i = 0; i < depth; ++i) blocks->push_back(ResidualBlock(width));
  }

  torch::Tensor forward(const torch::Tensor& x) {
    torch::Tensor h = torch::relu(stem(x.flatten(1)));
    for (const auto& block : *blocks) h = block->as<ResidualBlock>()->forward(h);
    return head(h);
  }

  torch::nn::Linear stem;
  torch::nn::ModuleList blocks;
  torch::nn::Linear head;
};
TORCH_MODULE(ResMlp);

// The builder: reads its settings from model.options ("width=64, depth=3"). Perennial refuses a
// model.options key no builder read, and optionInt() a value that is not an integer; the ranges
// are this model's to check. A ConfigError makes the command exit with status 2.
perennial::Model buildResMlp(const perennial::TrainConfig& config,
                             const perennial::ModelInput& input) {
  const int64_t width = config.optionInt("width", 128);
  const int64_t depth = config.optionInt("depth", 2);
  if (width < 1 || width > 65536) {
    throw perennial::ConfigError("model.options: width must be in [1, 65536] (got " +
                                 std::to_string(width) + ")");
  }
  if (depth < 0 || depth > 64) {
    throw perennial::ConfigError("model.options: depth must be in [0, 64] (got " +
                                 std::to_string(depth) + ")");
  }
  int64_t inputs = 1;
  for (int64_t d : input.featureShape) inputs *= d;  // one sample: [28, 28] images, [F] table rows
  return perennial::wrapModule(ResMlp(inputs, width, depth, input.outputs));
}

}  // namespace

int main(int argc, char** argv) {
  perennial::registerModel("resmlp", buildResMlp);
  return perennial::runCli(argc, argv);
}
