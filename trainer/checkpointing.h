#pragma once
// Training state <-> checkpoint documents (format: docs/checkpoint-format.md).
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/document.h"
#include "trainer/comm/bucket_plan.h"

namespace perennial {

class StagingBuffers;

// Where training stands: the next optimizer step to take is `step`; `epoch` is the epoch in
// progress and `cursor` the number of its samples (all ranks together) already consumed.
struct TrainProgress {
  int64_t epoch = 0;
  int64_t step = 0;
  int64_t cursor = 0;
  int64_t samplesSeen = 0;
};

// Everything besides tensors that a checkpoint records.
struct CheckpointMeta {
  std::string arch;
  std::string optimizer;       // sgd | adam
  std::string configText;      // resolved INI
  std::string configSha256;
  std::string paramSha256;     // empty: computed from the captured tensors while they are written
  std::string dataSnapshot;    // SHA-256 over the training shards' hashes, in order
  std::string dataShards;      // one line per training shard: "<sha256> <rows> <file name>"
  uint64_t samplerSeed = 0;
  int worldSize = 1;
  int64_t globalBatch = 0;
  size_t bucketCapBytes = 0;
  std::vector<Bucket> buckets;
  std::vector<uint8_t> rngStates;  // world x per-rank CPU generator state, rank order
  // Last evaluation of these weights ("test_accuracy", "test_loss", ...; empty: none yet),
  // stored as float attributes "metrics.<name>".
  std::map<std::string, double> metrics;
  // Feature standardisation (data.normalize), each of the feature shape; empty: none.
  std::vector<int64_t> featureShape;
  std::vector<float> normMean, normStd;
  // world x per-rank state of the GPU's generator (training on a GPU), rank order; empty on the CPU.
  std::vector<uint8_t> deviceRngStates;
};

// Builds the checkpoint document. With COPY the tensors are copied into the document (for an
// asynchronous save, so training may go on); without, the document points at the live tensors
// and must be written before they change. With COPY and STAGING the copies go into STAGING's
// reused memory (NOTE [Staging buffers]): the document must then be written before STAGING is
// used again.
checkpoint::Document captureState(torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                  const TrainProgress& progress, const CheckpointMeta& meta, bool copy,
                                  StagingBuffers* staging = nullptr);

struct RestoredState {
  TrainProgress progress;
  int worldSize = 1;
  std::string configText;
  std::string configSha256;
  std::string dataSnapshot;
  bool rngRestored = false;
  std::vector<float> normMean, normStd;  // empty when the checkpoint has no normalization group
  // This rank's GPU generator state when the checkpoint was written on GPUs at this world size
  // (the caller sets it when it trains on a GPU); else empty.
  std::vector<uint8_t> deviceRngState;
};

// Loads model parameters and buffers (into the model's device, CPU or GPU), optimizer state (onto
// each parameter's device) and (when the world size matches) this rank's generator state from DOC. Throws DataError naming SOURCE and the tensor when the
// checkpoint does not fit the model or optimizer.
// PRELOADED: optimizer tensors already holding the document's data ("optimizer/<kind>/<name>").
RestoredState restoreState(const checkpoint::Document& doc, const std::string& source,
                           torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                           const std::string& optimizerName, int rank, int worldSize,
                           const std::map<std::string, torch::Tensor>* preloaded = nullptr);

// Verifies the checkpoint at PATH and restores it, reading parameters straight into the model
// (no intermediate copy). Throws like verifyCheckpoint and restoreState.
RestoredState loadCheckpoint(const std::string& path, torch::nn::Module& model,
                             torch::optim::Optimizer& optimizer, const std::string& optimizerName, int rank,
                             int worldSize);

// The "normalization" group of checkpoints and weights files: float32 tensors "mean" and "std",
// each of the feature shape. Reading checks that std is positive and both are finite.
checkpoint::Group normalizationGroup(const std::vector<int64_t>& featureShape, const std::vector<float>& mean,
                                     const std::vector<float>& stdev);
std::pair<std::vector<float>, std::vector<float>> readNormalizationGroup(const checkpoint::Group& g,
                                                                         const std::string& source);

// This process's CPU generator state (fixed size), and setting it back.
std::vector<uint8_t> cpuGeneratorState();

// See NOTE [param_sha256] in trainer.cpp.
std::string paramSha256(torch::nn::Module& model);

}  // namespace perennial
