#pragma once
// The scheduler's measurements in child processes of the same executable, so that the scheduler
// itself never loads a model (nor LibTorch): the decay trigger's `perennial eval` (Evaluator) and
// the validation gate's `perennial validate` (Gatekeeper). Each child runs at most TIMEOUT_S
// seconds (gate.timeout_s); its output goes to a log beside its result.
#include <string>
#include <vector>

#include "scheduler/scheduler.h"
#include "scheduler/triggers.h"

namespace perennial::sched {

// `perennial eval --model MODEL --data DIR --device DEVICE` over a folder of links to the
// shards, in ROOT/tmp/eval-<pid>/ (removed afterwards).
class SubprocessEvaluator : public Evaluator {
 public:
  // TIMEOUT_NAME: the setting TIMEOUT_S came from, for the message of a child that ran past it.
  SubprocessEvaluator(std::string root, std::string device, double timeoutS, std::string timeoutName = "gate.timeout_s")
      : root_(std::move(root)), device_(std::move(device)), timeoutS_(timeoutS), timeoutName_(std::move(timeoutName)) {}
  double accuracy(const std::string& model, const std::vector<std::string>& shards) override;

 private:
  std::string root_;
  std::string device_;  // gate.device
  double timeoutS_;
  std::string timeoutName_;
};

// `perennial validate --candidate ... --config CONFIG --out VERDICT`: the exit status and the
// verdict it wrote (read back as a Verdict); validate.log beside the verdict holds its output.
class SubprocessGatekeeper : public Gatekeeper {
 public:
  SubprocessGatekeeper(std::string config, double timeoutS) : config_(std::move(config)), timeoutS_(timeoutS) {}
  GateOutcome validate(const std::string& candidate, const std::string& champion,
                       const std::vector<std::string>& holdout, const std::string& verdictPath) override;

 private:
  std::string config_;
  double timeoutS_;
};

}  // namespace perennial::sched
