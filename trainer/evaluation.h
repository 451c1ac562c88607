#pragma once
// The trainer's evaluation and the model's view of the data, shared by train() (trainer.cpp) and
// `perennial eval` / the validation gate (evaluateWeights, declared in trainer.h): normalisation
// of the features, batches as tensors, the model's outputs and loss, the evaluation of a model
// on a shard directory across the ranks, and reading weights files into a model.
// Internal to perennial::trainer.
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "checkpoint/tensor_file.h"
#include "dataset/shard_dataset.h"
#include "trainer/checkpointing.h"
#include "trainer/comm/communicator.h"
#include "trainer/config/train_config.h"
#include "trainer/data/batch_loader.h"
#include "trainer/models/model_factory.h"
#include "trainer/results.h"

namespace perennial {

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

// Whether data.normalize (auto: float32 features) asks for standardised features.
bool wantsNormalization(const TrainConfig& c, const data::DatasetSpec& spec);
// Mean and standard deviation of every feature element over DS, all ranks together.
void computeNormalization(data::ShardedDataset& ds, Communicator& comm, Normalization& out);
// The normalization recorded in a weights file or checkpoint (none when it has no such group).
void readNormalization(const checkpoint::TensorFile& file, const std::string& path,
                       const std::vector<int64_t>& featureShape, Normalization& out);

// What the model factory needs to know of the data.
ModelInput modelInput(const data::DatasetSpec& spec);
// A batch's features as the model's input, on DEVICE, standardised by NORM when it is active.
torch::Tensor featureTensor(data::Batch& b, const data::DatasetSpec& spec, const Normalization& norm,
                            const torch::Device& device);
// A batch's targets on DEVICE: int64 labels [rows] or float32 values [rows].
torch::Tensor targetTensor(data::Batch& b, const data::DatasetSpec& spec, const torch::Device& device);
// The model's output for X: logits [rows, classes], or values [rows]; ConfigError naming
// model.arch when the shape does not fit the data.
torch::Tensor predict(const Model& model, const torch::Tensor& x, const data::DatasetSpec& spec,
                      const std::string& arch);
// Mean loss of a batch: cross-entropy for class labels, mean squared error for values.
torch::Tensor batchLoss(const torch::Tensor& out, data::Batch& b, const data::DatasetSpec& spec);

// "test accuracy 0.8812, test loss 0.3301 (10000 samples)" or the regression equivalent.
std::string describe(const EvalMetrics& e);
// A metrics.jsonl evaluation record at progress P.
nlohmann::json evalRecord(const EvalMetrics& e, const TrainProgress& p);
// Evaluates MODEL on TEST: each rank a contiguous block, the sums all-reduced over COMM (the host
// communicator), so every sample counts once whatever the world size. The model and NORM's
// tensors are on DEVICE.
EvalMetrics evaluate(const Model& model, data::ShardedDataset& test, Communicator& comm, int64_t batchSize,
                     size_t prefetch, const Normalization& norm, const std::string& arch, const torch::Device& device);

// The model's state_dict: parameters, then buffers.
std::vector<std::pair<std::string, torch::Tensor>> stateDict(torch::nn::Module& model);
// Copies a weights file's tensors into MODEL, checking every name, shape and type.
void copyWeights(const checkpoint::TensorFile& file, const std::string& path, const std::string& arch,
                 torch::nn::Module& model);
// For a TorchScript model: model.pt beside the weights file WEIGHTS_PATH when there is one.
void locateScript(TrainConfig& c, const std::string& weightsPath);

}  // namespace perennial
