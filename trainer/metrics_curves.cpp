#include "trainer/metrics_curves.h"

#include <cmath>
#include <fstream>
#include <map>
#include <optional>

#include <nlohmann/json.hpp>

namespace perennial {
namespace {

using nlohmann::json;

std::optional<double> finiteNumber(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::nullopt;
  const double v = it->get<double>();
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::vector<CurvePoint> points(const std::map<double, double>& byStep) {
  std::vector<CurvePoint> out;
  out.reserve(byStep.size());
  for (const auto& [step, value] : byStep) out.push_back({step, value});
  return out;
}

}  // namespace

MetricsCurves readMetricsCurves(const std::string& path) {
  std::map<double, double> loss, accuracy;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    const json j = json::parse(line, nullptr, false);
    if (!j.is_object()) continue;
    const auto step = finiteNumber(j, "step");
    if (!step) continue;
    const auto kind = j.find("kind");
    if (kind == j.end() || !kind->is_string()) continue;
    if (*kind == "train") {
      if (auto v = finiteNumber(j, "loss")) loss[*step] = *v;
    } else if (*kind == "eval") {
      if (auto v = finiteNumber(j, "test_accuracy")) accuracy[*step] = *v;
    }
  }
  return {points(loss), points(accuracy)};
}

}  // namespace perennial
