#include "scheduler/subprocess_gate.h"

#include <unistd.h>

#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/read_file.h"
#include "scheduler/process.h"
#include "dataset/shard_links.h"

namespace perennial::sched {
namespace {
namespace stdfs = std::filesystem;
using nlohmann::json;

// The last BYTES bytes of TEXT: a child's log in an error message.
std::string lastBytes(const std::string& text, size_t bytes) {
  return text.size() > bytes ? text.substr(text.size() - bytes) : text;
}

}  // namespace

double SubprocessEvaluator::accuracy(const std::string& model, const std::vector<std::string>& shards) {
  const std::string dir = root_ + "/tmp/eval-" + std::to_string(::getpid());
  std::error_code ec;
  stdfs::remove_all(dir, ec);
  data::linkShards(shards, dir + "/data");
  const int rc = runProcess({selfExecutable(), "eval", "--model", model, "--data", dir + "/data", "--json",
                             dir + "/eval.json", "--device", device_},
                            dir + "/log", timeoutS_);
  if (rc != 0) {
    const std::string log = fs::readFileIfPresent(dir + "/log");
    stdfs::remove_all(dir, ec);
    throw DataError("perennial eval of " + model + " failed (" +
                    (rc == -1 ? "ran past " + timeoutName_ : "exit " + std::to_string(rc)) + "): " + lastBytes(log, 2000));
  }
  const json j = json::parse(fs::readFileIfPresent(dir + "/eval.json"), nullptr, false);
  stdfs::remove_all(dir, ec);
  const EvalMetrics m = EvalMetrics::fromJson(j, "perennial eval of " + model);
  if (m.regression) throw DataError("perennial eval of " + model + ": a regression model has no accuracy");
  return m.accuracy;
}

GateOutcome SubprocessGatekeeper::validate(const std::string& candidate, const std::string& champion,
                                           const std::vector<std::string>& holdout, const std::string& verdictPath) {
  std::vector<std::string> argv{selfExecutable(), "validate", "--candidate", candidate, "--config", config_,
                                "--out", verdictPath};
  if (!champion.empty()) argv.insert(argv.end(), {"--champion", champion});
  for (const auto& h : holdout) argv.insert(argv.end(), {"--holdout", h});
  const std::string log = stdfs::path(verdictPath).parent_path().string() + "/validate.log";
  std::error_code ec;
  stdfs::remove(verdictPath, ec);
  GateOutcome g;
  g.exitCode = runProcess(argv, log, timeoutS_);
  try {
    g.verdict = Verdict::read(verdictPath);
    if (!g.verdict) g.verdictProblem = "there is none";
  } catch (const DataError& e) {
    g.verdictProblem = std::string("it does not read: ") + e.what();
  }
  if (g.exitCode == -1) {
    g.error = "perennial validate ran past gate.timeout_s (" + std::to_string(timeoutS_) + " s): " +
              lastBytes(fs::readFileIfPresent(log), 400);
  } else if (g.exitCode != 0 && g.exitCode != 1) {
    g.error = "perennial validate exited " + std::to_string(g.exitCode) + ": " + lastBytes(fs::readFileIfPresent(log), 400);
  }
  return g;
}

}  // namespace perennial::sched
