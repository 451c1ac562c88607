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
#include <iomanip>
#include <sstream>
#include <variant>

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

namespace {

template <size_t N>
std::string intList(const torch::ExpandingArray<N>& a) {
  std::string out = "[";
  for (size_t i = 0; i < N; ++i) out += (i ? ", " : "") + std::to_string((*a)[i]);
  return out + "]";
}

std::string realText(double v) {
  std::ostringstream os;
  os << std::setprecision(17) << v;
  std::string s = os.str();
  if (s.find_first_of(".e") == std::string::npos) s += ".0";
  return s;
}

torch::jit::Module scriptModule(const std::string& className) {
  torch::jit::Module m(c10::QualifiedName("__torch__.perennial." + className));
  m.register_attribute("training", c10::BoolType::get(), false);
  return m;
}

// Registers layer NAME of ROOT as a submodule with WEIGHT and BIAS (if defined) and returns how
// forward() names it.
std::string addLayer(torch::jit::Module& root, const std::string& name, const torch::Tensor& weight,
                     const torch::Tensor& bias) {
  torch::jit::Module layer = scriptModule("Layer" + name);
  auto copy = [](const torch::Tensor& t) { return t.detach().to(torch::kCPU).clone().requires_grad_(true); };
  layer.register_parameter("weight", copy(weight), /*is_buffer=*/false);
  if (bias.defined()) layer.register_parameter("bias", copy(bias), /*is_buffer=*/false);
  root.register_module(name, layer);
  return "getattr(self, \"" + name + "\")";
}

// NOTE [TorchScript export] for a torch::nn::Sequential; false with WHY_NOT for a layer it cannot
// translate.
bool scriptSequential(torch::nn::SequentialImpl& seq, torch::jit::Module& root, std::string* whyNot) {
  std::string body = "def forward(self, x: Tensor) -> Tensor:\n";
  for (const auto& child : seq.named_children()) {
    const std::string& name = child.key();
    torch::nn::Module& m = *child.value();
    std::string line;
    if (auto* l = m.as<torch::nn::Linear>()) {
      const std::string self = addLayer(root, name, l->weight, l->bias);
      line = "torch.linear(x, " + self + ".weight, " + (l->bias.defined() ? self + ".bias" : "None") + ")";
    } else if (auto* c = m.as<torch::nn::Conv2d>()) {
      const auto& o = c->options;
      // Unqualified: LibTorch 1.x has c10::variant, 2.x std::variant; lookup finds either.
      using std::get_if;
      using std::holds_alternative;
      const auto* padding = get_if<torch::ExpandingArray<2>>(&o.padding());
      if (!padding || !holds_alternative<torch::enumtype::kZeros>(o.padding_mode())) {
        *whyNot = "layer " + name + " (Conv2d) pads other than with zeros by a fixed amount";
        return false;
      }
      const std::string self = addLayer(root, name, c->weight, c->bias);
      line = "torch.conv2d(x, " + self + ".weight, " + (c->bias.defined() ? self + ".bias" : "None") + ", " +
             intList(o.stride()) + ", " + intList(*padding) + ", " + intList(o.dilation()) + ", " +
             std::to_string(o.groups()) + ")";
    } else if (m.as<torch::nn::ReLU>()) {
      line = "torch.relu(x)";
    } else if (auto* d = m.as<torch::nn::Dropout>()) {
      line = "torch.dropout(x, " + realText(d->options.p()) + ", self.training)";
    } else if (auto* f = m.as<torch::nn::Flatten>()) {
      line = "torch.flatten(x, " + std::to_string(f->options.start_dim()) + ", " + std::to_string(f->options.end_dim()) + ")";
    } else if (auto* u = m.as<torch::nn::Unflatten>()) {
      if (!u->options.dimname().empty()) {
        *whyNot = "layer " + name + " (Unflatten) uses a named dimension";
        return false;
      }
      std::string sizes = "[";
      for (size_t i = 0; i < u->options.sizes().size(); ++i) sizes += (i ? ", " : "") + std::to_string(u->options.sizes()[i]);
      line = "x.unflatten(" + std::to_string(u->options.dim()) + ", " + sizes + "])";
    } else if (auto* p = m.as<torch::nn::MaxPool2d>()) {
      const auto& o = p->options;
      line = "torch.max_pool2d(x, " + intList(o.kernel_size()) + ", " + intList(o.stride()) + ", " + intList(o.padding()) +
             ", " + intList(o.dilation()) + ", " + (o.ceil_mode() ? "True" : "False") + ")";
    } else {
      *whyNot = "layer " + name + " (" + m.name() + ") has no TorchScript translation";
      return false;
    }
    body += "    x = " + line + "\n";
  }
  root.define(body + "    return x\n");
  return true;
}

}  // namespace

bool saveAsTorchScript(const Model& model, const std::string& path, std::string* whyNot) {
  if (auto* scripted = dynamic_cast<ScriptedModule*>(model.module.get())) {
    // A copy through the serialised form, on the CPU. (Module::clone() is not used: the trained
    // parameters are views into the optimizer's flat buffers (NOTE [Fused optimizer]), and the
    // clone came out with its weights gone or flat, failing its first forward.) Each tensor is
    // then made compact, so the file holds each weight once, in its own shape.
    std::stringstream bytes;
    scripted->script().save(bytes);
    torch::jit::Module copy = torch::jit::load(bytes, torch::kCPU);
    {
      torch::NoGradGuard noGrad;
      for (const auto& p : copy.named_parameters(/*recurse=*/true)) {
        p.value.set_(p.value.detach().clone(torch::MemoryFormat::Contiguous));
      }
      for (const auto& b : copy.named_buffers(/*recurse=*/true)) {
        b.value.set_(b.value.detach().clone(torch::MemoryFormat::Contiguous));
      }
    }
    copy.eval();
    copy.save(path);
    return true;
  }
  auto* seq = dynamic_cast<torch::nn::SequentialImpl*>(model.module.get());
  if (!seq) {
    *whyNot = "the model is neither TorchScript nor a torch::nn::Sequential";
    return false;
  }
  torch::jit::Module root = scriptModule("Sequential");
  if (!scriptSequential(*seq, root, whyNot)) return false;
  root.save(path);
  return true;
}

}  // namespace perennial
