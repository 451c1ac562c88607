#pragma once
// The checkpoints of one run: RUN/checkpoints/ckpt-<step>.h5 and its manifest ckpt-<step>.json.
//
// NOTE [Commit protocol]: a checkpoint is committed when its manifest exists. Saving writes the
// HDF5 file atomically (temporary file, fsync, rename, fsync dir), hashes it, then writes the
// manifest atomically; the manifest's rename is the commit point. A crash at any moment leaves
// the previous committed checkpoints intact and at most an uncommitted file or a temporary
// file, which are never considered and are removed by the next save. Deleting a checkpoint
// removes its manifest first (uncommitting it), then the file.
//
// The manifest (JSON) holds: file, sha256, bytes, step, epoch, metrics, created_at (wall-clock
// time lives here, never inside the HDF5 file, so the checkpoint bytes stay deterministic).
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "checkpoint/document.h"

namespace perennial::checkpoint {

inline constexpr const char* kCheckpointFormat = "perennial-checkpoint";
inline constexpr int64_t kCheckpointFormatVersion = 1;

struct CheckpointInfo {
  std::string path;      // the .h5 file
  std::string manifest;  // the .json beside it
  int64_t step = 0;
  std::string sha256;
  nlohmann::json record;  // the manifest's content
};

struct Retention {
  int64_t keepLast = 3;           // the newest K committed checkpoints (>= 1)
  std::string bestMetric;         // "" (none), or a key of the manifest's metrics
  bool higherIsBetter = true;
};

class CheckpointStore {
 public:
  CheckpointStore(std::string dir, Retention retention);

  const std::string& dir() const { return dir_; }

  // Saves DOC as the checkpoint of STEP with METRICS (may be empty) and applies retention,
  // never deleting PROTECT (the checkpoint this run resumed from). Returns the commit.
  CheckpointInfo save(const Document& doc, int64_t step, int64_t epoch, const nlohmann::json& metrics,
                      const std::string& protect = "");

  // Committed checkpoints (manifest present and readable), oldest first. Not verified.
  std::vector<CheckpointInfo> committed() const;

  // The newest committed checkpoint that verifies; each one skipped is reported in SKIPPED
  // with its reason. nullopt when none verifies (or there are none).
  std::optional<CheckpointInfo> newestValid(std::vector<std::string>* skipped = nullptr) const;

  // Removes temporary files and uncommitted checkpoint files left by a crash.
  void removeStrays() const;

  void applyRetention(const std::string& protect) const;

 private:
  std::string dir_;
  Retention retention_;
};

// Verifies one checkpoint file: its manifest's SHA-256 when a manifest sits beside it, then
// every dataset's checksum and the required metadata. Returns the document. Throws DataError or
// IoError naming the file and what failed.
// SINK as in readDocument: tensors it places are read straight into the caller's memory.
Document verifyCheckpoint(const std::string& path, const TensorSink& sink = nullptr);

}  // namespace perennial::checkpoint
