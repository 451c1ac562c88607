#include "trainer/results.h"

#include <algorithm>

#include "common/error.h"

namespace perennial {
namespace {
using nlohmann::json;

// Field readers that name the document and the field when it does not fit.
const json& field(const json& j, const char* key, const std::string& what) {
  if (!j.is_object()) throw DataError(what + ": not a JSON object");
  auto it = j.find(key);
  if (it == j.end()) throw DataError(what + ": '" + key + "' is missing");
  return *it;
}

double number(const json& j, const char* key, const std::string& what) {
  const json& v = field(j, key, what);
  if (!v.is_number()) throw DataError(what + ": '" + key + "' must be a number (got " + v.dump() + ")");
  return v.get<double>();
}

int64_t integer(const json& j, const char* key, const std::string& what) {
  const json& v = field(j, key, what);
  if (!v.is_number_integer()) throw DataError(what + ": '" + key + "' must be an integer (got " + v.dump() + ")");
  return v.get<int64_t>();
}

std::string text(const json& j, const char* key, const std::string& what) {
  const json& v = field(j, key, what);
  if (!v.is_string()) throw DataError(what + ": '" + key + "' must be a string (got " + v.dump() + ")");
  return v.get<std::string>();
}

// Optional fields: absent (or null) gives FALLBACK; present, they must have the right type.
template <typename T, typename Read>
T optional(const json& j, const char* key, const std::string& what, T fallback, Read read) {
  if (!j.is_object() || !j.contains(key) || j[key].is_null()) return fallback;
  return read(j, key, what);
}

std::vector<int64_t> integers(const json& j, const char* key, const std::string& what) {
  std::vector<int64_t> out;
  if (!j.contains(key)) return out;
  const json& v = j[key];
  if (!v.is_array()) throw DataError(what + ": '" + key + "' must be an array of integers");
  for (const auto& x : v) {
    if (!x.is_number_integer()) throw DataError(what + ": '" + key + "' must be an array of integers");
    out.push_back(x.get<int64_t>());
  }
  return out;
}

bool isRegression(const json& j, const std::string& what) {
  const std::string task = optional(j, "task", what, std::string("classification"), text);
  if (task != "classification" && task != "regression") {
    throw DataError(what + ": 'task' must be classification or regression (got '" + task + "')");
  }
  return task == "regression";
}

}  // namespace

double EvalMetrics::classAccuracy(size_t k) const {
  return classTotal.at(k) > 0 ? static_cast<double>(classCorrect.at(k)) / static_cast<double>(classTotal.at(k)) : 0;
}

std::map<std::string, double> EvalMetrics::testMetrics() const {
  if (regression) return {{"test_loss", loss}, {"test_mse", mse}, {"test_mae", mae}, {"test_r2", r2}};
  return {{"test_accuracy", accuracy}, {"test_loss", loss}};
}

json EvalMetrics::toJson() const {
  json j{{"task", task()}, {"accuracy", accuracy}, {"loss", loss}, {"samples", samples},
         {"non_finite_outputs", nonFiniteOutputs}};
  if (regression) j.update({{"mse", mse}, {"mae", mae}, {"r2", r2}});
  std::vector<double> perClass;
  for (size_t k = 0; k < classTotal.size(); ++k) perClass.push_back(classAccuracy(k));
  j["class_accuracy"] = perClass;
  j["class_samples"] = classTotal;
  j["class_correct"] = classCorrect;
  return j;
}

EvalMetrics EvalMetrics::fromJson(const json& j, const std::string& what) {
  EvalMetrics m;
  m.regression = isRegression(j, what);
  m.accuracy = number(j, "accuracy", what);
  m.loss = number(j, "loss", what);
  m.samples = optional(j, "samples", what, int64_t{0}, integer);
  m.nonFiniteOutputs = optional(j, "non_finite_outputs", what, int64_t{0}, integer);
  if (m.regression) {
    m.mse = number(j, "mse", what);
    m.mae = number(j, "mae", what);
    m.r2 = number(j, "r2", what);
  }
  m.classTotal = integers(j, "class_samples", what);
  m.classCorrect = integers(j, "class_correct", what);
  if (m.classCorrect.empty() && !m.classTotal.empty() && j.contains("class_accuracy") && j["class_accuracy"].is_array() &&
      j["class_accuracy"].size() == m.classTotal.size()) {
    // Older documents (verdicts before class_correct) give the accuracies: the counts follow.
    for (size_t k = 0; k < m.classTotal.size(); ++k) {
      const json& a = j["class_accuracy"][k];
      if (!a.is_number()) throw DataError(what + ": 'class_accuracy' must be an array of numbers");
      m.classCorrect.push_back(static_cast<int64_t>(a.get<double>() * static_cast<double>(m.classTotal[k]) + 0.5));
    }
  }
  if (m.classCorrect.size() != m.classTotal.size()) {
    throw DataError(what + ": 'class_correct' and 'class_samples' must have one entry per class each");
  }
  return m;
}

bool EvalMetrics::operator==(const EvalMetrics& o) const {
  return regression == o.regression && accuracy == o.accuracy && loss == o.loss && mse == o.mse && mae == o.mae &&
         r2 == o.r2 && samples == o.samples && nonFiniteOutputs == o.nonFiniteOutputs &&
         classCorrect == o.classCorrect && classTotal == o.classTotal;
}

json TrainResult::toJson() const {
  json j = json::object();
  for (const auto& [k, v] : test.testMetrics()) j[k] = v;
  j["task"] = test.task();
  j.update({{"test_samples", test.samples},
            {"epochs", epochs},
            {"steps", steps},
            {"samples_seen", samplesSeen},
            {"world_size", worldSize},
            {"nodes", nodes},
            {"hosts", hosts},
            {"global_batch", globalBatch},
            {"samples_per_second", samplesPerSecond},
            {"train_seconds", trainSeconds},
            {"wall_seconds", wallSeconds},
            {"param_sha256", paramSha256},
            {"config_sha256", configSha256},
            {"data_snapshot", dataSnapshot},
            {"resumed_from", resumedFrom},
            {"model", model},
            {"arch", arch},
            {"parameters", parameters},
            {"comm_backend", commBackend},
            {"device", device},
            {"deterministic", deterministic},
            {"perennial_version", perennialVersion}});
  return j;
}

TrainResult TrainResult::fromJson(const json& j, const std::string& what) {
  TrainResult r;
  r.test.regression = isRegression(j, what);
  if (r.test.regression) {
    r.test.accuracy = -1;
    r.test.mse = number(j, "test_mse", what);
    r.test.mae = number(j, "test_mae", what);
    r.test.r2 = number(j, "test_r2", what);
  } else {
    r.test.accuracy = number(j, "test_accuracy", what);
  }
  r.test.loss = number(j, "test_loss", what);
  r.test.samples = optional(j, "test_samples", what, int64_t{0}, integer);
  r.epochs = optional(j, "epochs", what, int64_t{0}, integer);
  r.steps = optional(j, "steps", what, int64_t{0}, integer);
  r.samplesSeen = optional(j, "samples_seen", what, int64_t{0}, integer);
  r.worldSize = static_cast<int>(optional(j, "world_size", what, int64_t{1}, integer));
  r.nodes = static_cast<int>(optional(j, "nodes", what, int64_t{1}, integer));
  if (j.contains("hosts")) {
    const json& h = j["hosts"];
    if (!h.is_array() || !std::all_of(h.begin(), h.end(), [](const json& x) { return x.is_string(); })) {
      throw DataError(what + ": 'hosts' must be an array of host names");
    }
    r.hosts = h.get<std::vector<std::string>>();
  }
  r.globalBatch = optional(j, "global_batch", what, int64_t{0}, integer);
  r.samplesPerSecond = optional(j, "samples_per_second", what, 0.0, number);
  r.trainSeconds = optional(j, "train_seconds", what, 0.0, number);
  r.wallSeconds = optional(j, "wall_seconds", what, 0.0, number);
  r.paramSha256 = text(j, "param_sha256", what);
  r.configSha256 = optional(j, "config_sha256", what, std::string(), text);
  r.dataSnapshot = optional(j, "data_snapshot", what, std::string(), text);
  r.resumedFrom = optional(j, "resumed_from", what, std::string(), text);
  r.model = optional(j, "model", what, std::string("model.h5"), text);
  r.arch = optional(j, "arch", what, std::string(), text);
  r.parameters = optional(j, "parameters", what, int64_t{0}, integer);
  r.commBackend = optional(j, "comm_backend", what, std::string(), text);
  r.device = optional(j, "device", what, std::string(), text);
  if (j.contains("deterministic") && !j["deterministic"].is_boolean()) {
    throw DataError(what + ": 'deterministic' must be true or false");
  }
  r.deterministic = j.value("deterministic", true);
  r.perennialVersion = optional(j, "perennial_version", what, std::string(), text);
  return r;
}

TrainResult TrainResult::parse(const std::string& content, const std::string& what) {
  const json j = json::parse(content, nullptr, false);
  if (j.is_discarded()) throw DataError(what + ": not JSON");
  return fromJson(j, what);
}

}  // namespace perennial
