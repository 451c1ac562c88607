#include "checkpoint/checkpoint_store.h"
#include "common/text.h"

#include <chrono>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <future>

#include "common/error.h"
#include "common/fault.h"
#include "common/fs_util.h"
#include "common/sha256.h"

namespace perennial::checkpoint {
namespace stdfs = std::filesystem;

namespace {

std::string fileName(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "ckpt-%010lld", static_cast<long long>(step));
  return buf;
}

// The manifest beside a checkpoint file ("" when the name does not end in .h5).
std::string manifestFor(const std::string& h5) {
  if (h5.size() < 3 || h5.compare(h5.size() - 3, 3, ".h5") != 0) return "";
  return h5.substr(0, h5.size() - 3) + ".json";
}

bool samePath(const std::string& a, const std::string& b) {
  std::error_code ec;
  const bool same = stdfs::equivalent(a, b, ec);
  return !ec && same;
}

std::string nowIso() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

std::optional<nlohmann::json> readManifest(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  try {
    return nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

}  // namespace

CheckpointStore::CheckpointStore(std::string dir, Retention retention)
    : dir_(std::move(dir)), retention_(std::move(retention)) {
  PERENNIAL_CHECK(retention_.keepLast >= 1, "keepLast " << retention_.keepLast);
}

CheckpointInfo CheckpointStore::save(const Document& doc, int64_t step, int64_t epoch,
                                     const nlohmann::json& metrics, const std::string& protect) {
  stdfs::create_directories(dir_);
  removeStrays();
  CheckpointInfo info;
  info.step = step;
  info.path = dir_ + "/" + fileName(step) + ".h5";
  info.manifest = manifestFor(info.path);
  // Re-saving a step (for example after a resume) first uncommits the old file.
  std::error_code ec;
  if (stdfs::remove(info.manifest, ec)) fs::fsyncDir(dir_);  // durably uncommitted before rewriting
  writeDocument(info.path, doc, &info.sha256);
  fault::reached("checkpoint-document-written");
  info.record = {{"file", stdfs::path(info.path).filename().string()},
                 {"sha256", info.sha256},
                 {"bytes", static_cast<int64_t>(stdfs::file_size(info.path))},
                 {"step", step},
                 {"epoch", epoch},
                 {"metrics", metrics.is_null() ? nlohmann::json::object() : metrics},
                 {"format", kCheckpointFormat},
                 {"format_version", kCheckpointFormatVersion},
                 {"created_at", nowIso()}};
  fault::reached("checkpoint-record-ready");
  fs::writeFileAtomic(info.manifest, dumpJson(info.record, 2) + "\n");
  fault::reached("checkpoint-manifest-written");
  applyRetention(protect.empty() ? info.path : protect);
  return info;
}

std::vector<CheckpointInfo> CheckpointStore::committed() const {
  std::vector<CheckpointInfo> out;
  std::error_code ec;
  if (!stdfs::is_directory(dir_, ec)) return out;
  for (const std::string& m : fs::listFiles(dir_, ".json")) {
    const std::string name = stdfs::path(m).filename().string();
    if (name.rfind("ckpt-", 0) != 0) continue;
    auto record = readManifest(m);
    // A manifest that does not parse commits nothing (a crash cannot produce one: it is
    // written atomically); such a checkpoint is not a candidate for resume or retention.
    if (!record || !record->is_object() || !(*record)["sha256"].is_string() ||
        !(*record)["step"].is_number_integer()) {
      continue;
    }
    CheckpointInfo info;
    info.manifest = m;
    info.path = m.substr(0, m.size() - 5) + ".h5";
    info.step = (*record)["step"].get<int64_t>();
    info.sha256 = (*record)["sha256"].get<std::string>();
    info.record = *record;
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

std::optional<CheckpointInfo> CheckpointStore::newestValid(std::vector<std::string>* skipped) const {
  auto all = committed();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      verifyCheckpoint(it->path);
      return *it;
    } catch (const std::exception& e) {  // any failure to verify means: skip it
      if (skipped) skipped->push_back(e.what());
    }
  }
  return std::nullopt;
}

void CheckpointStore::removeStrays() const {
  std::error_code ec;
  if (!stdfs::is_directory(dir_, ec)) return;
  for (const auto& entry : stdfs::directory_iterator(dir_, ec)) {
    const std::string name = entry.path().filename().string();
    const std::string path = entry.path().string();
    if (name.rfind("ckpt-", 0) != 0) continue;
    const bool tmp = name.find(".tmp.") != std::string::npos;
    const bool uncommitted = name.size() > 3 && name.compare(name.size() - 3, 3, ".h5") == 0 &&
                             !stdfs::exists(manifestFor(path));
    if (tmp || uncommitted) stdfs::remove(entry.path(), ec);
  }
}

void CheckpointStore::applyRetention(const std::string& protect) const {
  auto all = committed();
  std::vector<bool> keep(all.size(), false);
  for (size_t i = 0; i < all.size(); ++i) {
    if (static_cast<int64_t>(all.size() - i) <= retention_.keepLast) keep[i] = true;
    if (!protect.empty() && samePath(all[i].path, protect)) keep[i] = true;
  }
  if (!retention_.bestMetric.empty()) {
    std::optional<size_t> best;
    for (size_t i = 0; i < all.size(); ++i) {
      const auto& m = all[i].record["metrics"];
      if (!m.is_object() || !m.contains(retention_.bestMetric) || !m[retention_.bestMetric].is_number()) continue;
      const double v = m[retention_.bestMetric].get<double>();
      if (!best) {
        best = i;
        continue;
      }
      const double b = all[*best].record["metrics"][retention_.bestMetric].get<double>();
      if (retention_.higherIsBetter ? v > b : v < b) best = i;
    }
    if (best) keep[*best] = true;
  }
  for (size_t i = 0; i < all.size(); ++i) {
    if (keep[i]) continue;
    std::error_code ec;
    stdfs::remove(all[i].manifest, ec);  // uncommit first
    stdfs::remove(all[i].path, ec);
  }
}

Document verifyCheckpoint(const std::string& path, const TensorSink& sink) {
  const std::string manifest = manifestFor(path);
  std::error_code ec;
  std::string want;
  if (!manifest.empty() && stdfs::exists(manifest, ec)) {
    auto record = readManifest(manifest);
    if (!record || !record->is_object() || !(*record)["sha256"].is_string()) {
      throw DataError(manifest + ": unreadable manifest (expected JSON with a string 'sha256')");
    }
    want = (*record)["sha256"].get<std::string>();
  }
  // The whole-file hash runs beside the dataset reads; a mismatch wins over any read error.
  std::future<std::string> hash;
  if (!want.empty()) hash = std::async(std::launch::async, [&path] { return toHex(sha256File(path)); });
  auto checkHash = [&] {
    if (!hash.valid()) return;
    const std::string got = hash.get();
    if (got != want) {
      throw DataError(path + ": SHA-256 " + got + " does not match the " + want + " recorded at commit in " + manifest);
    }
  };
  Document doc;
  try {
    doc = readDocument(path, kCheckpointFormat, sink);
  } catch (...) {
    checkHash();
    throw;
  }
  checkHash();
  if (doc.formatVersion != kCheckpointFormatVersion) {
    throw DataError(path + ": checkpoint format_version " + std::to_string(doc.formatVersion) +
                    " is not supported (this build reads " + std::to_string(kCheckpointFormatVersion) + ")");
  }
  for (const char* key : {"progress.step", "progress.epoch", "progress.sample_cursor", "world.size"}) {
    doc.integer(key, path);
  }
  for (const char* key : {"config", "config_sha256", "param_sha256", "optimizer.name"}) doc.str(key, path);
  if (!doc.group("state_dict")) throw DataError(path + ": group 'state_dict' missing");
  return doc;
}

}  // namespace perennial::checkpoint
