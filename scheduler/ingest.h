#pragma once
// Ingest: files in ROOT/incoming/ are validated (shard_validator.h), hashed (SHA-256), stored
// read-only as ROOT/data/<sha256>.h5 and recorded in the catalog with their profile; or moved
// to ROOT/quarantine/ beside a reason file.
//
// The arrival convention: a writer creates the file under a name that starts with '.' or ends
// with ".tmp" or ".part" and renames it when complete; such names are never picked up. With
// ingest.settle_s > 0 files modified more recently than that are also left for a later pass.
//
// Crash safety (the scheduler may be killed at any point): the file is hard-linked into data/
// before the catalog insert, and unlinked from incoming/ only after it; a restart finds the
// same file in incoming/, sees that data/<hash>.h5 is the same inode (or that the catalog
// already has it) and finishes the job instead of ingesting twice or calling it a duplicate.
#include <string>
#include <vector>

#include "scheduler/catalog.h"
#include "scheduler/clock.h"
#include "scheduler/shard_validator.h"

namespace perennial::sched {

struct IngestOutcome {
  std::string source;  // the file's name in incoming/
  bool accepted = false;
  std::string hash;
  int64_t rows = 0;
  std::string rule;    // when rejected
  std::string reason;
};

// Creates ROOT's directory layout (incoming/, data/, quarantine/, runs/, tmp/).
void ensureRootLayout(const std::string& root);

class Ingester {
 public:
  Ingester(Catalog& catalog, std::string root, DatasetRules rules, double settleS, Clock& clock);

  // Names in incoming/ ready for ingest, sorted (so shards arriving together keep their order).
  std::vector<std::string> pending();
  // Ingests every pending file.
  std::vector<IngestOutcome> ingestPending();
  // Ingests ROOT/incoming/NAME.
  IngestOutcome ingest(const std::string& name);

  // Test hook: called with a step name ("linked", "recorded", "quarantine-recorded",
  // "quarantine-moved") between the steps above.
  void setFaultHook(std::function<void(const std::string&)> hook) { hook_ = std::move(hook); }

 private:
  IngestOutcome quarantine(const std::string& name, const std::string& hash, const std::string& rule,
                           const std::string& reason);
  void fault(const std::string& step) {
    if (hook_) hook_(step);
  }

  Catalog& cat_;
  std::string root_;
  DatasetRules rules_;
  double settleS_;
  Clock& clock_;
  std::function<void(const std::string&)> hook_;
};

// Copies FILES into ROOT/incoming/ under the arrival convention (copy to a hidden name, fsync,
// rename). Throws DataError naming a file that cannot be read.
std::vector<std::string> stageFiles(const std::string& root, const std::vector<std::string>& files);

}  // namespace perennial::sched
