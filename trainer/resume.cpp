#include "trainer/resume.h"

#include <algorithm>
#include <map>
#include <sstream>
#include <vector>

#include "checkpoint/tensor_file.h"
#include "common/error.h"
#include "common/log.h"

namespace perennial {
namespace {

// Broadcasts a string from rank 0.
std::string broadcastString(Communicator& comm, std::string value) {
  int64_t n = static_cast<int64_t>(value.size());
  comm.broadcast(&n, sizeof(n), 0);
  value.resize(static_cast<size_t>(n));
  comm.broadcast(value.data(), value.size(), 0);
  return value;
}

// Rank 0's choice of checkpoint, broadcast: empty when there is none to resume from.
std::string chooseCheckpoint(const std::string& resume, checkpoint::CheckpointStore& store, Communicator& comm) {
  std::string chosen;
  if (comm.rank() == 0) {
    if (resume == "auto") {
      auto log = log::get("train");
      std::vector<std::string> skipped;
      auto found = store.newestValid(&skipped);
      for (const auto& why : skipped) log->warn("skipping checkpoint that does not verify: {}", why);
      if (found) {
        chosen = found->path;
      } else {
        log->info("--resume auto: no valid checkpoint in {}; starting from scratch", store.dir());
      }
    } else {
      chosen = resume;
    }
  }
  return broadcastString(comm, chosen);
}

}  // namespace

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

StartingPoint startingPoint(const std::string& resume, const TrainConfig& c, const TrainPlan& plan, int64_t trainRows,
                            const data::DatasetSpec& spec, const TrainDevice& dev, const RunFingerprint& now,
                            checkpoint::CheckpointStore& store, torch::nn::Module& model,
                            torch::optim::Optimizer& optimizer, Normalization& norm, Communicator& comm) {
  const int rank = comm.rank(), world = comm.size();
  const bool lead = rank == 0;
  auto log = log::get("train");
  StartingPoint start;
  start.scheduleSteps = plan.scheduleSteps;
  const std::string chosen = resume == "none" ? std::string() : chooseCheckpoint(resume, store, comm);
  if (!chosen.empty()) {
    RestoredState restored = loadCheckpoint(chosen, model, optimizer, c.optimizer, rank, world);
    TrainProgress& progress = start.progress;
    progress = restored.progress;
    if (progress.epoch < c.epochs) {
      // NOTE [Resharded resume]: the schedule ends after the steps left: the rest of the
      // interrupted epoch (re-sharded by the sample cursor at another world size), then the
      // remaining whole epochs. At the world size the whole run had, that is epochs x steps per
      // epoch, as without a resume; but steps taken at another world size took another global
      // batch, and counting them as this world's steps made a run resumed on more ranks find
      // its step already past the end and skip the rest of its data.
      const int64_t restOfEpoch = (trainRows - std::min(progress.cursor, trainRows)) / world / plan.perStep;
      start.scheduleSteps = progress.step + restOfEpoch + (c.epochs - progress.epoch - 1) * plan.stepsPerEpoch;
    }
    if (dev.cuda() && !restored.deviceRngState.empty()) {
      setDeviceGeneratorState(dev, restored.deviceRngState);
      start.deviceRngRestored = true;
    }
    if (!restored.normMean.empty()) {
      if (static_cast<int64_t>(restored.normMean.size()) != spec.featureElements()) {
        throw DataError(chosen + ": normalization has " + std::to_string(restored.normMean.size()) +
                        " values, the data " + std::to_string(spec.featureElements()) + " features");
      }
      norm.set(std::move(restored.normMean), std::move(restored.normStd), spec.featureShape);
    }
    start.rngRestored = restored.rngRestored;
    start.resumedFrom = chosen;
    if (lead) {
      log->info("resuming from {} at epoch {}, step {} (sample cursor {})", chosen, progress.epoch + 1, progress.step,
                progress.cursor);
      if (restored.worldSize != world) {
        log->warn("the checkpoint was written at world size {}, this run has {}: the rest of the epoch is "
                  "re-sharded by the global sample cursor ({} steps left in all); results will not be bitwise "
                  "identical to an uninterrupted run", restored.worldSize, world, start.scheduleSteps - progress.step);
      }
      if (restored.configSha256 != now.configSha256) {
        log->warn("resuming with a changed configuration: {}", configDiff(restored.configText, now.configText));
      }
      if (restored.dataSnapshot != now.dataSnapshot) {
        log->warn("the training data differ from the checkpoint's (snapshot {} now {})", restored.dataSnapshot,
                  now.dataSnapshot);
      }
    }
    if (progress.cursor % plan.globalBatch != 0 && restored.worldSize == world) {
      throw DataError(chosen + ": sample cursor " + std::to_string(progress.cursor) +
                      " is not a multiple of the global batch " + std::to_string(plan.globalBatch));
    }
    return start;
  }
  if (!c.initFrom.empty()) {
    // Warm start: every rank reads the same file, so the replicas start equal.
    checkpoint::TensorFile init = checkpoint::readTensorFile(c.initFrom);
    copyWeights(init, c.initFrom, c.arch, model);
    if (lead) log->info("initialised the weights from {} (param_sha256 {})", c.initFrom, paramSha256(model).substr(0, 16));
  }
  return start;
}

}  // namespace perennial
