// `perennial validate`: the validation gate. It measures models with the trainer's evaluation
// (LibTorch), so it lives here in the CLI, beside the trainer's commands, and not in the
// scheduler library, which links no LibTorch (the scheduler runs it as a child process).
#include "cli/validate_command.h"

#include <boost/program_options.hpp>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_store.h"
#include "checkpoint/document.h"
#include "common/error.h"
#include "common/exit_codes.h"
#include "common/fs_util.h"
#include "common/log.h"
#include "common/read_file.h"
#include "common/text.h"
#include "dataset/shard_links.h"
#include "dataset/snapshot.h"
#include "scheduler/gate.h"
#include "scheduler/registry.h"
#include "trainer/comm/communicator.h"
#include "trainer/config/train_config.h"
#include "trainer/trainer.h"

namespace perennial::cli {
namespace {
namespace po = boost::program_options;
namespace stdfs = std::filesystem;
using nlohmann::json;
using namespace perennial::sched;

// One directory holding every holdout shard: the directories' shards and single shard files,
// linked in the order given (file names keep that order).
std::string holdoutDir(const std::vector<std::string>& parts, const std::string& scratch) {
  if (parts.size() == 1 && fs::isDirectory(parts[0])) return parts[0];
  std::vector<std::string> files;
  for (const auto& p : parts) {
    if (fs::isDirectory(p)) {
      for (const auto& f : fs::listFiles(p, ".h5")) files.push_back(f);
    } else if (fs::isFile(p)) {
      files.push_back(p);
    } else {
      throw ConfigError("--holdout: " + p + ": no such file or directory");
    }
  }
  data::linkShards(files, scratch);
  return scratch;
}

ModelEval evaluateModel(const std::string& path, const std::string& holdout, Communicator& comm, bool candidate,
                        const std::string& device) {
  ModelEval m;
  m.path = path;
  if (!fs::isFile(path)) throw ConfigError((candidate ? "--candidate: " : "--champion: ") + path + ": no such file");
  // The file's own integrity: a checkpoint against its manifest, a weights file against its
  // per-tensor digests.
  try {
    if (stdfs::path(path).filename().string().rfind("ckpt-", 0) == 0) {
      checkpoint::verifyCheckpoint(path);
    } else {
      checkpoint::readDocument(path);
    }
  } catch (const Error& e) {
    if (!candidate) throw DataError(std::string("--champion: ") + e.what());
    m.fileError = e.what();
    m.evalError = "the file does not verify";
    return m;
  }
  const std::string result = (stdfs::path(path).parent_path() / "result.json").string();
  if (fs::exists(result)) {
    try {
      m.trainerParamSha256 = json::parse(fs::readFileIfPresent(result)).value("param_sha256", "");
    } catch (const json::exception&) {
    }
  }
  try {
    EvalSummary s = evaluateWeights(path, holdout, comm, 1000, 0, /*requireRecordedHash=*/false, device);
    m.device = s.device;
    m.metrics = s.metrics;
    m.nonFiniteWeights = s.nonFiniteWeights;
    m.paramSha256 = s.paramSha256;
    m.recordedParamSha256 = s.recordedParamSha256;
    m.featureShape = s.featureShape;
    m.numClasses = s.numClasses;
  } catch (const ConfigError&) {
    throw;
  } catch (const Error& e) {
    if (!candidate) throw DataError(std::string("--champion: ") + e.what());
    m.evalError = e.what();
  }
  return m;
}

// Holds an exclusive lock on the folder of the verdict OUT until the process ends, waiting for
// the validation that holds it. A scheduler restarted while its gate ran judges the run again
// while the first validation (its child, orphaned) may still be at work, and both write the same
// verdict and the same holdout scratch folder beside it: the second one waits for the first.
void lockVerdictFolder(const std::string& out) {
  std::string dir = stdfs::path(out).parent_path().string();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || ::flock(fd, LOCK_EX) != 0) {
    throw IoError("--out " + out + ": cannot lock its folder: " + std::strerror(errno));
  }
  // Never closed: the lock goes with the process.
}

}  // namespace

