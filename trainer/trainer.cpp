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
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// NOTE [Normalization]: data.normalize = standard (auto: for float32 features) standardises each
// feature element by the mean and standard deviation of the training data, computed once per
// run before the first step (in float64; constant features get std 1), stored in every
// checkpoint and in model.h5 (group "normalization") and applied wherever the model sees data:
// training, evaluation, `perennial eval`, the gate. A resumed run takes them from its checkpoint.
struct Normalization {
  std::vector<float> mean, stdev;
  torch::Tensor meanT, stdT;

  bool active() const { return !mean.empty(); }
  void set(std::vector<float> m, std::vector<float> s, const std::vector<int64_t>& shape) {
    mean = std::move(m);
    stdev = std::move(s);
    if (mean.empty()) return;
    meanT = torch::from_blob(mean.data(), shape, torch::kFloat32).clone();
    stdT = torch::from_blob(stdev.data(), shape, torch::kFloat32).clone();
  }
  // Puts the tensors where the features are (the training device).
  void moveTo(const torch::Device& device) {
    if (!active()) return;
    meanT = meanT.to(device);
    stdT = stdT.to(device);
  }
};

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

// model.pt (NOTE [TorchScript export]), written whole or not at all; a model that cannot be
// exported leaves none (not even one of an earlier run in the same directory).
void saveTorchScriptAtomically(const Model& model, const std::string& path) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::string whyNot;
  if (!saveAsTorchScript(model, tmp, &whyNot)) {
    std::filesystem::remove(path);
    log::get("train")->info("no {}: {}", path, whyNot);
    return;
  }
  fs::fsyncFile(tmp);
  fs::publish(tmp, path);
}

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

void checkSameWeights(const std::string& localHash, Communicator& comm) {
  if (comm.size() == 1) return;
  std::vector<char> all(static_cast<size_t>(comm.size()) * 64);
  comm.allGather(localHash.data(), all.data(), 64);
  std::string mismatched;
  for (int r = 0; r < comm.size(); ++r) {
    std::string h(all.data() + r * 64, 64);
    if (h != std::string(all.data(), 64)) mismatched += (mismatched.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!mismatched.empty()) {
    throw InternalError("ranks ended with different weights: rank(s) " + mismatched +
                        " differ from rank 0 (param_sha256 " + std::string(all.data(), 64) +
                        "); data-parallel replicas diverged");
  }
}

// The model's state_dict: parameters, then buffers (PyTorch's order within each module differs,
// but names are what files match on).
std::vector<std::pair<std::string, torch::Tensor>> stateDict(torch::nn::Module& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : model.named_parameters()) out.emplace_back(item.key(), item.value());
  for (const auto& item : model.named_buffers()) out.emplace_back(item.key(), item.value());
  return out;
}

// NOTE [Buffers]: buffers (batch norm's running statistics) are updated by each rank's own
// forward passes, so replicas would drift apart. As PyTorch DDP's broadcast_buffers does, rank
// 0's buffers are broadcast to every rank, here after each optimizer step: all ranks then
// evaluate and checkpoint the same model, and a resumed run continues exactly. Models without
// buffers (the built-in ones) pay nothing.
void broadcastBuffers(torch::nn::Module& model, Communicator& comm) {
  if (comm.size() == 1) return;
  torch::NoGradGuard noGrad;
  for (auto& item : model.named_buffers()) {
    torch::Tensor& b = item.value();
    PERENNIAL_CHECK(b.is_contiguous(), "buffer " << item.key() << " is not contiguous");
    broadcastTensor(b, comm, 0);
  }
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

}  // namespace

