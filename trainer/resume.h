#pragma once
// Where a training run starts: from a checkpoint (--resume auto | PATH), from another run's
// weights (train.init_from, a warm start), or from scratch. train() calls startingPoint() once the
// model, its optimizer and the checkpoint store exist and the data have been identified.
#include <cstdint>
#include <string>

#include <torch/torch.h>

#include "checkpoint/checkpoint_store.h"
#include "dataset/shard_dataset.h"
#include "trainer/checkpointing.h"
#include "trainer/comm/communicator.h"
#include "trainer/config/train_config.h"
#include "trainer/device.h"
#include "trainer/evaluation.h"
#include "trainer/train_plan.h"

namespace perennial {

// What a resumed run is compared with: a checkpoint written under another configuration or
// other data is resumed with a warning that says what changed.
struct RunFingerprint {
  std::string configText;  // the resolved configuration (INI)
  std::string configSha256;
  std::string dataSnapshot;
};

struct StartingPoint {
  TrainProgress progress;          // where training continues; zero from scratch
  std::string resumedFrom;         // the checkpoint loaded; empty when none was
  int64_t scheduleSteps = 0;       // the plan's, shortened by a resume at another world size
  bool rngRestored = false;        // the CPU generator's state came from the checkpoint
  bool deviceRngRestored = false;  // and the GPU's
};

// Collective: every rank calls it. Rank 0 chooses the checkpoint (RESUME: none; auto, the newest in
// STORE that verifies; or a path) and every rank loads it into MODEL and OPTIMIZER (a shared file
// system is assumed, as on any cluster), its normalization into NORM. With none loaded and
// train.init_from set, every rank reads those weights instead. Throws DataError when the
// checkpoint does not fit the data (its normalization, its sample cursor).
StartingPoint startingPoint(const std::string& resume, const TrainConfig& c, const TrainPlan& plan, int64_t trainRows,
                            const data::DatasetSpec& spec, const TrainDevice& dev, const RunFingerprint& now,
                            checkpoint::CheckpointStore& store, torch::nn::Module& model,
                            torch::optim::Optimizer& optimizer, Normalization& norm, Communicator& comm);

// Lines "key = value" of two resolved configurations that differ ("section.key OLD -> NEW, ..."),
// for the warning of a resume under a changed configuration.
std::string configDiff(const std::string& before, const std::string& after);

}  // namespace perennial
