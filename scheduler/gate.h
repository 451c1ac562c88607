#pragma once
// The validation gate: named checks that a candidate model must pass before it may replace the
// champion. Each check produces a result with its value, threshold and outcome; the verdict
// holds them all and the decision. The checks only compare measurements (ModelEval), so they
// are tested without a model; `perennial validate` measures (cli/validate_command.cpp).
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "trainer/results.h"

namespace boost::program_options {
class options_description;
}  // namespace boost::program_options

namespace perennial::sched {

// What the gate knows about one model after evaluating it on the holdout.
struct ModelEval {
  std::string path;
  EvalMetrics metrics;               // on the holdout (trainer/results.h)
  int64_t nonFiniteWeights = 0;
  std::string paramSha256;           // computed
  std::string recordedParamSha256;   // in the weights file
  std::string trainerParamSha256;    // in the run's result.json ("" when there is none)
  std::string fileError;             // the checkpoint's own verification failure, if any
  std::vector<int64_t> featureShape; // the holdout's, which the model accepted
  int64_t numClasses = 0;            // the holdout's
  std::string evalError;             // why the model could not be evaluated on the holdout
  std::string device;                // where it was evaluated ("cpu", "cuda:0"; "" when it was not)

  // metrics.toJson() with "path", "param_sha256", "recorded_param_sha256", "non_finite_weights",
  // "device", and "file_error" / "eval_error" when there is one.
  nlohmann::json toJson() const;
  static ModelEval fromJson(const nlohmann::json& j, const std::string& what);
};

struct GateConfig {
  std::string source;
  double minAccuracy = 0;         // absolute (0: off)
  double maxLoss = 0;             // absolute (0: off)
  double maxAccuracyDrop = 0.005; // against the champion, absolute (accuracy points as a fraction; <0: off)
  double maxAccuracyDropRel = -1; // against the champion, relative to its accuracy (<0: off)
  double maxLossIncrease = -1;    // absolute (<0: off)
  double maxLossIncreaseRel = -1; // relative (<0: off)
  double maxClassDrop = 0.05;     // per-class accuracy drop against the champion (<0: off)
  int64_t minClassSamples = 20;   // classes with fewer holdout samples are not judged
  double minImprovement = 0;      // accuracy gain over the champion needed to replace it (0: off)
  std::string device = "cpu";     // where the models are evaluated: auto | cpu | cuda
  int64_t newestShards = 0;       // the scheduler adds this many newest shards to the holdout (0: none)
  double timeoutS = 3600;         // the longest a validation or a decay measurement may run
};

// Reads the [gate] section of FILE (other sections are ignored, so the scheduler's
// configuration can be given). Throws ConfigError naming the file, the key and the rule.
GateConfig loadGateConfig(const std::string& file);
std::string gateConfigHelp();
boost::program_options::options_description gateConfigOptions();

struct CheckResult {
  std::string name;
  bool passed = true;
  nlohmann::json value;
  nlohmann::json threshold;
  std::string detail;
};

class Check {
 public:
  virtual ~Check() = default;
  virtual std::string name() const = 0;
  // CHAMPION is null for the first model; checks against it are then skipped (not listed).
  virtual std::optional<CheckResult> run(const ModelEval& candidate, const ModelEval* champion) const = 0;
};

class IntegrityCheck : public Check {
 public:
  std::string name() const override { return "integrity"; }
  std::optional<CheckResult> run(const ModelEval& c, const ModelEval*) const override;
};

class SanityCheck : public Check {
 public:
  SanityCheck(std::vector<int64_t> featureShape, int64_t numClasses) : shape_(std::move(featureShape)), classes_(numClasses) {}
  std::string name() const override { return "sanity"; }
  std::optional<CheckResult> run(const ModelEval& c, const ModelEval*) const override;

 private:
  std::vector<int64_t> shape_;
  int64_t classes_;
};

// An absolute bound on a metric: accuracy >= X or loss <= Y.
class ThresholdCheck : public Check {
 public:
  ThresholdCheck(std::string metric, double bound, bool higherIsBetter)
      : metric_(std::move(metric)), bound_(bound), higher_(higherIsBetter) {}
  std::string name() const override { return "threshold." + metric_; }
  std::optional<CheckResult> run(const ModelEval& c, const ModelEval*) const override;

 private:
  std::string metric_;
  double bound_;
  bool higher_;
};

// How much worse than the champion a metric may get, absolute or relative, in the metric's
// direction (accuracy: higher is better; loss: lower is better).
class ChangeCheck : public Check {
 public:
  ChangeCheck(std::string metric, double maxWorse, bool relative, bool higherIsBetter)
      : metric_(std::move(metric)), maxWorse_(maxWorse), relative_(relative), higher_(higherIsBetter) {}
  std::string name() const override { return "change." + metric_ + (relative_ ? ".relative" : ""); }
  std::optional<CheckResult> run(const ModelEval& c, const ModelEval* champion) const override;

 private:
  std::string metric_;
  double maxWorse_;
  bool relative_, higher_;
};

// No class's accuracy may drop by more than the margin against the champion.
class SliceCheck : public Check {
 public:
  SliceCheck(double margin, int64_t minSamples) : margin_(margin), minSamples_(minSamples) {}
  std::string name() const override { return "slices"; }
  std::optional<CheckResult> run(const ModelEval& c, const ModelEval* champion) const override;

 private:
  double margin_;
  int64_t minSamples_;
};

// The candidate must beat the champion's accuracy by at least this much to replace it.
class ImprovementCheck : public Check {
 public:
  explicit ImprovementCheck(double minGain) : minGain_(minGain) {}
  std::string name() const override { return "improvement"; }
  std::optional<CheckResult> run(const ModelEval& c, const ModelEval* champion) const override;

 private:
  double minGain_;
};

std::vector<std::unique_ptr<Check>> makeChecks(const GateConfig& config, const std::vector<int64_t>& featureShape,
                                               int64_t numClasses);

// The gate's judgement of a candidate: verdict.json, and what the scheduler publishes.
struct Verdict {
  bool passed = true;
  std::vector<CheckResult> checks;
  ModelEval candidate;
  std::optional<ModelEval> champion;  // none for the first model
  std::vector<std::string> holdout;   // what both were evaluated on (directories or files)
  // Which holdout that was, whatever its paths: data::snapshotId over its shards' SHA-256 in the
  // order evaluated (dataset/snapshot.h), and its rows. Metrics measured on different holdouts
  // are not comparable. "" and 0 when unknown (a verdict written before they were recorded, or a
  // holdout that could not be read).
  std::string holdoutId;
  int64_t holdoutRows = 0;
  std::string config;                 // the gate configuration file ("" for the defaults)
  std::string device;                 // where they were evaluated

  std::vector<std::string> failed() const;
  // {"decision": "pass"|"reject", "failed", "checks", "candidate", "champion" (or null),
  // "holdout", "holdout_id", "holdout_rows", "config", "device"}.
  nlohmann::json toJson() const;
  // Throws DataError naming WHAT and the field on a verdict that does not fit.
  static Verdict fromJson(const nlohmann::json& j, const std::string& what);
  // Reads a verdict.json: none when PATH does not exist; throws DataError naming PATH when it is
  // not JSON or does not fit, IoError when it cannot be read.
  static std::optional<Verdict> read(const std::string& path);
};

Verdict judge(const std::vector<std::unique_ptr<Check>>& checks, const ModelEval& candidate, const ModelEval* champion);

}  // namespace perennial::sched