std::string resolveDeviceName(const std::string& setting, const std::string& key) {
  return resolveDevice(setting, key).name();
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

namespace {

// Lines "key = value" of two resolved configs that differ, for a resume warning.
std::string configDiff(const std::string& before, const std::string& after) {
  auto parse = [](const std::string& text) {
    std::map<std::string, std::string> kv;
    std::istringstream in(text);
    std::string line, section;
    while (std::getline(in, line)) {
      if (line.size() > 2 && line.front() == '[') {
        section = line.substr(1, line.size() - 2);
      } else if (auto eq = line.find(" = "); eq != std::string::npos) {
        kv[section + "." + line.substr(0, eq)] = line.substr(eq + 3);
      }
    }
    return kv;
  };
  auto a = parse(before), b = parse(after);
  std::string out;
  for (const auto& [k, v] : b) {
    auto it = a.find(k);
    const std::string old = it == a.end() ? "(unset)" : it->second;
    if (old != v) out += (out.empty() ? "" : ", ") + k + " " + old + " -> " + v;
  }
  return out;
}

// Broadcasts a string from rank 0.
std::string broadcastString(Communicator& comm, std::string value) {
  int64_t n = static_cast<int64_t>(value.size());
  comm.broadcast(&n, sizeof(n), 0);
  value.resize(static_cast<size_t>(n));
  comm.broadcast(value.data(), value.size(), 0);
  return value;
}

// NOTE [Data identity]: every run start hashes each training shard once (SHA-256 of its bytes,
// read through the descriptor the rows are read from), the ranks sharing the work: shards are
// dealt out largest first to the rank with the fewest bytes so far (sizes from rank 0, so every
// rank deals the same way), and the digests are summed across ranks (each is non-zero on its
// owner only). The snapshot id is dataset/snapshot.h's recipe over them, the scheduler's, so a
// scheduler run's result.json, checkpoints and lineage hold one id, the catalog's. With
// data.snapshot the shards are checked against it (NOTE [Snapshot check], shard_dataset.h) on
// every rank, which all stop with the same DataError on a mismatch.
struct DataIdentity {
  std::string snapshot;  // the id
  std::string shards;    // "SHA-256 FILE-NAME" per line, for checkpoints
};

DataIdentity dataIdentity(const data::ShardedDataset& ds, const std::string& snapshotFile, Communicator& comm) {
  std::error_code missing;
  if (!snapshotFile.empty() && !std::filesystem::is_regular_file(snapshotFile, missing)) {
    throw ConfigError("data.snapshot: " + snapshotFile + ": no such file");  // before any hashing
  }
  const auto t0 = Clock::now();
  const size_t n = ds.numShards();
  const int world = comm.size(), rank = comm.rank();
  std::vector<int64_t> sizes(n, 0);
  if (rank == 0) {
    for (size_t i = 0; i < n; ++i) {
      std::error_code ec;
      const auto bytes = std::filesystem::file_size(ds.shardPaths()[i], ec);
      sizes[i] = ec ? 0 : static_cast<int64_t>(bytes);
    }
  }
  if (world > 1 && n > 0) comm.broadcast(sizes.data(), n * sizeof(int64_t), 0);
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sizes[a] > sizes[b]; });
  std::vector<int64_t> load(static_cast<size_t>(world), 0);
  std::vector<int> owner(n, 0);
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[static_cast<size_t>(r)] += std::max<int64_t>(sizes[i], 1);
  }
  // 32 bytes per digest as 8 words of 32 bits, summed as int64 (exact; zero off the owner).
  std::vector<int64_t> words(n * 8, 0);
  for (size_t i = 0; i < n; ++i) {
    if (owner[i] != rank) continue;
    const Digest d = ds.hashShard(i);
    for (size_t k = 0; k < 8; ++k) {
      words[i * 8 + k] = (int64_t{d[4 * k]} << 24) | (int64_t{d[4 * k + 1]} << 16) | (int64_t{d[4 * k + 2]} << 8) |
                         int64_t{d[4 * k + 3]};
    }
  }
  const double mine = secondsSince(t0);
  if (world > 1 && n > 0) comm.allReduceSum(words.data(), words.size());
  std::vector<data::ShardIdentity> found(n);
  data::SnapshotIdBuilder id;
  DataIdentity out;
  int64_t bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    Digest d{};
    for (size_t k = 0; k < 8; ++k) {
      const auto w = static_cast<uint32_t>(words[i * 8 + k]);
      d[4 * k] = static_cast<uint8_t>(w >> 24);
      d[4 * k + 1] = static_cast<uint8_t>(w >> 16);
      d[4 * k + 2] = static_cast<uint8_t>(w >> 8);
      d[4 * k + 3] = static_cast<uint8_t>(w);
    }
    found[i] = {ds.shardPaths()[i], toHex(d), ds.shardRows(i)};
    id.add(found[i].sha256);
    out.shards += found[i].sha256 + " " + std::filesystem::path(found[i].path).filename().string() + "\n";
    bytes += sizes[i];
  }
  out.snapshot = id.finish();
  auto log = log::get("train");
  char line[256];
  std::snprintf(line, sizeof(line), "hashed %zu training shards (%.1f MiB) in %.2f s on %d rank(s) (rank 0's share: %.2f s)",
                n, static_cast<double>(bytes) / (1 << 20), secondsSince(t0), world, mine);
  if (snapshotFile.empty()) {
    if (rank == 0) log->info("{}; data snapshot {}", line, out.snapshot);
    return out;
  }
  data::checkSnapshot(snapshotFile, found);  // throws on every rank alike
  if (rank == 0) log->info("{}; all match {} (snapshot {})", line, snapshotFile, out.snapshot);
  return out;
}

// "node1 (ranks 0-1), node2 (ranks 2-3)": the ranks of each host, in order of first appearance.
std::string ranksByHost(const std::vector<std::string>& hosts) {
  std::vector<std::pair<std::string, std::vector<int>>> groups;
  for (int r = 0; r < static_cast<int>(hosts.size()); ++r) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == hosts[r]; });
    if (it == groups.end()) it = groups.insert(groups.end(), {hosts[r], {}});
    it->second.push_back(r);
  }
  std::string out;
  for (const auto& [host, ranks] : groups) {
    std::string list;
    for (size_t i = 0; i < ranks.size(); ++i) {
      size_t j = i;
      while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
      list += (list.empty() ? "" : ",") + std::to_string(ranks[i]) + (j > i ? "-" + std::to_string(ranks[j]) : "");
      i = j;
    }
    out += (out.empty() ? "" : ", ") + host + (ranks.size() == 1 ? " (rank " : " (ranks ") + list + ")";
  }
  return out;
}

}  // namespace

