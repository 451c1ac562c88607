#pragma once
// The identity of a run's training data: each shard's SHA-256, hashed by the ranks together, and
// the snapshot id over them (dataset/snapshot.h's recipe, the scheduler's).
#include <string>

#include "dataset/shard_dataset.h"
#include "trainer/comm/communicator.h"

namespace perennial {

// NOTE [Data identity]: every run start hashes each training shard once (SHA-256 of its bytes,
// read through the descriptor the rows are read from), the ranks sharing the work: shards are
// dealt out largest first to the rank with the fewest bytes so far (sizes from rank 0, so every
// rank deals the same way), and the digests are summed across ranks (each is non-zero on its
// owner only). The snapshot id is dataset/snapshot.h's recipe over them, the scheduler's, so a
// scheduler run's result.json, checkpoints and lineage hold one id, the catalog's. With
// data.snapshot the shards are checked against it (NOTE [Snapshot check], shard_dataset.h) on
// every rank, which all stop with the same DataError on a mismatch.
struct DataIdentity {
  std::string snapshot;  // the id
  std::string shards;    // "SHA-256 FILE-NAME" per line, for checkpoints
};

// Collective: every rank calls it. Throws ConfigError when SNAPSHOT_FILE (data.snapshot) is set
// and missing, DataError (on every rank alike) when the shards do not match it.
DataIdentity dataIdentity(const data::ShardedDataset& ds, const std::string& snapshotFile, Communicator& comm);

}  // namespace perennial
