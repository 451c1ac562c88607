#pragma once
// Data profiles and drift. A profile summarises a shard with fixed-bin histograms, so the
// profiles of many shards merge by adding counts: the profile of a snapshot is the sum of its
// shards', and drift compares two such sums.
//   labels      count per class
//   value       histogram of every feature value (16 equal bins over the spec's value range)
//   row_mean    histogram of each row's mean feature value (same bins)
// Drift is the population stability index, PSI = sum_i (a_i - e_i) ln(a_i / e_i), over bin
// proportions (each floored at 1e-4 so empty bins stay finite), per histogram; the drift
// score is the largest of them.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace perennial::data {

inline constexpr int kProfileBins = 16;

struct Profile {
  int64_t rows = 0;
  std::vector<int64_t> labels;
  std::map<std::string, std::vector<int64_t>> hist;  // "value", "row_mean"

  void merge(const Profile& other);
  nlohmann::json toJson() const;
  // Throws DataError naming SOURCE on a malformed profile.
  static Profile fromJson(const std::string& text, const std::string& source);
};

// Bins a value of the range [lo, hi) into kProfileBins bins; values outside go to the end bins.
int profileBin(double v, double lo, double hi);

double psi(const std::vector<int64_t>& expected, const std::vector<int64_t>& actual);

// {"labels": psi, "value": psi, "row_mean": psi, "max": largest}
nlohmann::json driftScores(const Profile& baseline, const Profile& current);

}  // namespace perennial::data
