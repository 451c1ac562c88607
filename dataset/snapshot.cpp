#include "dataset/snapshot.h"

#include "dataset/shard_dataset.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/read_file.h"

namespace perennial::data {
namespace stdfs = std::filesystem;

std::string checkSnapshot(const std::string& snapshotFile, const std::vector<ShardIdentity>& shards) {
  using nlohmann::json;
  std::error_code ec;
  if (!stdfs::is_regular_file(snapshotFile, ec)) throw ConfigError("data.snapshot: " + snapshotFile + ": no such file");
  auto bad = [&](const std::string& why) { throw DataError("data.snapshot: " + snapshotFile + ": " + why); };
  json j = json::parse(fs::readFile(snapshotFile), nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("id") || !j["id"].is_string() || !j.contains("manifest") ||
      !j["manifest"].is_array()) {
    bad("not a snapshot (a JSON object with an \"id\" and a \"manifest\" array)");
  }
  const json& manifest = j["manifest"];
  if (manifest.size() != shards.size()) {
    throw DataError("data.train: " + std::to_string(shards.size()) + " shards, but the snapshot " + snapshotFile +
                    " lists " + std::to_string(manifest.size()) + ": shards were added to or removed from the run's data");
  }
  SnapshotIdBuilder id;
  std::vector<std::string> problems;
  for (size_t i = 0; i < shards.size(); ++i) {
    const json& e = manifest[i];
    if (!e.is_object() || !e.contains("sha256") || !e["sha256"].is_string() || !e.contains("rows") ||
        !e["rows"].is_number_integer()) {
      bad("manifest entry " + std::to_string(i) + " has no \"sha256\" string or no integer \"rows\"");
    }
    const std::string expected = e["sha256"].get<std::string>();
    const int64_t rows = e["rows"].get<int64_t>();
    id.add(expected);
    const std::string where = shards[i].path + " (snapshot entry " + std::to_string(i) +
                              (e.contains("seq") ? ", seq " + e["seq"].dump() : std::string()) + ")";
    if (shards[i].sha256 != expected) {
      problems.push_back(where + ": SHA-256 " + shards[i].sha256 + " found, " + expected + " expected");
    } else if (shards[i].rows != rows) {
      problems.push_back(where + ": " + std::to_string(shards[i].rows) + " rows found, " + std::to_string(rows) +
                         " expected");
    }
  }
  const std::string recomputed = id.finish();
  if (recomputed != j["id"].get<std::string>()) {
    problems.push_back(snapshotFile + ": its id " + j["id"].get<std::string>() +
                       " is not the hash of its manifest (" + recomputed + "): the file was altered");
  }
  if (!problems.empty()) {
    std::string text;
    const size_t shown = std::min<size_t>(problems.size(), 10);
    for (size_t i = 0; i < shown; ++i) text += (i ? "; " : "") + problems[i];
    if (shown < problems.size()) text += "; and " + std::to_string(problems.size() - shown) + " more";
    throw DataError("data.train: the training shards differ from the snapshot " + snapshotFile + " (data.snapshot): " +
                    text);
  }
  return recomputed;
}

ShardSetIdentity identifyShards(const std::string& dir) {
  ShardedDataset ds(dir);
  SnapshotIdBuilder b;
  for (size_t k = 0; k < ds.numShards(); ++k) b.add(toHex(ds.hashShard(k)));
  return {b.finish(), ds.size(), ds.numShards()};
}

}  // namespace perennial::data
