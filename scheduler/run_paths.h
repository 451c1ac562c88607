#pragma once
// A run's directory, ROOT/runs/<id>/, in one place:
//   config.cfg       the resolved training configuration (RunRecord::config)
//   snapshot.json    the data snapshot's manifest: every shard's seq, hash, rows and source
//   data/            the snapshot's shards, linked; file names keep the ingest order
//   train/           the trainer's run directory (trainer/run_dir.h): result.json, model.h5, ...
//   attempt-<k>/     one attempt's files, the executor's own (executor.h, slurm_executor.h); the
//                    log of the launcher and every rank is attempt-<k>/log for both executors
//   verdict.json     the validation gate's verdict (Verdict, gate.h); validate.log its output
//   on_promote.log   the output of the registry's on_promote command
// Every path is DIR joined with a name: RunPaths does no I/O.
#include <cstdint>
#include <string>

#include "trainer/run_dir.h"

namespace perennial::sched {

class RunPaths {
 public:
  explicit RunPaths(std::string dir) : dir_(std::move(dir)) {}
  static RunPaths of(const std::string& root, const std::string& runId) { return RunPaths(root + "/runs/" + runId); }

  const std::string& dir() const { return dir_; }
  std::string config() const { return dir_ + "/config.cfg"; }
  std::string snapshot() const { return dir_ + "/snapshot.json"; }
  std::string data() const { return dir_ + "/data"; }
  std::string verdict() const { return dir_ + "/verdict.json"; }
  std::string validateLog() const { return dir_ + "/validate.log"; }
  std::string onPromoteLog() const { return dir_ + "/on_promote.log"; }

  // The trainer's files.
  std::string train() const { return dir_ + "/train"; }
  std::string result() const { return trainFile(run_dir::kResult); }
  std::string model() const { return trainFile(run_dir::kModel); }
  std::string metrics() const { return trainFile(run_dir::kMetrics); }
  std::string checkpoints() const { return trainFile(run_dir::kCheckpoints); }

  // Attempt K's folder and its log.
  std::string attempt(int64_t k) const { return dir_ + "/attempt-" + std::to_string(k); }
  std::string attemptLog(int64_t k) const { return attempt(k) + "/log"; }

 private:
  std::string trainFile(const char* name) const { return dir_ + "/train/" + name; }
  std::string dir_;
};

}  // namespace perennial::sched
