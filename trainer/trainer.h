#pragma once
// `perennial train`: data-parallel training of one model over a Communicator.
//
// Every rank runs train() with the same config. Rank 0 owns the run directory's files:
//   config.cfg     the resolved configuration (every key)
//   metrics.jsonl  one JSON object per line: {"kind":"train",...} every train.log_every steps,
//                  {"kind":"eval",...} after each epoch's evaluation
//   model.h5       the final weights (checkpoint/tensor_file.h)
//   checkpoints/   training checkpoints and their manifests (checkpoint/checkpoint_store.h)
//   model.pt       the final model as TorchScript, when it can be scripted (NOTE [TorchScript
//                  export], trainer/models/model_factory.h)
//   samples/       with TrainOptions::logSamples, the rows each rank trained (trainer/run_logs.h)
//   result.json    the final result (TrainResult), written last and atomically
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/exit_codes.h"
#include "trainer/comm/communicator.h"
#include "trainer/config/train_config.h"
#include "trainer/results.h"

namespace perennial {

// Exit status of `perennial train` when a signal made it checkpoint and stop: "requeue me".
inline constexpr int kExitRequeue = exit_code::kRequeue;

struct TrainOptions {
  std::string resume = "none";  // none | auto | PATH
  bool logSamples = false;       // RUN/samples/rank-R.jsonl: NOTE [Sample log] (trainer/run_logs.h)
};

// What evaluateWeights() found: the metrics and what it checked of the weights on the way.
struct EvalSummary {
  EvalMetrics metrics;
  std::string paramSha256;          // computed from the loaded weights
  std::string recordedParamSha256;  // as the file records it ("" when it records none)
  std::string arch;
  std::vector<int64_t> featureShape;  // of the data evaluated on, which the model accepted
  int64_t numClasses = 0;
  int64_t nonFiniteWeights = 0;   // NaN or infinite parameter values
  std::vector<std::vector<float>> logits;  // outputs for the dataset's first rows, when asked for
  std::string device;        // where it was evaluated: "cpu", "cuda:0"
  std::string deviceReason;  // why there
};

// `perennial eval`: loads a weights file written by train() (model.h5, which records its own
// configuration), checks it against its recorded param_sha256, and evaluates it on the shard
// directory DATA_DIR, sharded across the communicator's ranks. Throws DataError naming the file
// and tensor when the weights do not fit the recorded architecture or the data.
// With LOGITS > 0, also returns the logits of the dataset's first LOGITS rows. With
// REQUIRE_RECORDED_HASH false, weights that differ from their recorded param_sha256 are
// evaluated anyway (the validation gate reports the mismatch as a failed check).
// DEVICE (auto | cpu | cuda, resolved as train.device is; KEY names the setting in errors) is
// where the model runs; on a GPU under NOTE [GPU determinism]. The weights' checks
// (param_sha256, non-finite values) are made on the CPU copy read from the file.
EvalSummary evaluateWeights(const std::string& modelPath, const std::string& dataDir,
                            Communicator& comm, int64_t batchSize, int64_t logits = 0,
                            bool requireRecordedHash = true, const std::string& device = "cpu",
                            const std::string& deviceKey = "--device");

// Resolves a device setting (auto | cpu | cuda) as train.device is and returns the device's name
// ("cpu", "cuda:0"); throws ConfigError naming KEY when the value is unknown or unavailable.
std::string resolveDeviceName(const std::string& setting, const std::string& key);

// Throws ConfigError for a config that does not fit the data, DataError for unreadable data,
// CommError when a collective fails, InternalError when ranks end with different weights.
TrainResult train(const TrainConfig& config, const std::string& runDir, Communicator& comm,
                  const TrainOptions& options = {});

}  // namespace perennial
