#pragma once
// The id of a data snapshot: the one recipe that the scheduler (its catalog's snapshot ids,
// runs/<id>/snapshot.json, lineage) and the trainer (result.json's and every checkpoint's
// data_snapshot) both use, so that the same shards in the same order have one id everywhere.
//
//   id = SHA-256 over, for each shard in order, its SHA-256 as 64 lowercase hex digits and "\n"
//
// The order is the scheduler's ingest order, which is also the file-name order of a run's data/
// directory (the trainer reads shards in file-name order). This is the recipe the scheduler's
// catalog has always used; ids stored in existing roots stay valid.
#include <string>
#include <vector>

#include "common/sha256.h"

namespace perennial {

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

}  // namespace perennial
