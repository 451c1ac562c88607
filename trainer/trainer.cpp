#include "trainer/trainer.h"

#include <torch/torch.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoint/tensor_file.h"
#include "common/error.h"
#include "common/fs_util.h"
#include "common/log.h"
#include "common/sha256.h"
#include "perennial/build_config.h"
#include "trainer/blas_info.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/data/batch_loader.h"
#include "trainer/data/distributed_sampler.h"
#include "trainer/data/shard_dataset.h"
#include "trainer/models/model_factory.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/progress.h"

namespace perennial {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// NOTE [param_sha256]: SHA-256 over the raw bytes of every parameter, in named_parameters()
// order (the state_dict order), each as a contiguous CPU tensor in native (little-endian) byte
// order. Names, shapes and buffers are not hashed. Two runs with the same config, data, seed and
// world size give the same value; so do all ranks of one run (checked at the end of training).
std::string paramSha256(torch::nn::Module& model) {
  Sha256 h;
  for (const auto& p : model.parameters()) {
    torch::Tensor t = p.detach().to(torch::kCPU).contiguous();
    h.update(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  }
  return toHex(h.finish());
}

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const TrainConfig& c,
                                                       const std::vector<torch::Tensor>& params) {
  if (c.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weightDecay).nesterov(c.nesterov));
  }
  return std::make_unique<torch::optim::Adam>(
      params, torch::optim::AdamOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(c.weightDecay));
}

torch::Tensor featureTensor(data::Batch& b, const data::DatasetSpec& spec) {
  std::vector<int64_t> shape{b.rows};
  shape.insert(shape.end(), spec.featureShape.begin(), spec.featureShape.end());
  return torch::from_blob(b.features.data(), shape, torch::kFloat32);
}

struct EvalResult {
  double loss = 0, accuracy = 0;
  int64_t samples = 0;
};

