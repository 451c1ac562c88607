#pragma once
// Training state <-> checkpoint documents (format: docs/checkpoint-format.md).
#include <torch/nn/modules/container/sequential.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "checkpoint/document.h"
#include "trainer/comm/bucket_plan.h"

namespace perennial {

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
  double testAccuracy = -1;        // last evaluation (-1: none yet)
  double testLoss = -1;
};

// Builds the checkpoint document. With COPY the tensors are copied into the document (for an
// asynchronous save, so training may go on); without, the document points at the live tensors
// and must be written before they change.
checkpoint::Document captureState(torch::nn::Sequential& model, torch::optim::Optimizer& optimizer,
                                  const TrainProgress& progress, const CheckpointMeta& meta, bool copy);

struct RestoredState {
  TrainProgress progress;
  int worldSize = 1;
  std::string configText;
  std::string configSha256;
  std::string dataSnapshot;
  bool rngRestored = false;
};

// Loads model parameters and buffers, optimizer state and (when the world size matches) this
// rank's generator state from DOC. Throws DataError naming SOURCE and the tensor when the
// checkpoint does not fit the model or optimizer.
// PRELOADED: optimizer tensors already holding the document's data ("optimizer/<kind>/<name>").
RestoredState restoreState(const checkpoint::Document& doc, const std::string& source,
                           torch::nn::Sequential& model, torch::optim::Optimizer& optimizer,
                           const std::string& optimizerName, int rank, int worldSize,
                           const std::map<std::string, torch::Tensor>* preloaded = nullptr);

// Verifies the checkpoint at PATH and restores it, reading parameters straight into the model
// (no intermediate copy). Throws like verifyCheckpoint and restoreState.
RestoredState loadCheckpoint(const std::string& path, torch::nn::Sequential& model,
                             torch::optim::Optimizer& optimizer, const std::string& optimizerName, int rank,
                             int worldSize);

// This process's CPU generator state (fixed size), and setting it back.
std::vector<uint8_t> cpuGeneratorState();

// See NOTE [param_sha256] in trainer.cpp.
std::string paramSha256(torch::nn::Module& model);

}  // namespace perennial
