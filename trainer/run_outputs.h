#pragma once
// A finished run's artefacts in its run directory (trainer/run_dir.h).
#include <cstdint>
#include <string>
#include <vector>

#include "trainer/evaluation.h"
#include "trainer/models/model_factory.h"
#include "trainer/results.h"

namespace perennial {

// A finished run's artefacts, written by rank 0 in this order: model.pt (the model as TorchScript
// with its trained weights, so that the run directory and the registry version that copies it are
// self-contained and load in PyTorch and LibTorch), model.h5 (the weights, the configuration and
// the normalization), and result.json last: a result.json means the run is complete.
void writeOutputs(const std::string& runDir, const std::string& arch, const std::string& configText, const Model& model,
                  const Normalization& norm, const std::vector<int64_t>& featureShape, const TrainResult& result);

}  // namespace perennial