// Each rank evaluates a contiguous block of the test set; sums are all-reduced, so every sample
// is counted exactly once whatever the world size.
EvalResult evaluate(torch::nn::Sequential& model, data::ShardedDataset& test, Communicator& comm,
                    int64_t batchSize, size_t prefetch) {
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
  double sums[3] = {0, 0, 0};  // loss sum, correct, samples
  data::BatchLoader loader(test, std::move(batches), prefetch);
  while (auto batch = loader.next()) {
    torch::Tensor x = featureTensor(*batch, test.spec());
    torch::Tensor y = torch::from_blob(batch->labels.data(), {batch->rows}, torch::kInt64);
    torch::Tensor logits = model->forward(x);
    sums[0] += torch::nn::functional::cross_entropy(
                   logits, y, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
                   .item<double>();
    sums[1] += logits.argmax(1).eq(y).sum().item<double>();
    sums[2] += static_cast<double>(batch->rows);
  }
  comm.allReduceSum(sums, 3);
  EvalResult e;
  e.samples = static_cast<int64_t>(sums[2]);
  e.loss = sums[2] > 0 ? sums[0] / sums[2] : 0;
  e.accuracy = sums[2] > 0 ? sums[1] / sums[2] : 0;
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

class MetricsLog {
 public:
  MetricsLog(const std::string& path, bool active) {
    if (active) {
      out_.open(path, std::ios::trunc);
      if (!out_) throw IoError(path + ": cannot open for writing");
    }
  }
  void write(const json& j) {
    if (!out_.is_open()) return;
    out_ << j.dump() << '\n';
    out_.flush();
  }

 private:
  std::ofstream out_;
};

}  // namespace

EvalSummary evaluateWeights(const std::string& modelPath, const std::string& dataDir,
                            Communicator& comm, int64_t batchSize) {
  checkpoint::TensorFile file = checkpoint::readTensorFile(modelPath);
  auto configIt = file.attributes.find("config");
  if (configIt == file.attributes.end()) {
    throw DataError(modelPath + ": no 'config' attribute (not written by perennial train?)");
  }
  TrainConfig c = parseTrainConfigText(configIt->second, modelPath + "@config");
  data::ShardedDataset ds(dataDir);
  torch::nn::Sequential model = makeModel(c, {ds.spec().featureShape, ds.spec().numClasses});
  {
    torch::NoGradGuard noGrad;
    auto named = model->named_parameters();
    if (named.size() != file.tensors.size()) {
      throw DataError(modelPath + ": has " + std::to_string(file.tensors.size()) + " tensors, the " + c.arch +
                      " it records has " + std::to_string(named.size()) + " parameters");
    }
    for (const auto& t : file.tensors) {
      torch::Tensor* p = named.find(t.name);
      if (!p) throw DataError(modelPath + ": tensor '" + t.name + "' is not a parameter of the recorded model");
      if (p->sizes().vec() != t.shape || t.type != DType::kFloat32) {
        throw DataError(modelPath + ": tensor '" + t.name + "' has the wrong shape or type for the recorded model");
      }
      std::memcpy(p->data_ptr(), t.bytes.data(), t.bytes.size());
    }
  }
  EvalSummary out;
  out.paramSha256 = paramSha256(*model);
  auto recorded = file.attributes.find("param_sha256");
  if (recorded != file.attributes.end() && recorded->second != out.paramSha256) {
    throw DataError(modelPath + ": weights do not match the recorded param_sha256 (" + recorded->second +
                    "); the file is corrupt or was modified");
  }
  EvalResult e = evaluate(model, ds, comm, batchSize, 4);
  out.accuracy = e.accuracy;
  out.loss = e.loss;
  out.samples = e.samples;
  return out;
}

TrainResult train(const TrainConfig& c, const std::string& runDir, Communicator& comm) {
  const auto wallStart = Clock::now();
  const int rank = comm.rank(), world = comm.size();
  const bool lead = rank == 0;
  auto log = log::get("train");

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
  if (!(testSet.spec().featureShape == trainSet.spec().featureShape) ||
      testSet.spec().numClasses != trainSet.spec().numClasses) {
    throw ConfigError("data.test: " + c.testDir + " has a different feature shape or class count than data.train " + c.trainDir);
  }
  const int64_t localBatch = c.batchSize;
  const int64_t globalBatch = localBatch * c.gradAccum * world;
  data::DistributedSampler sampler(trainSet.size(), world, rank, c.seed);
  const int64_t stepsPerEpoch = sampler.samplesPerRank() / (localBatch * c.gradAccum);
  if (stepsPerEpoch == 0) {
    throw ConfigError("train.batch_size: " + std::to_string(localBatch) + " x train.grad_accum " +
                      std::to_string(c.gradAccum) + " x world size " + std::to_string(world) +
                      " exceeds the " + std::to_string(trainSet.size()) + " training samples");
  }
  int64_t totalSteps = c.epochs * stepsPerEpoch;
  if (c.maxSteps > 0) totalSteps = std::min(totalSteps, c.maxSteps);

  torch::manual_seed(c.seed);
  torch::nn::Sequential model = makeModel(c, {trainSet.spec().featureShape, trainSet.spec().numClasses});
  std::vector<torch::Tensor> params = model->parameters();
  const auto capBytes = static_cast<size_t>(c.bucketCapMb * 1024 * 1024);
  GradientReducer reducer(params, comm, capBytes);
  reducer.broadcastParameters(0);
  auto optimizer = makeOptimizer(c, params);
  // Per-rank stream for dropout; initialisation above used the shared seed on every rank.
  torch::manual_seed(c.seed * 1000003ULL + static_cast<uint64_t>(rank) + 1);

  LrSchedule schedule{c.schedule, c.lr, c.warmupSteps, c.stepSize, c.gamma, c.minLr, totalSteps};
  int64_t numParams = 0;
  for (const auto& p : params) numParams += p.numel();

  const std::string configText = c.toIni();
  TrainResult result;
  result.worldSize = world;
  result.configSha256 = toHex(sha256(configText.data(), configText.size()));
  if (lead) {
    std::filesystem::create_directories(runDir);
    fs::writeFileAtomic(runDir + "/config.cfg", configText);
    log->info("{} with {} parameters; {} training / {} test samples; world size {}, global batch {} "
              "({} per rank x {} micro-batches); {} steps per epoch, {} steps; {} gradient bucket(s)",
              c.arch, numParams, trainSet.size(), testSet.size(), world, globalBatch, localBatch,
              c.gradAccum, stepsPerEpoch, totalSteps, reducer.buckets().size());
  }
  MetricsLog metrics(runDir + "/metrics.jsonl", lead);
  Progress progress(c.progress, totalSteps, c.epochs, lead);

  int64_t step = 0;
  double trainSeconds = 0;
  EvalResult lastEval;
  double windowLoss = 0;
  int64_t windowSteps = 0;
  auto windowStart = Clock::now();
  int64_t epoch = 0;
  for (; epoch < c.epochs && step < totalSteps; ++epoch) {
    const std::vector<int64_t> mine = sampler.indices(epoch);
    const int64_t stepsThisEpoch = std::min(stepsPerEpoch, totalSteps - step);
    std::vector<std::vector<int64_t>> batches;
    batches.reserve(static_cast<size_t>(stepsThisEpoch * c.gradAccum));
    for (int64_t m = 0; m < stepsThisEpoch * c.gradAccum; ++m) {
      batches.emplace_back(mine.begin() + m * localBatch, mine.begin() + (m + 1) * localBatch);
    }
    model->train();
    const auto epochStart = Clock::now();
    {
      data::BatchLoader loader(trainSet, std::move(batches), static_cast<size_t>(c.prefetch));
      for (int64_t s = 0; s < stepsThisEpoch; ++s) {
        reducer.zeroGrad();
        double stepLoss = 0;
        for (int64_t m = 0; m < c.gradAccum; ++m) {
          auto batch = loader.next();
          PERENNIAL_CHECK(batch.has_value(), "loader ran out of batches at step " << step);
          torch::Tensor x = featureTensor(*batch, trainSet.spec());
          torch::Tensor y = torch::from_blob(batch->labels.data(), {batch->rows}, torch::kInt64);
          torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
          if (c.gradAccum > 1) loss = loss / static_cast<double>(c.gradAccum);
          loss.backward();
          stepLoss += loss.item<double>();
        }
        reducer.reduce();
        const double lr = schedule.at(step);
        for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
        optimizer->step();
        ++step;
        windowLoss += stepLoss;
        ++windowSteps;
        if (step % c.logEvery == 0 || step == totalSteps) {
          // The mean loss over the window, across all ranks: one small all-reduce per window.
          double agg[2] = {windowLoss, static_cast<double>(windowSteps)};
          comm.allReduceSum(agg, 2);
          const double windowSecs = secondsSince(windowStart);
          const double sps = windowSecs > 0 ? static_cast<double>(windowSteps * globalBatch) / windowSecs : 0;
          const double meanLoss = agg[0] / agg[1];
          progress.update(epoch, step, meanLoss, lr, sps);
          metrics.write({{"kind", "train"}, {"epoch", epoch}, {"step", step}, {"loss", meanLoss},
                         {"lr", lr}, {"samples_per_second", sps}});
          windowLoss = 0;
          windowSteps = 0;
          windowStart = Clock::now();
        }
      }
    }
    trainSeconds += secondsSince(epochStart);
    lastEval = evaluate(model, testSet, comm, c.evalBatchSize, static_cast<size_t>(c.prefetch));
    if (lead) {
      char line[160];
      std::snprintf(line, sizeof(line), "epoch %lld: test accuracy %.4f, test loss %.4f (%lld samples)",
                    (long long)(epoch + 1), lastEval.accuracy, lastEval.loss, (long long)lastEval.samples);
      progress.message(line);
      metrics.write({{"kind", "eval"}, {"epoch", epoch}, {"step", step},
                     {"test_accuracy", lastEval.accuracy}, {"test_loss", lastEval.loss},
                     {"test_samples", lastEval.samples}});
    }
    windowStart = Clock::now();  // evaluation time is not training time
  }
  progress.finish();

  result.paramSha256 = paramSha256(*model);
  checkSameWeights(result.paramSha256, comm);
  result.testAccuracy = lastEval.accuracy;
  result.testLoss = lastEval.loss;
  result.epochs = epoch;
  result.steps = step;
  result.samplesSeen = step * globalBatch;
  result.trainSeconds = trainSeconds;
  result.samplesPerSecond = trainSeconds > 0 ? static_cast<double>(result.samplesSeen) / trainSeconds : 0;

  if (lead) {
    std::vector<checkpoint::TensorView> views;
    std::vector<torch::Tensor> keep;
    for (const auto& item : model->named_parameters()) {
      torch::Tensor t = item.value().detach().contiguous();
      keep.push_back(t);
      views.push_back({item.key(), DType::kFloat32, t.sizes().vec(), t.data_ptr()});
    }
    checkpoint::writeTensorFile(runDir + "/model.h5", views,
                                {{"arch", c.arch}, {"param_sha256", result.paramSha256},
                                 {"config", configText}, {"perennial_version", PERENNIAL_VERSION}});
    result.wallSeconds = secondsSince(wallStart);
    json j = {{"test_accuracy", result.testAccuracy},
              {"test_loss", result.testLoss},
              {"epochs", result.epochs},
              {"steps", result.steps},
              {"samples_seen", result.samplesSeen},
              {"world_size", result.worldSize},
              {"global_batch", globalBatch},
              {"samples_per_second", result.samplesPerSecond},
              {"train_seconds", result.trainSeconds},
              {"wall_seconds", result.wallSeconds},
              {"param_sha256", result.paramSha256},
              {"config_sha256", result.configSha256},
              {"model", "model.h5"},
              {"arch", c.arch},
              {"parameters", numParams},
              {"comm_backend", comm.backend()},
              {"perennial_version", PERENNIAL_VERSION}};
    fs::writeFileAtomic(runDir + "/result.json", j.dump(2) + "\n");
    log->info("done: test accuracy {:.4f}, test loss {:.4f}, {} steps, {:.0f} samples/s, param_sha256 {}",
              result.testAccuracy, result.testLoss, result.steps, result.samplesPerSecond, result.paramSha256);
  }
  result.wallSeconds = secondsSince(wallStart);
  return result;
}

}  // namespace perennial
