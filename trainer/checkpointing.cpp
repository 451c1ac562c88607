#include "trainer/checkpointing.h"

#include <H5public.h>
#include <torch/torch.h>
#include <torch/version.h>

#include <cmath>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <mutex>

#include "checkpoint/checkpoint_store.h"
#include "common/error.h"
#include "common/sha256.h"
#include "perennial/build_config.h"
#include "trainer/checkpoint_staging.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/optim/optimizer_state.h"

namespace perennial {
namespace {

using checkpoint::Document;
using checkpoint::Group;
using checkpoint::Tensor;

// A document tensor over T. With COPY, over a fresh copy of T (one memcpy, no zero-fill), so
// training may change T while the copy is written; otherwise over T's own memory. A GPU tensor
// is always copied to host memory (once: that copy is fresh already).
Tensor toTensor(const std::string& name, const torch::Tensor& t, bool copy,
                std::vector<torch::Tensor>& keepAlive) {
  torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
  if (copy && t.is_cpu()) c = c.clone();
  Tensor out{name, toDType(c.scalar_type()), c.sizes().vec(), {}, c.data_ptr()};
  keepAlive.push_back(c);
  return out;
}

// Adds the Adam-family state S (Adam's or AdamW's, which have the same fields) through ADD.
template <class State, class Add>
void forEachAdamTensor(torch::optim::OptimizerParamState& base, const std::string& name, Add&& add) {
  auto& s = static_cast<State&>(base);
  add("step", name, torch::tensor({s.step()}, torch::kInt64));
  add("exp_avg", name, s.exp_avg());
  add("exp_avg_sq", name, s.exp_avg_sq());
  if (s.max_exp_avg_sq().defined()) add("max_exp_avg_sq", name, s.max_exp_avg_sq());
}

// Calls ADD(kind, parameter name, tensor) for each optimizer state tensor a checkpoint holds, in
// the order it lists them.
template <class Add>
void forEachOptimizerTensor(torch::nn::Module& model, torch::optim::Optimizer& optimizer, const std::string& name,
                            Add&& add) {
  auto& states = optimizer.state();
  for (const auto& item : model.named_parameters()) {
    auto it = states.find(optimizerStateKey(item.value()));
    if (it == states.end()) continue;
    if (name == "sgd") {
      auto& s = static_cast<torch::optim::SGDParamState&>(*it->second);
      if (s.momentum_buffer().defined()) add("momentum_buffer", item.key(), s.momentum_buffer());
    } else if (name == "adamw") {
      forEachAdamTensor<torch::optim::AdamWParamState>(*it->second, item.key(), add);
    } else {
      forEachAdamTensor<torch::optim::AdamParamState>(*it->second, item.key(), add);
    }
  }
}

c10::ScalarType scalarType(DType t) {
  switch (t) {
    case DType::kUInt8: return torch::kUInt8;
    case DType::kInt32: return torch::kInt32;
    case DType::kInt64: return torch::kInt64;
    case DType::kFloat32: return torch::kFloat32;
    case DType::kFloat64: return torch::kFloat64;
    case DType::kBFloat16: return torch::kBFloat16;
    case DType::kFloat16: return torch::kHalf;
  }
  return torch::kFloat32;
}

torch::Tensor fromTensor(const Tensor& t) {
  torch::Tensor out = torch::empty(t.shape, torch::TensorOptions().dtype(scalarType(t.type)));
  if (t.byteSize() > 0) std::memcpy(out.data_ptr(), t.data(), t.byteSize());
  return out;
}

}  // namespace

checkpoint::Group normalizationGroup(const std::vector<int64_t>& featureShape, const std::vector<float>& mean,
                                     const std::vector<float>& stdev) {
  PERENNIAL_CHECK(mean.size() == stdev.size() && static_cast<int64_t>(mean.size()) == shapeElements(featureShape),
                  "normalization of " << mean.size() << " values for " << shapeElements(featureShape) << " features");
  Group g{"normalization", {}};
  for (const auto& [name, values] : {std::pair<const char*, const std::vector<float>*>{"mean", &mean}, {"std", &stdev}}) {
    Tensor t{name, DType::kFloat32, featureShape, {}, nullptr};
    t.bytes.resize(values->size() * sizeof(float));
    std::memcpy(t.bytes.data(), values->data(), t.bytes.size());
    g.tensors.push_back(std::move(t));
  }
  return g;
}

std::pair<std::vector<float>, std::vector<float>> readNormalizationGroup(const checkpoint::Group& g,
                                                                         const std::string& source) {
  const Tensor* mean = g.find("mean");
  const Tensor* stdev = g.find("std");
  if (!mean || !stdev || mean->type != DType::kFloat32 || stdev->type != DType::kFloat32 ||
      mean->shape != stdev->shape) {
    throw DataError(source + ": group 'normalization' must hold float32 tensors 'mean' and 'std' of one shape");
  }
  std::vector<float> m(static_cast<size_t>(mean->elements())), s(m.size());
  std::memcpy(m.data(), mean->data(), mean->byteSize());
  std::memcpy(s.data(), stdev->data(), stdev->byteSize());
  for (float v : s) {
    if (!(v > 0) || !std::isfinite(v)) throw DataError(source + ": normalization/std holds a value that is not positive and finite");
  }
  for (float v : m) {
    if (!std::isfinite(v)) throw DataError(source + ": normalization/mean holds a value that is not finite");
  }
  return {m, s};
}

std::string paramSha256(torch::nn::Module& model) {
  Sha256 h;
  for (const auto& p : model.parameters()) {
    torch::Tensor t = p.detach().to(torch::kCPU).contiguous();
    h.update(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  }
  return toHex(h.finish());
}

std::vector<uint8_t> cpuGeneratorState() {
  torch::Tensor s = at::detail::getDefaultCPUGenerator().get_state();
  std::vector<uint8_t> out(static_cast<size_t>(s.numel()));
  std::memcpy(out.data(), s.data_ptr(), out.size());
  return out;
}

Document captureState(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                      const TrainProgress& progress, const CheckpointMeta& meta, bool copy,
                      StagingBuffers* staging) {
  Document doc;
  auto owners = std::make_shared<std::vector<torch::Tensor>>();
  doc.keepAlive = owners;
  auto& keep = *owners;
  const bool staged = copy && staging;
  auto capture = [&](const std::string& name, const torch::Tensor& t) {
    if (!staged) return toTensor(name, t, copy, keep);
    torch::Tensor c = staging->copy(t.detach());
    return Tensor{name, toDType(c.scalar_type()), c.sizes().vec(), {}, c.data_ptr()};
  };
  if (staged) {
    // NOTE [Staging buffers]: everything this capture copies, laid out in one buffer.
    size_t bytes = 0;
    for (const auto& t : model.parameters()) bytes += StagingBuffers::footprint(t);
    for (const auto& t : model.buffers()) bytes += StagingBuffers::footprint(t);
    forEachOptimizerTensor(model, optimizer, meta.optimizer, [&](const std::string&, const std::string&,
                                                                 const torch::Tensor& t) {
      bytes += StagingBuffers::footprint(t);
    });
    staging->begin(bytes);
  }
  doc.format = checkpoint::kCheckpointFormat;
  doc.formatVersion = checkpoint::kCheckpointFormatVersion;
  doc.strings = {{"arch", meta.arch},
                 {"config", meta.configText},
                 {"config_sha256", meta.configSha256},
                 {"param_sha256", meta.paramSha256},
                 {"optimizer.name", meta.optimizer},
                 {"data.snapshot", meta.dataSnapshot},
                 {"data.shards", meta.dataShards},
                 {"rng.sampler_algorithm", "mt19937_64-fisher-yates-interleaved-v1"},
                 {"versions.perennial", PERENNIAL_VERSION},
                 {"versions.libtorch", TORCH_VERSION},
                 {"versions.hdf5", std::to_string(H5_VERS_MAJOR) + "." + std::to_string(H5_VERS_MINOR) + "." +
                                       std::to_string(H5_VERS_RELEASE)}};
  doc.ints = {{"progress.epoch", progress.epoch},
              {"progress.step", progress.step},
              {"progress.sample_cursor", progress.cursor},
              {"progress.samples_seen", progress.samplesSeen},
              {"rng.sampler_seed", static_cast<int64_t>(meta.samplerSeed)},
              {"world.size", meta.worldSize},
              {"world.global_batch", meta.globalBatch},
              {"world.bucket_cap_bytes", static_cast<int64_t>(meta.bucketCapBytes)}};
  for (const auto& [name, value] : meta.metrics) doc.floats["metrics." + name] = value;

  Group state{"state_dict", {}};
  for (const auto& item : model.named_parameters()) state.tensors.push_back(capture(item.key(), item.value()));
  if (meta.paramSha256.empty()) {
    // Hash the parameters (the tensors just captured) while the writer writes them.
    std::vector<std::pair<const void*, size_t>> spans;
    for (const auto& t : state.tensors) spans.emplace_back(t.data(), t.byteSize());
    doc.strings.erase("param_sha256");
    doc.deferredStrings["param_sha256"] = [spans, owners] {
      Sha256 h;
      for (const auto& [p, n] : spans) h.update(p, n);
      return toHex(h.finish());
    };
  }
  for (const auto& item : model.named_buffers()) state.tensors.push_back(capture(item.key(), item.value()));
  doc.groups.push_back(std::move(state));

  // Optimizer state, one group per kind of buffer, tensors named by parameter.
  std::map<std::string, Group> opt;
  forEachOptimizerTensor(model, optimizer, meta.optimizer,
                         [&](const std::string& kind, const std::string& name, const torch::Tensor& t) {
                           auto& g = opt[kind];
                           g.path = "optimizer/" + kind;
                           g.tensors.push_back(capture(name, t));
                         });
  if (staged) staging->finish();
  for (auto& [kind, g] : opt) doc.groups.push_back(std::move(g));

  if (!meta.normMean.empty()) doc.groups.push_back(normalizationGroup(meta.featureShape, meta.normMean, meta.normStd));

  Group rng{"rng", {}};
  const int64_t per = meta.worldSize > 0 ? static_cast<int64_t>(meta.rngStates.size()) / meta.worldSize : 0;
  Tensor gen{"torch_cpu", DType::kUInt8, {meta.worldSize, per}, meta.rngStates, nullptr};
  rng.tensors.push_back(std::move(gen));
  if (!meta.deviceRngStates.empty() && meta.worldSize > 0) {
    const int64_t perDevice = static_cast<int64_t>(meta.deviceRngStates.size()) / meta.worldSize;
    rng.tensors.push_back(Tensor{"torch_cuda", DType::kUInt8, {meta.worldSize, perDevice}, meta.deviceRngStates, nullptr});
  }
  doc.groups.push_back(std::move(rng));

  Group world{"world", {}};
  std::vector<int64_t> layout;
  for (size_t b = 0; b < meta.buckets.size(); ++b) {
    for (const auto& e : meta.buckets[b].entries) {
      layout.insert(layout.end(), {static_cast<int64_t>(b), static_cast<int64_t>(e.param),
                                   static_cast<int64_t>(e.offset), static_cast<int64_t>(e.numel)});
    }
  }
  Tensor lt{"bucket_layout", DType::kInt64, {static_cast<int64_t>(layout.size() / 4), 4}, {}, nullptr};
  lt.bytes.resize(layout.size() * sizeof(int64_t));
  if (!layout.empty()) std::memcpy(lt.bytes.data(), layout.data(), lt.bytes.size());
  world.tensors.push_back(std::move(lt));
  doc.groups.push_back(std::move(world));
  return doc;
}

RestoredState restoreState(const Document& doc, const std::string& source, torch::nn::Module& model,
                           torch::optim::Optimizer& optimizer, const std::string& optimizerName, int rank,
                           int worldSize, const std::map<std::string, torch::Tensor>* preloaded) {
  const Group* state = doc.group("state_dict");
  if (!state) throw DataError(source + ": group 'state_dict' missing");
  torch::NoGradGuard noGrad;
  auto load = [&](const std::string& name, torch::Tensor& target) {
    const Tensor* t = state->find(name);
    if (!t) throw DataError(source + ": state_dict has no tensor '" + name + "' that the model needs");
    if (t->shape != target.sizes().vec() || scalarType(t->type) != target.scalar_type()) {
      throw DataError(source + ": tensor '" + name + "' has shape or type that does not fit the model");
    }
    // Unless it was read straight into the target; copy_ also reaches a GPU target.
    if (t->data() != target.data_ptr()) {
      target.copy_(torch::from_blob(const_cast<void*>(t->data()), t->shape, target.scalar_type()));
    }
  };
  size_t expected = 0;
  for (auto& item : model.named_parameters()) {
    load(item.key(), item.value());
    ++expected;
  }
  for (auto& item : model.named_buffers()) {
    load(item.key(), item.value());
    ++expected;
  }
  if (state->tensors.size() != expected) {
    throw DataError(source + ": state_dict has " + std::to_string(state->tensors.size()) + " tensors, the model " +
                    std::to_string(expected));
  }

  const std::string savedOpt = doc.str("optimizer.name", source);
  if (savedOpt != optimizerName) {
    throw DataError(source + ": optimizer state is for '" + savedOpt + "', the configuration uses '" + optimizerName + "'");
  }
  auto& states = optimizer.state();
  auto groupTensor = [&](const std::string& kind, const std::string& name) -> torch::Tensor {
    const Group* g = doc.group("optimizer/" + kind);
    const Tensor* t = g ? g->find(name) : nullptr;
    if (!t) return torch::Tensor();
    if (preloaded) {
      auto it = preloaded->find("optimizer/" + kind + "/" + name);
      if (it != preloaded->end() && it->second.data_ptr() == t->data()) return it->second;
    }
    return fromTensor(*t);
  };
  // Each optimizer buffer must exist where its kind needs it and match its parameter.
  auto need = [&](const std::string& kind, const std::string& name, const torch::Tensor& param) {
    torch::Tensor t = groupTensor(kind, name);
    if (!t.defined()) throw DataError(source + ": optimizer/" + kind + "/" + name + " missing");
    if (t.sizes() != param.sizes() || t.scalar_type() != param.scalar_type()) {
      throw DataError(source + ": optimizer/" + kind + "/" + name + " does not match its parameter's shape or type");
    }
    return t.to(param.device());
  };
  for (const auto& item : model.named_parameters()) {
    const OptimizerStateKey key = optimizerStateKey(item.value());
    states.erase(key);
    if (optimizerName == "sgd") {
      if (!groupTensor("momentum_buffer", item.key()).defined()) continue;  // none before the first step
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(need("momentum_buffer", item.key(), item.value()));
      states[key] = std::move(s);
    } else {
      PERENNIAL_CHECK(optimizerName == "adam" || optimizerName == "adamw",
                      "optimizer '" << optimizerName << "' has no checkpoint state");
      torch::Tensor step = groupTensor("step", item.key());
      if (!step.defined()) continue;
      if (step.numel() != 1 || step.scalar_type() != torch::kInt64) {
        throw DataError(source + ": optimizer/step/" + item.key() + " must be one int64");
      }
      // Adam's and AdamW's states have the same fields; each optimizer expects its own type.
      auto fill = [&](auto s) {
        s->step(step.item<int64_t>());
        s->exp_avg(need("exp_avg", item.key(), item.value()));
        s->exp_avg_sq(need("exp_avg_sq", item.key(), item.value()));
        if (groupTensor("max_exp_avg_sq", item.key()).defined()) {
          s->max_exp_avg_sq(need("max_exp_avg_sq", item.key(), item.value()));
        }
        states[key] = std::move(s);
      };
      if (optimizerName == "adamw") {
        fill(std::make_unique<torch::optim::AdamWParamState>());
      } else {
        fill(std::make_unique<torch::optim::AdamParamState>());
      }
    }
  }

  RestoredState out;
  out.progress.epoch = doc.integer("progress.epoch", source);
  out.progress.step = doc.integer("progress.step", source);
  out.progress.cursor = doc.integer("progress.sample_cursor", source);
  out.progress.samplesSeen = doc.integer("progress.samples_seen", source);
  out.worldSize = static_cast<int>(doc.integer("world.size", source));
  out.configText = doc.str("config", source);
  out.configSha256 = doc.str("config_sha256", source);
  out.dataSnapshot = doc.str("data.snapshot", source);
  if (const Group* norm = doc.group("normalization")) {
    std::tie(out.normMean, out.normStd) = readNormalizationGroup(*norm, source);
  }
  const Group* rng = doc.group("rng");
  const Tensor* gen = rng ? rng->find("torch_cpu") : nullptr;
  if (gen && out.worldSize == worldSize && gen->shape.size() == 2 && gen->shape[0] == worldSize) {
    const int64_t per = gen->shape[1];
    torch::Tensor s = torch::empty({per}, torch::kUInt8);
    std::memcpy(s.data_ptr(), static_cast<const uint8_t*>(gen->data()) + rank * per, static_cast<size_t>(per));
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s);
    out.rngRestored = true;
  }
  const Tensor* cudaGen = rng ? rng->find("torch_cuda") : nullptr;
  if (cudaGen && out.worldSize == worldSize && cudaGen->shape.size() == 2 && cudaGen->shape[0] == worldSize) {
    const auto* bytes = static_cast<const uint8_t*>(cudaGen->data()) + rank * cudaGen->shape[1];
    out.deviceRngState.assign(bytes, bytes + cudaGen->shape[1]);
  }
  return out;
}

RestoredState loadCheckpoint(const std::string& path, torch::nn::Module& model,
                             torch::optim::Optimizer& optimizer, const std::string& optimizerName, int rank,
                             int worldSize) {
  // Parameters and buffers are read straight into the model; optimizer state into fresh tensors.
  std::map<std::string, torch::Tensor> targets;
  for (auto& item : model.named_parameters()) targets["state_dict/" + item.key()] = item.value();
  for (auto& item : model.named_buffers()) targets["state_dict/" + item.key()] = item.value();
  std::map<std::string, torch::Tensor> preloaded;
  auto sink = [&](const std::string& group, const Tensor& t) -> void* {
    const std::string key = group + "/" + t.name;
    if (group == "state_dict") {
      auto it = targets.find(key);
      // A mismatch is left to restoreState, which names it.
      if (it == targets.end() || it->second.sizes().vec() != t.shape ||
          it->second.scalar_type() != scalarType(t.type) || !it->second.is_contiguous() || !it->second.is_cpu()) {
        return nullptr;
      }
      return it->second.data_ptr();
    }
    if (group.rfind("optimizer/", 0) == 0) {
      torch::Tensor dest = torch::empty(t.shape, torch::TensorOptions().dtype(scalarType(t.type)));
      preloaded[key] = dest;
      return dest.data_ptr();
    }
    return nullptr;
  };
  torch::NoGradGuard noGrad;
  checkpoint::Document doc = checkpoint::verifyCheckpoint(path, sink);
  return restoreState(doc, path, model, optimizer, optimizerName, rank, worldSize, &preloaded);
}

}  // namespace perennial
