// model.arch = torchscript: a module scripted in Python (torch.jit.script(m).save(path)),
// trained by the same loop as the built-in models.
//
// NOTE [TorchScript mirror]: the trainer, checkpoints and the gradient reducer work on a
// torch::nn::Module. The scripted module's parameters and buffers are registered on a tree of
// plain torch::nn::Modules that mirrors its submodules, so they keep their state_dict names
// ("fc1.weight", "body.0.bias") and share storage with the scripted module: the optimizer updates
// what forward() reads. train()/eval() are passed on to the scripted module (dropout, batch norm).
#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>

#include "common/error.h"
#include "trainer/models/model_factory.h"

namespace perennial {
namespace {

class ScriptedModule : public torch::nn::Module {
 public:
  explicit ScriptedModule(torch::jit::Module m) : script_(std::move(m)) { mirror(script_, *this); }

  void train(bool on = true) override {
    torch::nn::Module::train(on);
    script_.train(on);
  }

  // The scripted module's own tensor attributes move too (its parameters and buffers are the
  // mirror's, so moving them once moves both).
  using torch::nn::Module::to;
  void to(torch::Device device, bool nonBlocking = false) override {
    script_.to(device, nonBlocking);
    torch::nn::Module::to(device, nonBlocking);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    return script_.forward({x}).toTensor();
  }

  torch::jit::Module& script() { return script_; }

 private:
  static void mirror(const torch::jit::Module& from, torch::nn::Module& to) {
    for (const auto& p : from.named_parameters(/*recurse=*/false)) {
      to.register_parameter(p.name, p.value, p.value.requires_grad());
    }
    for (const auto& b : from.named_buffers(/*recurse=*/false)) to.register_buffer(b.name, b.value);
    for (const auto& child : from.named_children()) {
      auto sub = std::make_shared<torch::nn::Module>(child.name);
      mirror(child.value, *sub);
      to.register_module(child.name, sub);
    }
  }

  torch::jit::Module script_;
};

std::string shapeText(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

Model makeTorchScriptModel(const TrainConfig& c, const ModelInput& in) {
  if (c.modelPath.empty()) {
    throw ConfigError("model.path: required with model.arch = torchscript (a file saved by "
                      "torch.jit.script(module).save(path))");
  }
  if (!std::filesystem::is_regular_file(c.modelPath)) {
    throw ConfigError("model.path: " + c.modelPath + ": no such file");
  }
  torch::jit::Module script;
  try {
    script = torch::jit::load(c.modelPath, torch::kCPU);
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw ConfigError("model.path: " + c.modelPath + ": not a loadable TorchScript module (" +
                      what.substr(0, what.find('\n')) + ")");
  }
  for (const auto& p : script.named_parameters()) {
    if (p.value.scalar_type() != torch::kFloat32) {
      throw ConfigError("model.path: " + c.modelPath + ": parameter '" + p.name + "' is " +
                        std::string(c10::toString(p.value.scalar_type())) + "; float32 parameters are required");
    }
  }
  auto module = std::make_shared<ScriptedModule>(std::move(script));
  // One forward pass on a small zero batch: the module must take [N, ...feature_shape] float32
  // and give [N, outputs] (or [N] for regression). Errors here name the file, not a step.
  std::vector<int64_t> shape{2};
  shape.insert(shape.end(), in.featureShape.begin(), in.featureShape.end());
  torch::Tensor y;
  try {
    torch::NoGradGuard noGrad;
    module->eval();
    y = module->forward(torch::zeros(shape));
    module->train();
  } catch (const std::exception& e) {
    std::string what = e.what();
    throw ConfigError("model.path: " + c.modelPath + ": forward() on a float32 batch of shape " + shapeText(shape) +
                      " failed: " + what.substr(0, what.find('\n')));
  }
  const bool fits = (y.dim() == 2 && y.size(0) == 2 && y.size(1) == in.outputs) ||
                    (in.regression && in.outputs == 1 && y.dim() == 1 && y.size(0) == 2);
  if (!fits) {
    throw ConfigError("model.path: " + c.modelPath + ": forward() on " + shapeText(shape) + " returned " +
                      shapeText(y.sizes()) + "; the dataset needs [2, " + std::to_string(in.outputs) + "]" +
                      (in.regression ? " (one value per row)" : " (one logit per class)"));
  }
  Model m;
  m.module = module;
  m.forward = [module](const torch::Tensor& x) { return module->forward(x); };
  return m;
}

bool isTorchScript(const Model& model) {
  return dynamic_cast<ScriptedModule*>(model.module.get()) != nullptr;
}

void saveTorchScript(const Model& model, const std::string& path) {
  auto* s = dynamic_cast<ScriptedModule*>(model.module.get());
  PERENNIAL_CHECK(s != nullptr, "saveTorchScript: not a TorchScript model");
  s->script().save(path);
}

}  // namespace perennial
