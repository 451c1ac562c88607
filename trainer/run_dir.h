#pragma once
// What `perennial train --run-dir RUN` writes, by name (trainer.h describes each file). Readers
// of a run directory (the scheduler's RunPaths, the gate, the report) use these names.
namespace perennial::run_dir {

inline constexpr const char* kConfig = "config.cfg";         // the resolved configuration
inline constexpr const char* kMetrics = "metrics.jsonl";     // train and eval records
inline constexpr const char* kModel = "model.h5";            // the final weights
inline constexpr const char* kTorchScript = "model.pt";      // the trained model as TorchScript
inline constexpr const char* kSamples = "samples";           // --log-samples: rank-R.jsonl
inline constexpr const char* kCheckpoints = "checkpoints";   // checkpoints and manifests
inline constexpr const char* kResult = "result.json";        // TrainResult (results.h), written last

}  // namespace perennial::run_dir
