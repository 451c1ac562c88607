#include "scheduler/gate.h"

#include <boost/program_options.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/read_file.h"
#include "trainer/config/train_config.h"  // programOptionsMessage, checkDeviceSetting

namespace perennial::sched {
namespace {
namespace po = boost::program_options;
using nlohmann::json;

po::options_description gateOptions() {
  po::options_description d("Validation gate keys ([gate] section)");
  d.add_options()
      ("gate.min_accuracy", po::value<double>()->default_value(0), "the candidate's accuracy must be at least this (0: off)")
      ("gate.max_loss", po::value<double>()->default_value(0), "the candidate's loss must be at most this (0: off)")
      ("gate.max_accuracy_drop", po::value<double>()->default_value(0.005), "accuracy may drop at most this much below the champion's (absolute, 0.005 = half a point; -1: off)")
      ("gate.max_accuracy_drop_rel", po::value<double>()->default_value(-1), "accuracy may drop at most this fraction of the champion's (-1: off)")
      ("gate.max_loss_increase", po::value<double>()->default_value(-1), "loss may rise at most this much above the champion's (-1: off)")
      ("gate.max_loss_increase_rel", po::value<double>()->default_value(-1), "loss may rise at most this fraction of the champion's (-1: off)")
      ("gate.max_class_drop", po::value<double>()->default_value(0.05), "no class's accuracy may drop more than this below the champion's (-1: off)")
      ("gate.min_class_samples", po::value<int64_t>()->default_value(20), "classes with fewer holdout samples are not judged by max_class_drop")
      ("gate.min_improvement", po::value<double>()->default_value(0), "accuracy must beat the champion's by at least this to replace it (0: off)")
      ("gate.newest_shards", po::value<int64_t>()->default_value(0), "the scheduler adds this many of the newest labelled shards to the holdout")
      ("gate.timeout_s", po::value<double>()->default_value(3600),
       "the longest one validation (perennial validate) or one decay measurement (perennial eval) started by the scheduler may run, in seconds; one that runs longer is killed and the run fails with the reason")
      ("gate.device", po::value<std::string>()->default_value("cpu"),
       "auto | cpu | cuda: where the gate (and the scheduler's decay trigger) evaluate; cpu by default, so they never compete with training for a GPU (perennial validate --device overrides it)");
  return d;
}

std::string fmt(double v) {
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}

// Comparisons allow for rounding: a drop of 0.9 - 0.895 = 0.0050000000000000044 is a drop of
// 0.005, and passes a bound of 0.005.
constexpr double kTolerance = 1e-9;

double metricOf(const ModelEval& m, const std::string& metric) {
  if (metric == "accuracy") return m.metrics.accuracy;
  if (metric == "loss") return m.metrics.loss;
  throw InternalError("unknown metric " + metric);
}

}  // namespace

GateConfig loadGateConfig(const std::string& file) {
  GateConfig g;
  g.source = file;
  if (file.empty()) return g;
  std::ifstream in(file);
  if (!in) throw ConfigError(file + ": cannot open the gate configuration");
  po::options_description desc = gateOptions();
  po::variables_map vm;
  try {
    auto parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/true);
    for (const auto& o : parsed.options) {
      if (o.unregistered && o.string_key.rfind("gate.", 0) == 0) {
        throw ConfigError(file + ": " + o.string_key + ": unknown gate key (perennial validate --help lists them)");
      }
    }
    po::store(parsed, vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw ConfigError(file + ": " + programOptionsMessage(e));
  }
  auto d = [&](const char* k) { return vm[k].as<double>(); };
  auto in01 = [&](const char* k, double v, bool allowOff) {
    if (allowOff && v == -1) return v;
    if (!(v >= 0 && v <= 1)) throw ConfigError(file + ": " + k + ": must be in [0, 1]" + (allowOff ? " or -1 (off)" : "") + " (got " + fmt(v) + ")");
    return v;
  };
  g.minAccuracy = in01("gate.min_accuracy", d("gate.min_accuracy"), false);
  g.maxLoss = d("gate.max_loss");
  if (!(g.maxLoss >= 0)) throw ConfigError(file + ": gate.max_loss: must be >= 0 (0: off)");
  g.maxAccuracyDrop = in01("gate.max_accuracy_drop", d("gate.max_accuracy_drop"), true);
  g.maxAccuracyDropRel = in01("gate.max_accuracy_drop_rel", d("gate.max_accuracy_drop_rel"), true);
  g.maxLossIncrease = d("gate.max_loss_increase");
  g.maxLossIncreaseRel = d("gate.max_loss_increase_rel");
  for (const char* k : {"gate.max_loss_increase", "gate.max_loss_increase_rel"}) {
    const double v = d(k);
    if (!(v >= 0 || v == -1)) throw ConfigError(file + ": " + k + ": must be >= 0 or -1 (off) (got " + fmt(v) + ")");
  }
  g.maxClassDrop = in01("gate.max_class_drop", d("gate.max_class_drop"), true);
  g.minClassSamples = vm["gate.min_class_samples"].as<int64_t>();
  if (g.minClassSamples < 1) throw ConfigError(file + ": gate.min_class_samples: must be at least 1");
  g.minImprovement = in01("gate.min_improvement", d("gate.min_improvement"), false);
  g.newestShards = vm["gate.newest_shards"].as<int64_t>();
  if (g.newestShards < 0) throw ConfigError(file + ": gate.newest_shards: must be >= 0");
  g.device = vm["gate.device"].as<std::string>();
  checkDeviceSetting(g.device, file + ": gate.device");
  g.timeoutS = d("gate.timeout_s");
  if (!(g.timeoutS > 0)) throw ConfigError(file + ": gate.timeout_s: must be > 0 seconds (got " + fmt(g.timeoutS) + ")");
  return g;
}

po::options_description gateConfigOptions() { return gateOptions(); }

std::string gateConfigHelp() {
  std::ostringstream os;
  os << gateOptions();
  return os.str();
}

std::optional<CheckResult> IntegrityCheck::run(const ModelEval& c, const ModelEval*) const {
  CheckResult r{name(), true, c.paramSha256, c.recordedParamSha256, ""};
  if (!c.fileError.empty()) {
    r.passed = false;
    r.detail = c.fileError;
  } else if (c.recordedParamSha256.empty()) {
    r.passed = false;
    r.detail = c.path + ": records no param_sha256";
  } else if (c.paramSha256 != c.recordedParamSha256) {
    r.passed = false;
    r.detail = c.path + ": the weights' param_sha256 " + c.paramSha256 + " differs from the recorded " +
               c.recordedParamSha256 + " (altered after training?)";
  } else if (!c.trainerParamSha256.empty() && c.trainerParamSha256 != c.paramSha256) {
    r.passed = false;
    r.threshold = c.trainerParamSha256;
    r.detail = c.path + ": the weights differ from what the trainer recorded in result.json (" + c.trainerParamSha256 + ")";
  } else {
    r.detail = "verified";
  }
  return r;
}

std::optional<CheckResult> SanityCheck::run(const ModelEval& c, const ModelEval*) const {
  CheckResult r{name(), true, json::object(), json::object(), ""};
  r.value = {{"non_finite_weights", c.nonFiniteWeights}, {"non_finite_outputs", c.metrics.nonFiniteOutputs},
             {"feature_shape", c.featureShape}, {"classes", c.numClasses}};
  r.threshold = {{"non_finite_weights", 0}, {"non_finite_outputs", 0}, {"feature_shape", shape_}, {"classes", classes_}};
  if (!c.evalError.empty()) {
    r.passed = false;
    r.detail = "cannot be evaluated on the holdout: " + c.evalError;
  } else if (c.nonFiniteWeights > 0) {
    r.passed = false;
    r.detail = std::to_string(c.nonFiniteWeights) + " weight value(s) are NaN or infinite";
  } else if (c.metrics.nonFiniteOutputs > 0) {
    r.passed = false;
    r.detail = std::to_string(c.metrics.nonFiniteOutputs) + " holdout row(s) give NaN or infinite outputs";
  } else if (!shape_.empty() && (c.featureShape != shape_ || c.numClasses != classes_)) {
    r.passed = false;
    r.detail = "the holdout's feature shape or class count differs from the dataset spec";
  } else {
    r.detail = "weights and outputs finite; input and output fit the dataset spec";
  }
  return r;
}

std::optional<CheckResult> ThresholdCheck::run(const ModelEval& c, const ModelEval*) const {
  const double v = metricOf(c, metric_);
  CheckResult r{name(), higher_ ? v >= bound_ - kTolerance : v <= bound_ + kTolerance, v, bound_, ""};
  if (!std::isfinite(v)) r.passed = false;
  r.detail = metric_ + " " + fmt(v) + (r.passed ? (higher_ ? " >= " : " <= ") : (higher_ ? " < " : " > ")) + fmt(bound_);
  return r;
}

std::optional<CheckResult> ChangeCheck::run(const ModelEval& c, const ModelEval* champion) const {
  if (!champion) return std::nullopt;
  const double cand = metricOf(c, metric_), champ = metricOf(*champion, metric_);
  // How much worse the candidate is, in the metric's direction (negative: better).
  double worse = higher_ ? champ - cand : cand - champ;
  if (relative_) worse = champ != 0 ? worse / std::fabs(champ) : (worse > 0 ? INFINITY : 0);
  CheckResult r{name(), std::isfinite(cand) && worse <= maxWorse_ + kTolerance, worse, maxWorse_, ""};
  r.detail = metric_ + " " + fmt(cand) + " vs champion " + fmt(champ) + ": " + (relative_ ? "relative " : "") +
             (higher_ ? "drop " : "increase ") + fmt(worse) + (r.passed ? " <= " : " > ") + fmt(maxWorse_);
  return r;
}

std::optional<CheckResult> SliceCheck::run(const ModelEval& c, const ModelEval* champion) const {
  if (!champion) return std::nullopt;
  CheckResult r{name(), true, json::object(), margin_, ""};
  double worst = -INFINITY;
  int64_t worstClass = -1;
  json drops = json::object();
  const EvalMetrics &cm = c.metrics, &hm = champion->metrics;
  const size_t n = std::min(cm.classTotal.size(), hm.classTotal.size());
  for (size_t k = 0; k < n; ++k) {
    if (cm.classTotal[k] < minSamples_) continue;
    const double drop = hm.classAccuracy(k) - cm.classAccuracy(k);
    drops[std::to_string(k)] = drop;
    if (drop > worst) {
      worst = drop;
      worstClass = static_cast<int64_t>(k);
    }
  }
  r.value = {{"worst_class", worstClass}, {"worst_drop", worstClass >= 0 ? json(worst) : json(nullptr)}, {"drops", drops}};
  if (worstClass >= 0 && worst > margin_ + kTolerance) {
    r.passed = false;
    r.detail = "class " + std::to_string(worstClass) + " accuracy " + fmt(cm.classAccuracy(static_cast<size_t>(worstClass))) +
               " vs champion " + fmt(hm.classAccuracy(static_cast<size_t>(worstClass))) + ": drop " + fmt(worst) +
               " > " + fmt(margin_);
  } else {
    r.detail = worstClass >= 0 ? "largest class drop " + fmt(worst) + " (class " + std::to_string(worstClass) + ") <= " + fmt(margin_)
                               : "no class has enough holdout samples to judge";
  }
  return r;
}

std::optional<CheckResult> ImprovementCheck::run(const ModelEval& c, const ModelEval* champion) const {
  if (!champion) return std::nullopt;
  const double gain = c.metrics.accuracy - champion->metrics.accuracy;
  CheckResult r{name(), gain >= minGain_ - kTolerance, gain, minGain_, ""};
  r.detail = "accuracy gain " + fmt(gain) + (r.passed ? " >= " : " < ") + fmt(minGain_);
  return r;
}

std::vector<std::unique_ptr<Check>> makeChecks(const GateConfig& g, const std::vector<int64_t>& featureShape,
                                               int64_t numClasses) {
  std::vector<std::unique_ptr<Check>> out;
  out.push_back(std::make_unique<IntegrityCheck>());
  out.push_back(std::make_unique<SanityCheck>(featureShape, numClasses));
  if (g.minAccuracy > 0) out.push_back(std::make_unique<ThresholdCheck>("accuracy", g.minAccuracy, true));
  if (g.maxLoss > 0) out.push_back(std::make_unique<ThresholdCheck>("loss", g.maxLoss, false));
  if (g.maxAccuracyDrop >= 0) out.push_back(std::make_unique<ChangeCheck>("accuracy", g.maxAccuracyDrop, false, true));
  if (g.maxAccuracyDropRel >= 0) out.push_back(std::make_unique<ChangeCheck>("accuracy", g.maxAccuracyDropRel, true, true));
  if (g.maxLossIncrease >= 0) out.push_back(std::make_unique<ChangeCheck>("loss", g.maxLossIncrease, false, false));
  if (g.maxLossIncreaseRel >= 0) out.push_back(std::make_unique<ChangeCheck>("loss", g.maxLossIncreaseRel, true, false));
  if (g.maxClassDrop >= 0) out.push_back(std::make_unique<SliceCheck>(g.maxClassDrop, g.minClassSamples));
  if (g.minImprovement > 0) out.push_back(std::make_unique<ImprovementCheck>(g.minImprovement));
  return out;
}

std::vector<std::string> Verdict::failed() const {
  std::vector<std::string> out;
  for (const auto& c : checks) {
    if (!c.passed) out.push_back(c.name);
  }
  return out;
}

Verdict judge(const std::vector<std::unique_ptr<Check>>& checks, const ModelEval& candidate, const ModelEval* champion) {
  Verdict v;
  v.candidate = candidate;
  if (champion) v.champion = *champion;
  v.device = !candidate.device.empty() ? candidate.device : champion ? champion->device : "";
  const bool evaluated = candidate.evalError.empty();
  for (const auto& check : checks) {
    // A file that does not verify is judged by integrity alone; metric checks need an
    // evaluation (integrity and sanity report why there is none).
    if (!candidate.fileError.empty() && check->name() != "integrity") continue;
    if (!evaluated && check->name() != "integrity" && check->name() != "sanity") continue;
    if (auto r = check->run(candidate, champion)) {
      v.passed = v.passed && r->passed;
      v.checks.push_back(std::move(*r));
    }
  }
  return v;
}

json ModelEval::toJson() const {
  json j = metrics.toJson();
  j.update({{"path", path}, {"param_sha256", paramSha256}, {"recorded_param_sha256", recordedParamSha256},
            {"non_finite_weights", nonFiniteWeights}, {"device", device}});
  if (!fileError.empty()) j["file_error"] = fileError;
  if (!evalError.empty()) j["eval_error"] = evalError;
  return j;
}

ModelEval ModelEval::fromJson(const json& j, const std::string& what) {
  if (!j.is_object()) throw DataError(what + ": not a JSON object");
  ModelEval m;
  m.metrics = EvalMetrics::fromJson(j, what);
  auto str = [&](const char* key) {
    if (!j.contains(key) || j[key].is_null()) return std::string();
    if (!j[key].is_string()) throw DataError(what + ": '" + key + "' must be a string");
    return j[key].get<std::string>();
  };
  m.path = str("path");
  m.paramSha256 = str("param_sha256");
  m.recordedParamSha256 = str("recorded_param_sha256");
  m.device = str("device");
  m.fileError = str("file_error");
  m.evalError = str("eval_error");
  if (j.contains("non_finite_weights")) {
    if (!j["non_finite_weights"].is_number_integer()) throw DataError(what + ": 'non_finite_weights' must be an integer");
    m.nonFiniteWeights = j["non_finite_weights"].get<int64_t>();
  }
  return m;
}

json Verdict::toJson() const {
  json checksJson = json::array();
  for (const auto& c : checks) {
    checksJson.push_back({{"name", c.name}, {"passed", c.passed}, {"value", c.value}, {"threshold", c.threshold},
                          {"detail", c.detail}});
  }
  return {{"decision", passed ? "pass" : "reject"},
          {"failed", failed()},
          {"checks", checksJson},
          {"candidate", candidate.toJson()},
          {"champion", champion ? champion->toJson() : json(nullptr)},
          {"holdout", holdout},
          {"holdout_id", holdoutId},
          {"holdout_rows", holdoutRows},
          {"config", config},
          {"device", device}};
}

Verdict Verdict::fromJson(const json& j, const std::string& what) {
  if (!j.is_object()) throw DataError(what + ": not a JSON object");
  Verdict v;
  const json decision = j.value("decision", json());
  if (decision != "pass" && decision != "reject") {
    throw DataError(what + ": 'decision' must be \"pass\" or \"reject\" (got " + decision.dump() + ")");
  }
  v.passed = decision == "pass";
  if (!j.contains("checks") || !j["checks"].is_array()) throw DataError(what + ": 'checks' must be an array");
  for (const auto& c : j["checks"]) {
    if (!c.is_object() || !c.contains("name") || !c["name"].is_string() || !c.contains("passed") ||
        !c["passed"].is_boolean()) {
      throw DataError(what + ": each of 'checks' needs a string 'name' and a boolean 'passed'");
    }
    v.checks.push_back({c["name"].get<std::string>(), c["passed"].get<bool>(), c.value("value", json()),
                        c.value("threshold", json()), c.value("detail", "")});
  }
  // The decision and the checks must agree: a verdict that rejects names a failed check.
  bool allPassed = true;
  for (const auto& c : v.checks) allPassed = allPassed && c.passed;
  if (allPassed != v.passed) throw DataError(what + ": 'decision' " + decision.dump() + " disagrees with its checks");
  if (!j.contains("candidate")) throw DataError(what + ": 'candidate' is missing");
  v.candidate = ModelEval::fromJson(j["candidate"], what + ": candidate");
  if (j.contains("champion") && !j["champion"].is_null()) {
    v.champion = ModelEval::fromJson(j["champion"], what + ": champion");
  }
  if (j.contains("holdout")) {
    if (!j["holdout"].is_array()) throw DataError(what + ": 'holdout' must be an array of paths");
    for (const auto& h : j["holdout"]) {
      if (!h.is_string()) throw DataError(what + ": 'holdout' must be an array of paths");
      v.holdout.push_back(h.get<std::string>());
    }
  }
  if (j.contains("holdout_id")) {
    if (!j["holdout_id"].is_string()) throw DataError(what + ": 'holdout_id' must be a string");
    v.holdoutId = j["holdout_id"].get<std::string>();
  }
  if (j.contains("holdout_rows")) {
    if (!j["holdout_rows"].is_number_integer() || j["holdout_rows"].get<int64_t>() < 0) {
      throw DataError(what + ": 'holdout_rows' must be a non-negative integer");
    }
    v.holdoutRows = j["holdout_rows"].get<int64_t>();
  }
  v.config = j.value("config", json("")).is_string() ? j.value("config", "") : "";
  v.device = j.value("device", json("")).is_string() ? j.value("device", "") : "";
  return v;
}

std::optional<Verdict> Verdict::read(const std::string& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::nullopt;
  const json j = json::parse(fs::readFile(path), nullptr, false);
  if (j.is_discarded()) throw DataError(path + ": not JSON");
  try {
    return fromJson(j, path);
  } catch (const json::exception& e) {  // a field of another type than fromJson reads
    throw DataError(path + ": " + e.what());
  }
}

}  // namespace perennial::sched
