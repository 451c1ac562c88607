#pragma once
// Data snapshots. The id of a data snapshot: the one recipe that the scheduler (its catalog's snapshot ids,
// runs/<id>/snapshot.json, lineage) and the trainer (result.json's and every checkpoint's
// data_snapshot) both use, so that the same shards in the same order have one id everywhere.
//
//   id = SHA-256 over, for each shard in order, its SHA-256 as 64 lowercase hex digits and "\n"
//
// The order is the scheduler's ingest order, which is also the file-name order of a run's data/
// directory (the trainer reads shards in file-name order). This is the recipe the scheduler's
// catalog has always used; ids stored in existing roots stay valid.
#include <cstdint>
#include <string>
#include <vector>

#include "common/sha256.h"

namespace perennial::data {

class SnapshotIdBuilder {
 public:
  // SHARD_SHA256: the shard's SHA-256 in lowercase hex (toHex(sha256File(path))).
  void add(const std::string& shardSha256) {
    h_.update(shardSha256.data(), shardSha256.size());
    h_.update("\n", 1);
  }
  std::string finish() { return toHex(h_.finish()); }

 private:
  Sha256 h_;
};

inline std::string snapshotId(const std::vector<std::string>& shardSha256s) {
  SnapshotIdBuilder b;
  for (const auto& s : shardSha256s) b.add(s);
  return b.finish();
}

// The identity of the shard directory DIR as it would be read (its *.h5 files in name order):
// the snapshot id over their SHA-256, and their rows. The validation gate records it for the
// holdout, so that metrics measured on different holdouts are never compared unknowingly.
// Throws DataError or IoError naming the directory or shard when it cannot be read as shards.
struct ShardSetIdentity {
  std::string id;
  int64_t rows = 0;
  size_t shards = 0;
};
ShardSetIdentity identifyShards(const std::string& dir);

// NOTE [Snapshot check]: a scheduler run's snapshot.json ({"id", "shards", "rows", "manifest":
// [{"seq", "sha256", "rows", "source"}, ...]} in ingest order, scheduler/scheduler.cpp) is what
// was validated and recorded in the catalog. The trainer compares what it is about to read with
// it: as many shards, in file-name order, each with the recorded SHA-256 and rows, and an id that
// is the recipe above over those hashes. Any difference throws DataError (exit
// 1) naming every shard that differs (its file, the expected and the found value).
struct ShardIdentity {
  std::string path;
  std::string sha256;  // hex, as found
  int64_t rows = 0;    // as found
};
// Checks SHARDS (in the order read) against the snapshot file SNAPSHOT_FILE; returns its id.
// Throws ConfigError when the file does not exist, DataError when it does not parse or differs.
std::string checkSnapshot(const std::string& snapshotFile, const std::vector<ShardIdentity>& shards);

}  // namespace perennial::data
