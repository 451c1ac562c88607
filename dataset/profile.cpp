#include "dataset/profile.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace perennial::data {
namespace {

void addCounts(std::vector<int64_t>& into, const std::vector<int64_t>& from) {
  if (into.size() < from.size()) into.resize(from.size(), 0);
  for (size_t i = 0; i < from.size(); ++i) into[i] += from[i];
}

}  // namespace

void Profile::merge(const Profile& other) {
  rows += other.rows;
  addCounts(labels, other.labels);
  for (const auto& [name, counts] : other.hist) addCounts(hist[name], counts);
}

nlohmann::json Profile::toJson() const {
  return {{"rows", rows}, {"labels", labels}, {"hist", hist}};
}

Profile Profile::fromJson(const std::string& text, const std::string& source) {
  try {
    const auto j = nlohmann::json::parse(text);
    Profile p;
    p.rows = j.at("rows").get<int64_t>();
    p.labels = j.at("labels").get<std::vector<int64_t>>();
    p.hist = j.at("hist").get<std::map<std::string, std::vector<int64_t>>>();
    return p;
  } catch (const nlohmann::json::exception& e) {
    throw DataError(source + ": malformed data profile: " + e.what());
  }
}

int profileBin(double v, double lo, double hi) {
  const double x = (v - lo) / (hi - lo) * kProfileBins;
  if (!(x >= 0)) return 0;  // also NaN
  // Compared as a double: converting one beyond int's range (a large finite value, or +inf
  // from a row sum) to int is undefined, and gave a negative bin index.
  if (x >= kProfileBins) return kProfileBins - 1;
  return static_cast<int>(x);
}

double psi(const std::vector<int64_t>& expected, const std::vector<int64_t>& actual) {
  const size_t n = std::max(expected.size(), actual.size());
  double te = 0, ta = 0;
  for (int64_t v : expected) te += static_cast<double>(v);
  for (int64_t v : actual) ta += static_cast<double>(v);
  if (te <= 0 || ta <= 0) return 0;
  constexpr double kFloor = 1e-4;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    const double e = std::max(kFloor, (i < expected.size() ? static_cast<double>(expected[i]) : 0) / te);
    const double a = std::max(kFloor, (i < actual.size() ? static_cast<double>(actual[i]) : 0) / ta);
    sum += (a - e) * std::log(a / e);
  }
  return sum;
}

nlohmann::json driftScores(const Profile& baseline, const Profile& current) {
  nlohmann::json out;
  double worst = psi(baseline.labels, current.labels);
  out["labels"] = worst;
  for (const auto& [name, counts] : baseline.hist) {
    auto it = current.hist.find(name);
    const double v = it == current.hist.end() ? 0 : psi(counts, it->second);
    out[name] = v;
    worst = std::max(worst, v);
  }
  out["max"] = worst;
  return out;
}

}  // namespace perennial::data
