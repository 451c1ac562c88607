#pragma once
// The JSON-lines logs of a run directory: metrics.jsonl (rank 0) and, with `perennial train
// --log-samples`, samples/rank-R.jsonl (every rank). One JSON object per line, each with an
// integer "step"; a write that fails (a full disk) stops the run like a failed checkpoint, since a
// silently short log would pass for a complete one.
#include <cstdint>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainer/comm/communicator.h"

namespace perennial {

// NOTE [Resumed logs]: a run resumed from the checkpoint at step S trains steps S+1.. again, so
// the records an interrupted run wrote after S (and a line cut short by a kill) are dropped
// before appending: the resumed run's log then lists each step once, as an uninterrupted run's
// does (TensorBoard's purge_step does the same for event files). Lines that cannot be placed (no
// integer "step") are kept. Rewrites PATH (atomically) only when something is dropped; KEPT, if
// given, sees each record kept. Returns the number of records dropped.
size_t dropRecordsAfter(const std::string& path, int64_t step,
                        const std::function<void(const nlohmann::json&)>& kept = {});

// metrics.jsonl. A resumed run with nothing left to train does not log again the evaluation
// already recorded at its resume step (hasEvalAt).
class MetricsLog {
 public:
  // ACTIVE: this rank writes (rank 0). APPEND: resumed at RESUME_STEP (else the file starts empty).
  MetricsLog(const std::string& path, bool active, bool append, int64_t resumeStep);
  void write(const nlohmann::json& j);
  // Whether the file kept an evaluation record at STEP from before the resume.
  bool hasEvalAt(int64_t step) const { return evalAtResume_ && step == resumeStep_; }

 private:
  std::string path_;
  int64_t resumeStep_;          // -1: not resumed
  bool evalAtResume_ = false;   // an evaluation record at resumeStep_ was kept
  std::ofstream out_;
};

// NOTE [Sample log]: `perennial train --log-samples` makes every rank append, after each optimizer
// step, the dataset rows it trained in that step to DIR/rank-R.jsonl (R zero-padded to 5 digits):
//   {"epoch": E, "step": S, "rank": R, "world_size": W, "indices": [row, ...]}
// (rows in training order, its micro-batches one after another). Together the files say which
// samples a run trained in each epoch: an audit of the sampler, of gradient accumulation and of
// resuming at another world size (tests/cli/equivalence_test.sh). A fresh run starts DIR empty; a
// resumed one first drops every file's records after its resume step (NOTE [Resumed logs]), the
// files of ranks that no longer exist included, so each trained step appears once.
class SampleLog {
 public:
  // Collective: every rank of COMM calls it. Does nothing when ACTIVE is false. RESUME_STEP < 0:
  // a fresh run.
  SampleLog(bool active, const std::string& dir, Communicator& comm, int64_t resumeStep);
  void write(int64_t epoch, int64_t step, const std::vector<std::vector<int64_t>>& microBatches);

 private:
  std::string path_;
  int rank_ = 0, world_ = 1;
  std::ofstream out_;
};

}  // namespace perennial