TrainResult train(const TrainConfig& c, const std::string& runDir, Communicator& comm,
                  const TrainOptions& options) {
  const auto wallStart = Clock::now();
  const int rank = comm.rank(), world = comm.size();
  const bool lead = rank == 0;
  auto log = log::get("train");

  requireRegisteredModel(c.arch);  // before any data are read
  // The device first: determinism settings must precede the first CUDA call. A rank takes the
  // GPU of its node-local rank (NOTE [Rank placement]).
  const RankPlacement where = comm.placement();
  const LocalRank local = localRankOf(comm);
  const TrainDevice dev = resolveDevice(c.device, local);
  const std::string determinism = configureDeterminism(dev, c.deterministic);
  // Every rank says where it runs: the host, its local rank and the GPU it takes by it, and the
  // interfaces its MPI traffic may use; rank 0 adds the layout of the whole job.
  log->info("on host {}: local rank {} of {} on this node (from {}); {}; MPI over TCP: {}", where.host, local.rank,
            local.size, local.source,
            dev.cuda() ? "trains on " + dev.name()
                       : "device cpu (on GPUs it would take local GPU " + std::to_string(local.rank) +
                             ": local rank modulo the GPUs visible)",
            where.network);
  if (!local.note.empty()) log->warn("{}", local.note);
  if (dev.cuda() && local.size > cudaDeviceCount()) {
    log->warn("{} ranks on this node share {} GPU(s)", local.size, cudaDeviceCount());
  }
  if (lead && world > 1) log->info("world size {} on {} node(s): {}", world, where.nodes(), ranksByHost(where.hosts));
  {
    // Every rank must train on the same kind of device (the generator states gathered at each
    // save, and the tensor communicator, assume it).
    int32_t cudaRanks = dev.cuda() ? 1 : 0;
    comm.allReduce(&cudaRanks, 1, DType::kInt32, ReduceOp::kSum);
    if (cudaRanks != 0 && cudaRanks != world) {
      throw ConfigError("train.device: " + c.device + " resolved to a GPU on " + std::to_string(cudaRanks) + " of " +
                        std::to_string(world) + " ranks (the others see no GPU); set train.device = cpu or cuda");
    }
  }
  // NOTE [Two communicators] (communicator.h): COMM carries host values; TCOMM the model's tensors.
  std::string tensorCommWhy;
  std::unique_ptr<Communicator> tensorComm =
      makeTensorCommunicator(comm, c.backend, dev.cudaIndex(), computeStream(dev),
                             std::chrono::milliseconds(static_cast<int64_t>(c.timeoutS * 1000)), &tensorCommWhy);
  Communicator& tcomm = tensorComm ? *tensorComm : comm;
  torch::set_num_threads(static_cast<int>(c.threads));
  setBlasThreads(static_cast<int>(c.threads));
  if (lead) {
    BlasInfo blas = detectBlas();
    log->info("BLAS: {} ({}){}", blas.vendor, blas.library.empty() ? "not loaded" : blas.library,
              blas.config.empty() ? "" : ", " + blas.config);
    if (blas.isReference()) {
      log->warn("the reference BLAS is loaded: training runs about 15x slower; install OpenBLAS "
                "(apt-get install libopenblas0-pthread, or scripts/install-deps.sh)");
    }
  }

  data::ShardedDataset trainSet(c.trainDir);
  data::ShardedDataset testSet(c.testDir);
  const data::DatasetSpec& spec = trainSet.spec();
  if (!(testSet.spec().featureShape == spec.featureShape) || testSet.spec().numClasses != spec.numClasses ||
      testSet.spec().featureType != spec.featureType || testSet.spec().targetType != spec.targetType) {
    throw ConfigError("data.test: " + c.testDir + " has a different feature shape, dtype, task or class count than data.train " +
                      c.trainDir);
  }
  // checkpoint.keep_best must name a metric this task measures.
  std::string keepBest = c.ckptKeepBest;
  if (keepBest == "auto") keepBest = spec.regression() ? "test_loss" : "test_accuracy";
  if ((keepBest == "test_accuracy" && spec.regression()) || (keepBest == "test_r2" && !spec.regression())) {
    throw ConfigError("checkpoint.keep_best: " + keepBest + " is not measured for " +
                      (spec.regression() ? "regression (use test_loss or test_r2)" : "classification (use test_accuracy or test_loss)"));
  }
  const int64_t localBatch = c.batchSize;
  const int64_t perStep = localBatch * c.gradAccum;  // samples per rank per optimizer step
  const int64_t globalBatch = perStep * world;
  data::DistributedSampler sampler(trainSet.size(), world, rank, c.seed);
  const int64_t stepsPerEpoch = sampler.samplesPerRank() / perStep;
  if (stepsPerEpoch == 0) {
    throw ConfigError("train.batch_size: " + std::to_string(localBatch) + " x train.grad_accum " +
                      std::to_string(c.gradAccum) + " x world size " + std::to_string(world) +
                      " exceeds the " + std::to_string(trainSet.size()) + " training samples");
  }
  // The schedule spans all epochs; train.max_steps only stops early, so a run stopped by it and
  // resumed follows the same learning rates as one that never stopped.
  int64_t scheduleSteps = c.epochs * stepsPerEpoch;
  const double lossScale = static_cast<double>(c.gradAccum) * static_cast<double>(world);

  // Initialised on the CPU from the shared seed (the same weights whatever the device), then moved.
  torch::manual_seed(c.seed);
  Model model = makeModel(c, modelInput(spec));
  model->to(dev.device);
  std::vector<torch::Tensor> params = model->parameters();
  const auto capBytes = static_cast<size_t>(c.bucketCapMb * 1024 * 1024);
  // NOTE [Control block]: on the CPU (tensors over the host communicator) the stop flag and the
  // loss window ride in the last gradient bucket; a GPU's bucket would need a device-to-host
  // read every step, so there they keep their own small host collectives.
  const bool controlInBucket = !tensorComm && !dev.cuda();
  ReducerOptions reducerOptions;
  reducerOptions.capBytes = capBytes;
  reducerOptions.controlSlots = controlInBucket ? controlSlots(world) : 0;
  reducerOptions.compression = parseCompression(c.compression);
  reducerOptions.overlap = c.overlap;
  GradientReducer reducer(params, tcomm, reducerOptions);
  // NOTE [Flat parameters]: with optim.fused the parameters move into the reducer's bucket layout.
  auto optimizer = makeOptimizer(
      c, params, c.fusedOptimizer ? std::make_shared<FlatBuckets>(params, reducer.buckets(), reducer.gradBuffers()) : nullptr);
  int64_t numParams = 0;
  for (const auto& p : params) numParams += p.numel();

  const std::string configText = c.toIni();
  const std::string configSha = toHex(sha256(configText.data(), configText.size()));
  // Every rank: the shards are checked before anything is trained (NOTE [Data identity]).
  const DataIdentity identity = dataIdentity(trainSet, c.snapshotFile, comm);
  // NOTE [Row cache]: after the identity check, so the rows cached are the bytes checked.
  if (c.cacheMb > 0) {
    const auto t0 = Clock::now();
    if (trainSet.cacheInMemory(static_cast<size_t>(c.cacheMb) << 20) && lead) {
      log->info("training set read into memory ({} rows, {:.2f} s; data.cache_mb)", trainSet.size(), secondsSince(t0));
    }
  }
  const std::string& dataSnapshot = identity.snapshot;
  const std::string& dataShards = identity.shards;

  checkpoint::Retention retention;
  retention.keepLast = c.ckptKeepLast;
  retention.bestMetric = keepBest == "none" ? "" : keepBest;
  retention.higherIsBetter = keepBest != "test_loss";
  checkpoint::CheckpointStore store(runDir + "/" + run_dir::kCheckpoints, retention);

  // Resume: rank 0 picks the checkpoint, every rank loads it (a shared file system is assumed,
  // as on any cluster).
  TrainProgress progress;
  Normalization norm;
  int64_t lastSavedStep = -1;
  std::string resumedFrom;
  bool rngRestored = false, deviceRngRestored = false;
  if (options.resume != "none") {
    std::string chosen;
    if (lead) {
      if (options.resume == "auto") {
        std::vector<std::string> skipped;
        auto found = store.newestValid(&skipped);
        for (const auto& why : skipped) log->warn("skipping checkpoint that does not verify: {}", why);
        if (found) {
          chosen = found->path;
        } else {
          log->info("--resume auto: no valid checkpoint in {}; starting from scratch", store.dir());
        }
      } else {
        chosen = options.resume;
      }
    }
    chosen = broadcastString(comm, chosen);
    if (!chosen.empty()) {
      RestoredState restored = loadCheckpoint(chosen, *model, *optimizer, c.optimizer, rank, world);
      progress = restored.progress;
      if (progress.epoch < c.epochs) {
        // NOTE [Resharded resume]: the schedule ends after the steps left: the rest of the
        // interrupted epoch (re-sharded by the sample cursor at another world size), then the
        // remaining whole epochs. At the world size the whole run had, that is epochs x steps per
        // epoch, as without a resume; but steps taken at another world size took another global
        // batch, and counting them as this world's steps made a run resumed on more ranks find
        // its step already past the end and skip the rest of its data.
        const int64_t restOfEpoch = (trainSet.size() - std::min(progress.cursor, trainSet.size())) / world / perStep;
        scheduleSteps = progress.step + restOfEpoch + (c.epochs - progress.epoch - 1) * stepsPerEpoch;
      }
      if (dev.cuda() && !restored.deviceRngState.empty()) {
        setDeviceGeneratorState(dev, restored.deviceRngState);
        deviceRngRestored = true;
      }
      if (!restored.normMean.empty()) {
        if (static_cast<int64_t>(restored.normMean.size()) != spec.featureElements()) {
          throw DataError(chosen + ": normalization has " + std::to_string(restored.normMean.size()) +
                          " values, the data " + std::to_string(spec.featureElements()) + " features");
        }
        norm.set(std::move(restored.normMean), std::move(restored.normStd), spec.featureShape);
      }
      lastSavedStep = progress.step;  // that checkpoint exists: never re-save (and uncommit) it
      rngRestored = restored.rngRestored;
      resumedFrom = chosen;
      if (lead) {
        log->info("resuming from {} at epoch {}, step {} (sample cursor {})", chosen, progress.epoch + 1,
                  progress.step, progress.cursor);
        if (restored.worldSize != world) {
          log->warn("the checkpoint was written at world size {}, this run has {}: the rest of the epoch is "
                    "re-sharded by the global sample cursor ({} steps left in all); results will not be bitwise "
                    "identical to an uninterrupted run", restored.worldSize, world, scheduleSteps - progress.step);
        }
        if (restored.configSha256 != configSha) {
          log->warn("resuming with a changed configuration: {}", configDiff(restored.configText, configText));
        }
        if (restored.dataSnapshot != dataSnapshot) {
          log->warn("the training data differ from the checkpoint's (snapshot {} now {})", restored.dataSnapshot, dataSnapshot);
        }
      }
      if (progress.cursor % globalBatch != 0 && restored.worldSize == world) {
        throw DataError(chosen + ": sample cursor " + std::to_string(progress.cursor) +
                        " is not a multiple of the global batch " + std::to_string(globalBatch));
      }
    }
  }
  if (resumedFrom.empty() && !c.initFrom.empty()) {
    // Warm start: every rank reads the same file, so the replicas start equal.
    checkpoint::TensorFile init = checkpoint::readTensorFile(c.initFrom);
    copyWeights(init, c.initFrom, c.arch, *model);
    if (lead) log->info("initialised the weights from {} (param_sha256 {})", c.initFrom, paramSha256(*model).substr(0, 16));
  }
  reducer.broadcastParameters(0);
  broadcastBuffers(*model, tcomm);
  if (!norm.active() && wantsNormalization(c, spec)) {
    const auto t0 = Clock::now();
    computeNormalization(trainSet, comm, norm);
    if (lead) log->info("feature normalization from {} training samples ({:.2f} s)", trainSet.size(), secondsSince(t0));
  }
  norm.moveTo(dev.device);
  // Per-rank stream for dropout; initialisation above used the shared seed on every rank.
  // torch::manual_seed seeds the CPU generator and every GPU's; a checkpoint restores the CPU
  // generator, and the GPU's when it was written on one.
  const uint64_t rankSeed =
      c.seed * 1000003ULL + static_cast<uint64_t>(rank) + 1 + static_cast<uint64_t>(progress.step) * 7919ULL;
  if (!rngRestored) {
    torch::manual_seed(rankSeed);
  } else if (dev.cuda() && !deviceRngRestored) {
    seedDeviceGenerator(dev, rankSeed);
  }

  LrSchedule schedule{c.schedule, c.lr, c.warmupSteps, c.stepSize, c.gamma, c.minLr, scheduleSteps};
  const int64_t stopAt = c.maxSteps > 0 ? std::min(scheduleSteps, c.maxSteps) : scheduleSteps;

  TrainResult result;
  result.worldSize = world;
  result.configSha256 = configSha;
  result.globalBatch = globalBatch;
  result.arch = c.arch;
  result.parameters = numParams;
  result.perennialVersion = PERENNIAL_VERSION;
  if (lead) {
    std::filesystem::create_directories(runDir);
    fs::writeFileAtomic(runDir + "/" + run_dir::kConfig, configText);
    log->info("{} with {} parameters; {} training / {} test samples; world size {}, global batch {} "
              "({} per rank x {} micro-batches); {} steps per epoch, {} steps; {} gradient bucket(s)",
              c.arch, numParams, trainSet.size(), testSet.size(), world, globalBatch, localBatch,
              c.gradAccum, stepsPerEpoch, stopAt, reducer.buckets().size());
    log->info("device {} ({}); {}; tensors over {} ({}, {})", dev.name(), dev.reason, determinism, tcomm.backend(),
              tcomm.backendVersion(), tensorCommWhy);
    log->info("optimizer {} ({}); gradient buckets sent as {}, reduced {}; stop flag and loss window {}", c.optimizer,
              c.fusedOptimizer ? "fused step over flat buckets" : "LibTorch's step", c.compression == "none" ? "they are" : c.compression,
              reducer.overlapping() ? "during backward (comm.overlap)" : "after backward",
              controlInBucket ? "in the last bucket" : "in collectives of their own");
  }
  MetricsLog metrics(runDir + "/" + run_dir::kMetrics, lead, /*append=*/!resumedFrom.empty(), progress.step);
  SampleLog sampleLog(options.logSamples, runDir + "/" + run_dir::kSamples, comm, resumedFrom.empty() ? -1 : progress.step);
  Progress bar(c.progress, stopAt, c.epochs, lead);
  StopSignals signals;

  EvalMetrics lastEval;
  int64_t lastEvalStep = -1;
  // NOTE [Staging buffers]: allocated at the first asynchronous save. Declared before INFLIGHT, so
  // that a save still writing from it is waited for (the future's destructor) before it is freed.
  StagingBuffers staging(/*pinned=*/dev.cuda());
  std::future<void> inflight;  // at most one asynchronous save, written from STAGING
  auto checkInflight = [&](bool wait) {
    if (!inflight.valid()) return;
    if (wait || inflight.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      inflight.get();  // rethrows a failed save here, at the next step
    }
  };
  // Every rank calls save() at the same points (the generator states are gathered); rank 0 writes.
  auto gatherStates = [&](const std::vector<uint8_t>& mine) {
    std::vector<uint8_t> all(mine.size() * static_cast<size_t>(world));
    if (!mine.empty()) comm.allGather(mine.data(), all.data(), mine.size());
    return all;
  };
  auto save = [&](bool allowAsync) {
    std::vector<uint8_t> all = gatherStates(cpuGeneratorState());
    std::vector<uint8_t> allDevice = gatherStates(deviceGeneratorState(dev));
    lastSavedStep = progress.step;
    if (!lead) return;
    checkInflight(true);
    CheckpointMeta meta{c.arch, c.optimizer, configText, configSha, /*paramSha256=*/"", dataSnapshot, dataShards,
                        c.seed, world, globalBatch, capBytes, reducer.buckets(), std::move(all),
                        {}, spec.featureShape, norm.mean, norm.stdev, std::move(allDevice)};
    // Metrics belong to a checkpoint only if they were measured on its weights.
    nlohmann::json m = nlohmann::json::object();
    if (lastEvalStep == progress.step) {
      meta.metrics = lastEval.testMetrics();
      for (const auto& [k, v] : meta.metrics) m[k] = v;
    }
    const bool async = allowAsync && c.ckptAsync;
    const auto t0 = Clock::now();
    checkpoint::Document doc = captureState(*model, *optimizer, progress, meta, /*copy=*/async, &staging);
    const int64_t step = progress.step, epoch = progress.epoch;
    if (async) {
      const double copySecs = secondsSince(t0);
      inflight = std::async(std::launch::async, [&store, doc = std::move(doc), step, epoch, m, resumedFrom]() {
        store.save(doc, step, epoch, m, resumedFrom);
      });
      log->debug("checkpoint at step {}: state copied in {:.3f} s, writing in the background", step, copySecs);
    } else {
      auto info = store.save(doc, step, epoch, m, resumedFrom);
      log->info("checkpoint {} (step {}, {:.2f} s)", info.path, step, secondsSince(t0));
    }
  };

  double trainSeconds = 0;
  const int64_t samplesBefore = progress.samplesSeen;  // trained before a resume: not this run's time
  // The loss is summed where it is computed and read once per log window: on a GPU, reading it
  // every step would make the host wait for the GPU before it could queue the backward pass. On
  // the CPU it is read as it comes (no tensor arithmetic per step).
  const auto lossOptions = torch::TensorOptions().dtype(torch::kDouble).device(dev.device);
  torch::Tensor windowLoss = torch::zeros({}, lossOptions);
  double windowLossHost = 0;
  int64_t windowSteps = 0;
  auto windowStart = Clock::now();
  double windowPaused = 0;  // evaluation and checkpoint time inside the window: not training
  bool preempted = false;
  const bool hasBuffers = !model->buffers().empty();
  StepTimer timer;
  for (; progress.epoch < c.epochs && progress.step < stopAt && !preempted; ) {
    const std::vector<int64_t> mine = sampler.indices(progress.epoch, progress.cursor);
    const int64_t stepsLeftInEpoch = static_cast<int64_t>(mine.size()) / perStep;
    const int64_t stepsThisEpoch = std::min(stepsLeftInEpoch, stopAt - progress.step);
    std::vector<std::vector<int64_t>> batches =
        data::DistributedSampler::microBatches(mine, stepsThisEpoch, c.gradAccum, localBatch);
    std::vector<std::vector<int64_t>> logged;  // the micro-batches again, for the sample log
    if (options.logSamples) logged = batches;
    model->train();
    auto epochStart = Clock::now();
    {
      data::BatchLoader loader(trainSet, std::move(batches), static_cast<size_t>(c.prefetch));
      timer.resume();
      for (int64_t s = 0; s < stepsThisEpoch; ++s) {
        reducer.zeroGrad();
        const bool windowEnds = (progress.step + 1) % c.logEvery == 0 || progress.step + 1 == stopAt;
        torch::Tensor stepLoss = dev.cuda() ? torch::zeros({}, lossOptions) : torch::Tensor();
        double stepLossHost = 0;
        for (int64_t m = 0; m < c.gradAccum; ++m) {
          timer.lap(StepTimer::kOther);
          auto batch = loader.next();
          PERENNIAL_CHECK(batch.has_value(), "loader ran out of batches at step " << progress.step);
          timer.lap(StepTimer::kLoader);
          torch::Tensor out = predict(model, featureTensor(*batch, spec, norm, dev.device), spec, c.arch);
          torch::Tensor loss = batchLoss(out, *batch, spec);
          if (dev.cuda()) {
            stepLoss += loss.detach().to(torch::kDouble) / static_cast<double>(c.gradAccum);
          } else {
            stepLossHost += static_cast<double>(loss.item<float>()) / static_cast<double>(c.gradAccum);
          }
          // NOTE [Prescaled gradients]: dividing the loss by (micro-batches x world size) makes
          // backward produce the averaged gradient's share directly, so the all-reduce's sum is
          // the average and no division pass over the buckets is needed.
          if (lossScale != 1.0) loss = loss / lossScale;
          if (m + 1 == c.gradAccum) {
            // Before the backward pass that completes the gradients: with comm.overlap its hooks
            // start the all-reduce of the last bucket, which carries the control block.
            if (dev.cuda()) {
              windowLoss += stepLoss;
            } else {
              windowLossHost += stepLossHost;
            }
            ++windowSteps;
            if (controlInBucket) {
              const double mineLoss = windowEnds ? windowLossHost : 0;
              torch::Tensor ctl = reducer.control();
              if (ctl.scalar_type() == torch::kFloat32) {
                encodeControl(ctl.data_ptr<float>(), world, rank, signals.requested(), mineLoss, reducer.controlWireType());
              } else {
                encodeControl(ctl.data_ptr<double>(), world, rank, signals.requested(), mineLoss, reducer.controlWireType());
              }
            }
            reducer.expectBackward(/*prescaled=*/true);
          }
          timer.lap(StepTimer::kForward);
          loss.backward();
          timer.lap(StepTimer::kBackward);
        }
        reducer.reduce(/*prescaled=*/true);
        ControlValues control;
        if (controlInBucket) {
          torch::Tensor ctl = reducer.control();
          control = ctl.scalar_type() == torch::kFloat32 ? decodeControl(ctl.data_ptr<float>(), world)
                                                         : decodeControl(ctl.data_ptr<double>(), world);
        }
        timer.lap(StepTimer::kReduce);
        const double lr = schedule.at(progress.step);
        for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
        optimizer->step();
        timer.lap(StepTimer::kOptimizer);
        timer.countStep();
        if (hasBuffers) broadcastBuffers(*model, tcomm);
        ++progress.step;
        progress.cursor += globalBatch;
        progress.samplesSeen += globalBatch;
        if (options.logSamples) {
          const auto first = logged.begin() + s * c.gradAccum;
          sampleLog.write(progress.epoch, progress.step, {first, first + c.gradAccum});
        }
        if (windowEnds) {
          // The mean loss over the window, across all ranks: from the control block, or one
          // small all-reduce per window.
          double meanLoss = 0;
          if (controlInBucket) {
            meanLoss = control.lossSum / static_cast<double>(world * windowSteps);
          } else {
            double agg[2] = {dev.cuda() ? windowLoss.item<double>() : windowLossHost, static_cast<double>(windowSteps)};
            comm.allReduceSum(agg, 2);
            meanLoss = agg[0] / agg[1];
          }
          const double windowSecs = secondsSince(windowStart) - windowPaused;
          const double sps = windowSecs > 0 ? static_cast<double>(windowSteps * globalBatch) / windowSecs : 0;
          bar.update(progress.epoch, progress.step, meanLoss, lr, sps);
          metrics.write({{"kind", "train"}, {"epoch", progress.epoch}, {"step", progress.step}, {"loss", meanLoss},
                         {"lr", lr}, {"samples_per_second", sps}});
          if (dev.cuda()) windowLoss.zero_();
          windowLossHost = 0;
          windowSteps = 0;
          windowStart = Clock::now();
          windowPaused = 0;
        }
        if (lead) checkInflight(false);
        // NOTE [Stop agreement]: a signal reaches ranks at different moments; the flag, summed
        // over the ranks each step (in the control block, or by its own all-reduce), makes every
        // rank stop after the same step.
        bool stop = control.stop;
        if (!controlInBucket) {
          int32_t flag = signals.requested() ? 1 : 0;
          comm.allReduce(&flag, 1, DType::kInt32, ReduceOp::kMax);
          stop = flag != 0;
        }
        if (stop) {
          preempted = true;
          break;
        }
        // The epoch's last step is saved by the epoch-end save when one follows (with metrics).
        const bool epochEndSave = s + 1 == stepsLeftInEpoch && c.ckptEveryEpochs > 0 &&
                                  (progress.epoch + 1) % c.ckptEveryEpochs == 0 && progress.epoch + 1 < c.epochs;
        if (c.ckptEverySteps > 0 && progress.step % c.ckptEverySteps == 0 && progress.step < stopAt && !epochEndSave) {
          trainSeconds += secondsSince(epochStart);
          const auto pauseStart = Clock::now();
          save(true);
          windowPaused += secondsSince(pauseStart);
          epochStart = Clock::now();
          timer.resume();
        }
      }
      timer.addLoaderCpu(loader.threadCpuSeconds());
    }
    trainSeconds += secondsSince(epochStart);
    if (preempted) break;
    // The epoch is over when what is left of it cannot fill another step on every rank.
    const bool epochDone = (trainSet.size() - progress.cursor) / world / perStep == 0;
    if (!epochDone) break;  // stopped early by train.max_steps
    const auto pauseStart = Clock::now();
    lastEval = evaluate(model, testSet, comm, c.evalBatchSize, static_cast<size_t>(c.prefetch), norm, c.arch, dev.device);
    lastEvalStep = progress.step;
    if (lead) {
      bar.message("epoch " + std::to_string(progress.epoch + 1) + ": " + describe(lastEval));
      metrics.write(evalRecord(lastEval, progress));
    }
    ++progress.epoch;
    progress.cursor = 0;
    if (c.ckptEveryEpochs > 0 && progress.epoch % c.ckptEveryEpochs == 0 && progress.epoch < c.epochs &&
        progress.step < stopAt && lastSavedStep != progress.step) {
      save(true);
    }
    windowPaused += secondsSince(pauseStart);
  }
  bar.finish();

  if (preempted) {
    if (lead) log->warn("signal {} received: checkpointing at step {} and exiting for requeue", signals.signal(), progress.step);
    if (lead) checkInflight(true);
    save(false);
    comm.barrier();
    result.preempted = true;
    result.steps = progress.step;
    result.wallSeconds = secondsSince(wallStart);
    return result;
  }

  // A run stopped mid-epoch (train.max_steps), or resumed with nothing left to do, has not
  // evaluated its final weights yet.
  if (lastEval.samples == 0 || progress.cursor != 0) {
    lastEval = evaluate(model, testSet, comm, c.evalBatchSize, static_cast<size_t>(c.prefetch), norm, c.arch, dev.device);
    lastEvalStep = progress.step;
    if (!metrics.hasEvalAt(progress.step)) metrics.write(evalRecord(lastEval, progress));
  }
  if (lead) checkInflight(true);
  if (lastSavedStep != progress.step) save(false);

  result.paramSha256 = paramSha256(*model);
  checkSameWeights(result.paramSha256, comm);
  result.test = lastEval;
  result.epochs = progress.epoch + (progress.cursor > 0 ? 1 : 0);
  result.steps = progress.step;
  result.samplesSeen = progress.samplesSeen;
  result.trainSeconds = trainSeconds;
  result.samplesPerSecond =
      trainSeconds > 0 ? static_cast<double>(result.samplesSeen - samplesBefore) / trainSeconds : 0;
  result.dataSnapshot = dataSnapshot;
  result.resumedFrom = resumedFrom;
  result.hosts = where.hosts;
  result.nodes = where.nodes();
  result.commBackend = tcomm.backend();
  result.device = dev.name();
  result.deterministic = c.deterministic || !dev.cuda();

  // Where the training steps' time went (StepTimer): result.json and the log.
  std::string stepTimesText;
  for (const auto& [phase, ms] : timer.millisecondsPerStep()) {
    result.stepTimeMs[phase] = ms;
    char part[64];
    std::snprintf(part, sizeof(part), "%s%s %.3f", stepTimesText.empty() ? "" : ", ", phase.c_str(), ms);
    stepTimesText += part;
  }
  if (lead && timer.steps() > 0) log->info("step time (ms per step, rank 0, {} steps): {}", timer.steps(), stepTimesText);
  if (lead) {
    std::vector<checkpoint::TensorView> views;
    std::vector<torch::Tensor> keep;
    for (const auto& [name, value] : stateDict(*model)) {
      torch::Tensor t = value.detach().to(torch::kCPU).contiguous();
      keep.push_back(t);
      views.push_back({name, toDType(t.scalar_type()), t.sizes().vec(), t.data_ptr()});
    }
    std::vector<checkpoint::Group> extra;
    if (norm.active()) extra.push_back(normalizationGroup(spec.featureShape, norm.mean, norm.stdev));
    // The model as TorchScript with its trained weights (model.pt), so that the run directory and
    // the registry version that copies it are self-contained and load in PyTorch and LibTorch.
    saveTorchScriptAtomically(model, runDir + "/" + run_dir::kTorchScript);
    checkpoint::writeTensorFile(runDir + "/" + run_dir::kModel, views,
                                {{"arch", c.arch}, {"param_sha256", result.paramSha256},
                                 {"config", configText}, {"perennial_version", PERENNIAL_VERSION}},
                                std::move(extra));
    result.wallSeconds = secondsSince(wallStart);
    fs::writeFileAtomic(runDir + "/" + run_dir::kResult, dumpJson(result.toJson(), 2) + "\n");
    log->info("done: {}, {} steps, {:.0f} samples/s, param_sha256 {}", describe(lastEval), result.steps,
              result.samplesPerSecond, result.paramSha256);
  }
  result.wallSeconds = secondsSince(wallStart);
  return result;
}

}  // namespace perennial
