#include "trainer/run_outputs.h"

#include <unistd.h>

#include <filesystem>

#include "checkpoint/tensor_file.h"
#include "common/fs_util.h"
#include "common/log.h"
#include "common/text.h"
#include "perennial/build_config.h"
#include "trainer/checkpointing.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/run_dir.h"

namespace perennial {
namespace {

// model.pt (NOTE [TorchScript export]), written whole or not at all; a model that cannot be
// exported leaves none (not even one of an earlier run in the same directory).
void saveTorchScriptAtomically(const Model& model, const std::string& path) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::string whyNot;
  if (!saveAsTorchScript(model, tmp, &whyNot)) {
    std::filesystem::remove(path);
    log::get("train")->info("no {}: {}", path, whyNot);
    return;
  }
  fs::fsyncFile(tmp);
  fs::publish(tmp, path);
}

}  // namespace

// A finished run's artefacts, written by rank 0 in this order: model.pt (the model as TorchScript
// with its trained weights, so that the run directory and the registry version that copies it are
// self-contained and load in PyTorch and LibTorch), model.h5 (the weights, the configuration and
// the normalization), and result.json last: a result.json means the run is complete.
void writeOutputs(const std::string& runDir, const std::string& arch, const std::string& configText, const Model& model,
                  const Normalization& norm, const std::vector<int64_t>& featureShape, const TrainResult& result) {
  std::vector<checkpoint::TensorView> views;
  std::vector<torch::Tensor> keep;
  for (const auto& [name, value] : stateDict(*model)) {
    torch::Tensor t = value.detach().to(torch::kCPU).contiguous();
    keep.push_back(t);
    views.push_back({name, toDType(t.scalar_type()), t.sizes().vec(), t.data_ptr()});
  }
  std::vector<checkpoint::Group> extra;
  if (norm.active()) extra.push_back(normalizationGroup(featureShape, norm.mean, norm.stdev));
  saveTorchScriptAtomically(model, runDir + "/" + run_dir::kTorchScript);
  checkpoint::writeTensorFile(runDir + "/" + run_dir::kModel, views,
                              {{"arch", arch}, {"param_sha256", result.paramSha256},
                               {"config", configText}, {"perennial_version", PERENNIAL_VERSION}},
                              std::move(extra));
  fs::writeFileAtomic(runDir + "/" + run_dir::kResult, dumpJson(result.toJson(), 2) + "\n");
}

}  // namespace perennial
