#include <boost/program_options.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs_util.h"
#include "common/text.h"

#include "common/log.h"
#include "trainer/cli/commands.h"
#include "trainer/comm/communicator.h"
#include "trainer/comm/mpi/mpi_communicator.h"
#include "trainer/config/train_config.h"
#include "trainer/stop_signal.h"
#include "trainer/trainer.h"

namespace perennial::cli {

int trainCommand(const std::vector<std::string>& args) {
  StopSignals signals;  // before anything slow: Slurm's SIGUSR1 may come during start-up
  TrainArgs parsed = parseTrainArgs(args);
  if (parsed.help) {
    std::cout << parsed.helpText;
    return 0;
  }
  const TrainConfig& c = parsed.config;
  requireRegisteredModel(c.arch);
  CommOptions options;
  options.backend = c.backend;
  options.timeout = std::chrono::milliseconds(static_cast<int64_t>(c.timeoutS * 1000));
  options.logLevel = c.logLevel;
  auto comm = makeCommunicator(options);
  TrainOptions options2;
  options2.resume = parsed.resume;
  options2.logSamples = parsed.logSamples;
  TrainResult r = train(c, parsed.runDir, *comm, options2);
  return r.preempted ? kExitRequeue : 0;
}

void abortJobOnError(int code) { MpiCommunicator::abortJobIfParallel(code); }

int evalCommand(const std::vector<std::string>& args) {
  namespace po = boost::program_options;
  po::options_description desc("perennial eval options");
  std::string model, data, out, device = "auto";
  int64_t batch = 1000;
  int64_t logitsRows = 0;
  desc.add_options()("help,h", "print this help")
      ("model", po::value<std::string>(&model), "weights file (RUN/model.h5) or training checkpoint (RUN/checkpoints/ckpt-*.h5)")
      ("data", po::value<std::string>(&data), "directory of shards to evaluate on")
      ("batch-size", po::value<int64_t>(&batch)->default_value(batch), "evaluation batch size per rank (>= 1)")
      ("device", po::value<std::string>(&device)->default_value(device),
       "auto | cpu | cuda: where the model runs (auto: the rank's GPU when this build's LibTorch has CUDA and one is visible, else the CPU)")
      ("json", po::value<std::string>(&out), "also write the result as JSON to this file")
      ("logits", po::value<int64_t>(&logitsRows)->default_value(0), "include the logits of the data's first N rows");
  po::variables_map vm;
  storeCommandLine(args, desc, vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << "usage: [mpirun -np N] perennial eval --model FILE --data DIR [--json FILE]\n\n" << desc;
    return 0;
  }
  if (model.empty()) throw ConfigError("--model: required (a weights file, RUN/model.h5)");
  if (data.empty()) throw ConfigError("--data: required (a directory of shards)");
  if (batch < 1) throw ConfigError("--batch-size: must be at least 1 (got " + std::to_string(batch) + ")");
  auto comm = makeCommunicator(CommOptions{});
  if (logitsRows < 0) throw ConfigError("--logits: must be >= 0");
  EvalSummary s = evaluateWeights(model, data, *comm, batch, logitsRows, /*requireRecordedHash=*/true, device);
  if (comm->rank() == 0) {
    nlohmann::json j = s.metrics.toJson();
    j.update({{"model", model}, {"data", data}, {"param_sha256", s.paramSha256}, {"world_size", comm->size()},
              {"device", s.device}});
    if (logitsRows > 0) j["logits"] = s.logits;
    std::cout << dumpJson(j, 2) << "\n";
    if (!out.empty()) fs::writeFileAtomic(out, dumpJson(j, 2) + "\n");
  }
  return 0;
}

}  // namespace perennial::cli