int validateCommand(const std::vector<std::string>& args) {
  po::options_description desc("perennial validate options");
  std::string candidate, champion, config, out, registry, root, model, device;
  std::vector<std::string> holdout;
  bool asJson = false;
  desc.add_options()("help,h", "print this help")
      ("candidate", po::value<std::string>(&candidate), "the model to judge: RUN/model.h5 or a checkpoint")
      ("champion", po::value<std::string>(&champion), "the model it would replace: a file, or VERSION|ALIAS|NAME:VERSION in the registry")
      ("model", po::value<std::string>(&model), "the registry's model name for --champion VERSION (default: its only model)")
      ("holdout", po::value<std::vector<std::string>>(&holdout), "shard directory or shard file to evaluate both on (repeatable)")
      ("config", po::value<std::string>(&config), "file with a [gate] section (the scheduler's configuration will do)")
      ("registry", po::value<std::string>(&registry), "registry directory (for --champion NAME:VERSION)")
      ("device", po::value<std::string>(&device),
       "auto | cpu | cuda: where both models run (default: the configuration's gate.device, cpu; auto: a GPU when this build's LibTorch has CUDA and one is visible)")
      ("root", po::value<std::string>(&root), "scheduler root (its registry/)")
      ("out", po::value<std::string>(&out), "where to write the verdict (default: verdict.json beside the candidate)")
      ("json", po::bool_switch(&asJson), "print the verdict as JSON");
  po::variables_map vm;
  storeCommandLine(args, desc, vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << "usage: perennial validate --candidate FILE [--champion FILE|NAME:VERSION] --holdout DIR [--config FILE]\n\n"
              << desc << "\n" << gateConfigHelp()
              << "\nExit status: 0 the candidate passes, 1 it is rejected, 2 bad input.\n";
    return 0;
  }
  if (candidate.empty()) throw ConfigError("--candidate: required (the model to judge)");
  if (holdout.empty()) throw ConfigError("--holdout: required (shards to evaluate on)");
  const GateConfig gate = loadGateConfig(config);
  // Where both models run, settled before anything is written: a device that is not there is
  // bad input (exit 2), whether or not the candidate would have been evaluated.
  const std::string deviceKey = device.empty() ? (config.empty() ? "gate.device" : config + ": gate.device") : "--device";
  if (device.empty()) device = gate.device;
  resolveDeviceName(device, deviceKey);
  if (!champion.empty() && !fs::exists(champion)) {
    Registry reg(registryDirFrom(registry, root));
    std::string name, version;
    if (champion.find(':') != std::string::npos) {
      std::tie(name, version) = splitModelRef(champion, "champion");
    } else {
      version = champion;
      name = model;
      if (name.empty()) {
        const auto models = reg.models();
        if (models.size() != 1) {
          throw ConfigError("--champion " + champion + ": name the model (--model NAME or NAME:VERSION); the registry has " +
                            std::to_string(models.size()) + " models");
        }
        name = models[0];
      }
    }
    champion = reg.show(name, version).dir + "/model.h5";
  }
  if (out.empty()) out = (stdfs::path(candidate).parent_path() / "verdict.json").string();
  lockVerdictFolder(out);
  auto comm = makeCommunicator(CommOptions{});
  const std::string data = holdoutDir(holdout, (stdfs::path(out).parent_path() / ".holdout").string());
  ModelEval cand = evaluateModel(candidate, data, *comm, true, device);
  std::optional<ModelEval> champ;
  if (!champion.empty()) champ = evaluateModel(champion, data, *comm, false, device);
  // Which holdout this was (its shards' bytes, not its paths): registry versions carry it.
  data::ShardSetIdentity held;
  try {
    held = data::identifyShards(data);
  } catch (const Error& e) {
    log::get("gate")->warn("the holdout's identity is not recorded: {}", e.what());
  }
  if (data != holdout[0]) {
    std::error_code ec;
    stdfs::remove_all(data, ec);
  }
  auto checks = makeChecks(gate, {}, 0);
  Verdict v = judge(checks, cand, champ ? &*champ : nullptr);
  v.holdout = holdout;
  v.holdoutId = held.id;
  v.holdoutRows = held.rows;
  v.config = config;
  const json j = v.toJson();
  if (comm->rank() == 0) {
    fs::writeFileAtomic(out, dumpJson(j, 2) + "\n");
    if (asJson) {
      std::cout << dumpJson(j, 2) << "\n";
    } else {
      for (const auto& c : v.checks) std::cout << (c.passed ? "pass  " : "FAIL  ") << c.name << ": " << c.detail << "\n";
      std::cout << (v.passed ? "verdict: pass" : "verdict: reject") << " (" << out << ")\n";
    }
  }
  return v.passed ? exit_code::kGatePass : exit_code::kGateReject;
}

}  // namespace perennial::cli
