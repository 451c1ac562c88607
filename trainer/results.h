#pragma once
// What the trainer measures and reports, as types: the contract between `perennial train` /
// `perennial eval` and their readers (the scheduler, the validation gate, the report, scripts).
// Torch-free (perennial::trainer_api), so that the scheduler reads them without LibTorch.
//
//   EvalMetrics   one evaluation of a model on a dataset: classification (accuracy, loss as mean
//                 cross-entropy, per-class counts) or regression (loss = MSE, MSE, MAE, R2)
//   TrainResult   a finished training run: RUN/result.json
//
// Each has toJson()/fromJson(); fromJson(toJson(x)) == x for every field the JSON carries, and
// fromJson throws DataError naming WHAT (a file) and the field on a document that does not fit.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace perennial {

struct EvalMetrics {
  bool regression = false;          // the task: float32 targets; else classification
  double accuracy = 0;              // classification (-1 for regression)
  double loss = 0;                  // mean cross-entropy, or MSE for regression
  double mse = 0, mae = 0, r2 = 0;  // regression
  int64_t samples = 0;
  int64_t nonFiniteOutputs = 0;     // rows whose outputs hold a NaN or an infinity
  std::vector<int64_t> classCorrect, classTotal;  // classification, per class

  const char* task() const { return regression ? "regression" : "classification"; }
  double classAccuracy(size_t k) const;
  // The test metrics by name, as result.json, checkpoints and metrics.jsonl record them:
  // test_accuracy and test_loss, or test_loss, test_mse, test_mae and test_r2.
  std::map<std::string, double> testMetrics() const;
  // {"task", "accuracy", "loss", "samples", "non_finite_outputs", "class_accuracy",
  // "class_samples", "class_correct"} and for regression "mse", "mae", "r2": what `perennial eval
  // --json` prints and a verdict records for each model.
  nlohmann::json toJson() const;
  static EvalMetrics fromJson(const nlohmann::json& j, const std::string& what);
  bool operator==(const EvalMetrics& o) const;
};

struct TrainResult {
  bool preempted = false;        // stopped by a signal after checkpointing; nothing else is set
  EvalMetrics test;              // the last evaluation on data.test
  int64_t epochs = 0;            // epochs started (the last may be partial with train.max_steps)
  int64_t steps = 0;             // optimizer steps
  int64_t samplesSeen = 0;       // training samples consumed by all ranks together
  int worldSize = 1;
  int nodes = 1;                   // distinct hosts of the ranks
  std::vector<std::string> hosts;  // every rank's host, in rank order (empty in older results)
  int64_t globalBatch = 0;       // samples per optimizer step, all ranks together
  double samplesPerSecond = 0;   // samples trained by this call per second of its loop
  double trainSeconds = 0;       // time in the training loop (no evaluation, no start-up)
  double wallSeconds = 0;        // whole call
  std::string paramSha256;       // see NOTE [param_sha256]
  std::string configSha256;      // SHA-256 of the resolved configuration text
  std::string dataSnapshot;      // common/snapshot_id.h, of the shards trained on
  std::string resumedFrom;       // the checkpoint it resumed from ("" when it started fresh)
  std::string model = "model.h5";  // the weights file, relative to the run directory
  std::string arch;
  int64_t parameters = 0;
  std::string commBackend;       // the gradients' communicator: mpi | nccl
  std::string device;            // cpu, cuda:0
  bool deterministic = true;
  std::string perennialVersion;

  // RUN/result.json: the test metrics as testMetrics() names them, "task", and the rest in
  // snake_case ("samples_seen", "param_sha256", ...). A preempted result has no JSON form.
  nlohmann::json toJson() const;
  // Reads a result.json. The test metrics of its task and param_sha256 are required (what the
  // scheduler and the gate act on); every other field may be absent (its default) but must have
  // its type when present. Per-class counts are not in it.
  static TrainResult fromJson(const nlohmann::json& j, const std::string& what);
  // The same from text ("" or unparsable: DataError).
  static TrainResult parse(const std::string& text, const std::string& what);
};

}  // namespace perennial
