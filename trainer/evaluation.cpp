#include "trainer/evaluation.h"

#include "trainer/trainer.h"
#include "trainer/run_dir.h"
#include "common/text.h"

#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <tuple>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_store.h"
#include "checkpoint/tensor_file.h"
#include "common/error.h"
#include "common/fs_util.h"
#include "common/read_file.h"
#include "common/log.h"
#include "common/sha256.h"
#include "dataset/snapshot.h"
#include "perennial/build_config.h"
#include "trainer/blas_info.h"
#include "trainer/checkpoint_staging.h"
#include "trainer/checkpointing.h"
#include "trainer/comm/control_block.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/data/batch_loader.h"
#include "trainer/data/distributed_sampler.h"
#include "dataset/shard_dataset.h"
#include "trainer/device.h"
#include "trainer/models/model_factory.h"
#include "trainer/optim/fused_optimizer.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/progress.h"
#include "trainer/step_timer.h"
#include "trainer/run_logs.h"
#include "trainer/stop_signal.h"

namespace perennial {

bool wantsNormalization(const TrainConfig& c, const data::DatasetSpec& spec) {
  if (c.normalize == "standard") return true;
  if (c.normalize == "none") return false;
  return spec.featureType == DType::kFloat32;
}

// Mean and standard deviation of every feature element over DS. Each rank sums a contiguous
// block, shifted by the first row (so large offsets lose no precision); the sums are all-reduced.
void computeNormalization(data::ShardedDataset& ds, Communicator& comm, Normalization& out) {
  const int64_t n = ds.size(), w = comm.size(), r = comm.rank();
  const int64_t d = ds.spec().featureElements();
  const int64_t begin = n * r / w, end = n * (r + 1) / w;
  auto firstRow = [&] {
    data::BatchLoader one(ds, {{0}}, 1);
    return one.next()->features;
  }();
  std::vector<double> sums(static_cast<size_t>(2 * d), 0.0);
  std::vector<std::vector<int64_t>> batches;
  for (int64_t b = begin; b < end; b += 4096) {
    std::vector<int64_t> idx;
    for (int64_t i = b; i < std::min(end, b + 4096); ++i) idx.push_back(i);
    batches.push_back(std::move(idx));
  }
  if (!batches.empty()) {
    data::BatchLoader loader(ds, std::move(batches), 2);
    while (auto batch = loader.next()) {
      for (int64_t row = 0; row < batch->rows; ++row) {
        const float* x = batch->features.data() + row * d;
        for (int64_t k = 0; k < d; ++k) {
          const double v = static_cast<double>(x[k]) - firstRow[static_cast<size_t>(k)];
          sums[static_cast<size_t>(k)] += v;
          sums[static_cast<size_t>(d + k)] += v * v;
        }
      }
    }
  }
  comm.allReduceSum(sums.data(), sums.size());
  std::vector<float> mean(static_cast<size_t>(d)), stdev(static_cast<size_t>(d));
  for (int64_t k = 0; k < d; ++k) {
    const double m = sums[static_cast<size_t>(k)] / static_cast<double>(n);
    const double var = std::max(0.0, sums[static_cast<size_t>(d + k)] / static_cast<double>(n) - m * m);
    mean[static_cast<size_t>(k)] = static_cast<float>(m + firstRow[static_cast<size_t>(k)]);
    const double sd = std::sqrt(var);
    const float s = static_cast<float>(sd);
    stdev[static_cast<size_t>(k)] = (s > 1e-12f && std::isfinite(s)) ? s : 1.0f;
  }
  out.set(std::move(mean), std::move(stdev), ds.spec().featureShape);
}

ModelInput modelInput(const data::DatasetSpec& spec) {
  return ModelInput{spec.featureShape, spec.regression() ? 1 : spec.numClasses, spec.regression()};
}

// The model's input for a batch: float32 [rows, ...feature_shape] on DEVICE, standardised when
// asked (the normalization's tensors are on DEVICE too). On the CPU it is the batch's memory.
torch::Tensor featureTensor(data::Batch& b, const data::DatasetSpec& spec, const Normalization& norm,
                            const torch::Device& device) {
  std::vector<int64_t> shape{b.rows};
  shape.insert(shape.end(), spec.featureShape.begin(), spec.featureShape.end());
  torch::Tensor x = torch::from_blob(b.features.data(), shape, torch::kFloat32).to(device);
  return norm.active() ? (x - norm.meanT) / norm.stdT : x;
}

// A batch's targets on DEVICE: int64 labels [rows] or float32 values [rows].
torch::Tensor targetTensor(data::Batch& b, const data::DatasetSpec& spec, const torch::Device& device) {
  if (spec.regression()) return torch::from_blob(b.values.data(), {b.rows}, torch::kFloat32).to(device);
  return torch::from_blob(b.labels.data(), {b.rows}, torch::kInt64).to(device);
}

// The model's output for X: logits [rows, classes], or regression values [rows] (a [rows, 1]
// output is squeezed). Throws ConfigError naming model.arch when the shape does not fit.
torch::Tensor predict(const Model& model, const torch::Tensor& x, const data::DatasetSpec& spec,
                      const std::string& arch) {
  torch::Tensor y = model.forward(x);
  const int64_t rows = x.size(0);
  if (spec.regression()) {
    if (y.dim() == 2 && y.size(1) == 1) y = y.squeeze(1);
    if (y.dim() != 1 || y.size(0) != rows) {
      throw ConfigError("model.arch: " + arch + " returned a tensor of shape " + c10::str(y.sizes()) +
                        " for a batch of " + std::to_string(rows) + " rows; regression needs [rows] or [rows, 1]");
    }
  } else if (y.dim() != 2 || y.size(0) != rows || y.size(1) != spec.numClasses) {
    throw ConfigError("model.arch: " + arch + " returned a tensor of shape " + c10::str(y.sizes()) + " for a batch of " +
                      std::to_string(rows) + " rows; the dataset has " + std::to_string(spec.numClasses) +
                      " classes, so [rows, " + std::to_string(spec.numClasses) + "] is needed");
  }
  return y;
}

// Mean loss of a batch: cross-entropy for class labels, mean squared error for values.
torch::Tensor batchLoss(const torch::Tensor& out, data::Batch& b, const data::DatasetSpec& spec) {
  torch::Tensor y = targetTensor(b, spec, out.device());
  return spec.regression() ? torch::mse_loss(out, y) : torch::nn::functional::cross_entropy(out, y);
}

std::string describe(const EvalMetrics& e) {
  char line[200];
  if (e.regression) {
    std::snprintf(line, sizeof(line), "test R2 %.4f, MSE %.6g, MAE %.6g (%lld samples)", e.r2, e.mse, e.mae,
                  (long long)e.samples);
  } else {
    std::snprintf(line, sizeof(line), "test accuracy %.4f, test loss %.4f (%lld samples)", e.accuracy, e.loss,
                  (long long)e.samples);
  }
  return line;
}

nlohmann::json evalRecord(const EvalMetrics& e, const TrainProgress& p) {
  nlohmann::json j = {{"kind", "eval"}, {"epoch", p.epoch}, {"step", p.step}};
  for (const auto& [k, v] : e.testMetrics()) j[k] = v;
  j["test_samples"] = e.samples;
  // When it was measured (seconds since the Unix epoch): time to accuracy (benchmarks/quality).
  j["unix_time"] = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  return j;
}

namespace {

// Each rank evaluates a contiguous block of the test set; sums are all-reduced, so every sample
// is counted exactly once whatever the world size.
EvalMetrics evaluateRegression(const Model& model, data::ShardedDataset& test, Communicator& comm,
                              std::vector<std::vector<int64_t>> batches, size_t prefetch,
                              const Normalization& norm, const std::string& arch, const torch::Device& device) {
  // squared error, absolute error, sum y, sum y^2, samples, non-finite outputs
  std::vector<double> sums(6, 0.0);
  data::BatchLoader loader(test, std::move(batches), prefetch);
  while (auto batch = loader.next()) {
    torch::Tensor out =
        predict(model, featureTensor(*batch, test.spec(), norm, device), test.spec(), arch).to(torch::kDouble);
    torch::Tensor y = targetTensor(*batch, test.spec(), device).to(torch::kDouble);
    torch::Tensor err = out - y;
    sums[0] += err.square().sum().item<double>();
    sums[1] += err.abs().sum().item<double>();
    sums[2] += y.sum().item<double>();
    sums[3] += y.square().sum().item<double>();
    sums[4] += static_cast<double>(batch->rows);
    sums[5] += torch::logical_not(torch::isfinite(out)).sum().item<double>();
  }
  comm.allReduceSum(sums.data(), sums.size());
  EvalMetrics e;
  e.regression = true;
  const double n = sums[4];
  e.samples = static_cast<int64_t>(n);
  e.nonFiniteOutputs = static_cast<int64_t>(sums[5]);
  if (n > 0) {
    e.mse = sums[0] / n;
    e.mae = sums[1] / n;
    const double sst = sums[3] - sums[2] * sums[2] / n;
    e.r2 = sst > 0 ? 1.0 - sums[0] / sst : 0.0;
  }
  e.loss = e.mse;
  e.accuracy = -1;
  return e;
}

}  // namespace

// The model and NORM's tensors are on DEVICE; COMM is the host communicator (the sums are doubles
// in host memory).
EvalMetrics evaluate(const Model& model, data::ShardedDataset& test, Communicator& comm, int64_t batchSize,
                    size_t prefetch, const Normalization& norm, const std::string& arch, const torch::Device& device) {
  const int64_t n = test.size(), w = comm.size(), r = comm.rank();
  const int64_t begin = n * r / w, end = n * (r + 1) / w;
  std::vector<std::vector<int64_t>> batches;
  for (int64_t b = begin; b < end; b += batchSize) {
    std::vector<int64_t> idx;
    for (int64_t i = b; i < std::min(end, b + batchSize); ++i) idx.push_back(i);
    batches.push_back(std::move(idx));
  }
  model->eval();
  torch::NoGradGuard noGrad;
  if (test.spec().regression()) {
    return evaluateRegression(model, test, comm, std::move(batches), prefetch, norm, arch, device);
  }
  // loss sum, correct, samples, rows with non-finite logits, then per class: correct, total.
  const int64_t classes = test.spec().numClasses;
  std::vector<double> sums(static_cast<size_t>(4 + 2 * classes), 0.0);
  data::BatchLoader loader(test, std::move(batches), prefetch);
  while (auto batch = loader.next()) {
    torch::Tensor x = featureTensor(*batch, test.spec(), norm, device);
    torch::Tensor y = targetTensor(*batch, test.spec(), device);
    torch::Tensor logits = predict(model, x, test.spec(), arch);
    sums[0] += torch::nn::functional::cross_entropy(
                   logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                   .item<double>();
    // Per-class counts on the CPU: bincount has no deterministic CUDA kernel.
    torch::Tensor hit = logits.argmax(1).eq(y).cpu();
    torch::Tensor yCpu = y.cpu();
    sums[1] += hit.sum().item<double>();
    sums[2] += static_cast<double>(batch->rows);
    sums[3] += torch::logical_not(torch::isfinite(logits)).any(1).sum().item<double>();
    torch::Tensor correct = torch::bincount(yCpu.masked_select(hit), {}, classes).to(torch::kDouble).contiguous();
    torch::Tensor total = torch::bincount(yCpu, {}, classes).to(torch::kDouble).contiguous();
    for (int64_t k = 0; k < classes; ++k) {
      sums[static_cast<size_t>(4 + k)] += correct.data_ptr<double>()[k];
      sums[static_cast<size_t>(4 + classes + k)] += total.data_ptr<double>()[k];
    }
  }
  comm.allReduceSum(sums.data(), sums.size());
  EvalMetrics e;
  e.samples = static_cast<int64_t>(sums[2]);
  e.loss = sums[2] > 0 ? sums[0] / sums[2] : 0;
  e.accuracy = sums[2] > 0 ? sums[1] / sums[2] : 0;
  e.nonFiniteOutputs = static_cast<int64_t>(sums[3]);
  for (int64_t k = 0; k < classes; ++k) {
    e.classCorrect.push_back(static_cast<int64_t>(sums[static_cast<size_t>(4 + k)]));
    e.classTotal.push_back(static_cast<int64_t>(sums[static_cast<size_t>(4 + classes + k)]));
  }
  return e;
}

// The model's state_dict: parameters, then buffers (PyTorch's order within each module differs,
// but names are what files match on).
std::vector<std::pair<std::string, torch::Tensor>> stateDict(torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : model.named_parameters()) out.emplace_back(item.key(), item.value());
  for (const auto& item : model.named_buffers()) out.emplace_back(item.key(), item.value());
  return out;
}

// Copies a weights file's tensors into MODEL, checking that every parameter and buffer is there
// with the right shape and type. Files written before buffers were saved (no buffers) are
// accepted for models without buffers, as before.
void copyWeights(const checkpoint::TensorFile& file, const std::string& path, const std::string& arch,
                 torch::nn::Module& model) {
  torch::NoGradGuard noGrad;
  auto named = stateDict(model);
  if (named.size() != file.tensors.size()) {
    throw DataError(path + ": has " + std::to_string(file.tensors.size()) + " tensors, the " + arch +
                    " model has " + std::to_string(named.size()) + " parameters and buffers");
  }
  for (const auto& t : file.tensors) {
    auto it = std::find_if(named.begin(), named.end(), [&](const auto& kv) { return kv.first == t.name; });
    if (it == named.end()) throw DataError(path + ": tensor '" + t.name + "' is not a parameter of the " + arch + " model");
    torch::Tensor& p = it->second;
    if (p.sizes().vec() != t.shape || toDType(p.scalar_type()) != t.type) {
      throw DataError(path + ": tensor '" + t.name + "' has the wrong shape or type for the " + arch + " model");
    }
    // copy_ from the file's host memory: the model may be on a GPU.
    p.copy_(torch::from_blob(const_cast<void*>(t.data()), t.shape, p.scalar_type()));
  }
}

// The normalization recorded in a weights file or checkpoint (none when it has no such group).
void readNormalization(const checkpoint::TensorFile& file, const std::string& path,
                       const std::vector<int64_t>& featureShape, Normalization& out) {
  const checkpoint::Group* g = file.group("normalization");
  if (!g) return;
  auto [mean, stdev] = readNormalizationGroup(*g, path);
  if (static_cast<int64_t>(mean.size()) != shapeElements(featureShape)) {
    throw DataError(path + ": normalization has " + std::to_string(mean.size()) + " values, the data " +
                    std::to_string(shapeElements(featureShape)) + " features");
  }
  out.set(std::move(mean), std::move(stdev), featureShape);
}

// The TorchScript file of a trained model: model.pt beside its weights file when there is one
// (the registry and run directories keep it there), else the configured model.path.
void locateScript(TrainConfig& c, const std::string& weightsPath) {
  if (c.arch != "torchscript") return;
  const auto beside = std::filesystem::path(weightsPath).parent_path() / "model.pt";
  if (std::filesystem::is_regular_file(beside)) c.modelPath = beside.string();
}

EvalSummary evaluateWeights(const std::string& modelPath, const std::string& dataDir, Communicator& comm,
                            int64_t batchSize, int64_t logits, bool requireRecordedHash, const std::string& device,
                            const std::string& deviceKey) {
  const TrainDevice dev = resolveDevice(device, deviceKey);  // before any data are read
  checkpoint::TensorFile file = checkpoint::readTensorFile(modelPath);
  auto configIt = file.attributes.find("config");
  if (configIt == file.attributes.end()) {
    throw DataError(modelPath + ": no 'config' attribute (not written by perennial train?)");
  }
  TrainConfig c = parseTrainConfigText(configIt->second, modelPath + "@config");
  requireRegisteredModel(c.arch);
  locateScript(c, modelPath);
  data::ShardedDataset ds(dataDir);
  Model model = makeModel(c, modelInput(ds.spec()));
  copyWeights(file, modelPath, c.arch, *model);
  Normalization norm;
  readNormalization(file, modelPath, ds.spec().featureShape, norm);
  EvalSummary out;
  out.paramSha256 = paramSha256(*model);
  out.arch = c.arch;
  out.featureShape = ds.spec().featureShape;
  out.numClasses = ds.spec().numClasses;
  for (const auto& p : model->parameters()) out.nonFiniteWeights += torch::logical_not(torch::isfinite(p)).sum().item<int64_t>();
  auto recorded = file.attributes.find("param_sha256");
  if (recorded != file.attributes.end()) out.recordedParamSha256 = recorded->second;
  if (requireRecordedHash && recorded != file.attributes.end() && recorded->second != out.paramSha256) {
    throw DataError(modelPath + ": weights do not match the recorded param_sha256 (" + recorded->second +
                    "); the file is corrupt or was modified");
  }
  out.device = dev.name();
  out.deviceReason = dev.reason;
  configureDeterminism(dev, /*deterministic=*/true);
  model->to(dev.device);
  norm.moveTo(dev.device);
  out.metrics = evaluate(model, ds, comm, batchSize, 4, norm, c.arch, dev.device);
  if (logits > 0) {
    const int64_t n = std::min(logits, ds.size());
    data::BatchLoader loader(ds, {[&] {
                               std::vector<int64_t> idx(static_cast<size_t>(n));
                               for (int64_t i = 0; i < n; ++i) idx[i] = i;
                               return idx;
                             }()},
                             1);
    auto batch = loader.next();
    torch::NoGradGuard noGrad;
    model->eval();
    torch::Tensor y = predict(model, featureTensor(*batch, ds.spec(), norm, dev.device), ds.spec(), c.arch).cpu().contiguous();
    if (y.dim() == 1) y = y.unsqueeze(1);
    for (int64_t i = 0; i < n; ++i) {
      const float* row = y[i].data_ptr<float>();
      out.logits.emplace_back(row, row + y.size(1));
    }
  }
  return out;
}

}  // namespace perennial
