#pragma once
// Ingest: files in ROOT/incoming/ are validated (shard_validator.h), hashed (SHA-256), stored
// read-only as ROOT/data/<sha256>.h5 and recorded in the catalog with their profile; or moved
// to ROOT/quarantine/ beside a reason file.
//
// The arrival convention: a writer creates the file under a name that starts with '.' or ends
// with ".tmp" or ".part" and renames it when complete; such names are never picked up. With
// ingest.settle_s > 0 files modified more recently than that are also left for a later pass.
//
// Whoever writes incoming/ is not trusted (SECURITY.md). Each candidate is opened once, with
// O_NOFOLLOW|O_NONBLOCK, and judged by that descriptor alone: anything but a regular file is
// quarantined unread (rule `type`), a file over dataset.max_shard_bytes unread (rule `size`).
// Otherwise its bytes are copied from the descriptor into a private file in ROOT/tmp/, hashed on
// the way; the copy is validated, made read-only and renamed into data/. What is stored is
// exactly what was validated, and it is the scheduler's own file: the producer's file is never
// linked, chmodded or read again, so swapping it, or writing to it later, changes nothing. Its
// name in incoming/ is removed only while it still names the file that was read.
//
// One file's failure is that file's alone: an error while ingesting it (a full disk, say) leaves
// it in incoming/ for the next pass, logged, and the pass goes on with the next file.
//
// Crash safety (the scheduler may be killed at any point): data/<hash>.h5 is renamed into place
// before the catalog insert, and the name in incoming/ removed only after it. The catalog row
// records the identity of the file it was copied from (device, inode, size, mtime); a restart
// that finds that same file still in incoming/ finishes the job instead of calling it a
// duplicate of itself. A data file without a catalog row holds validated bytes (its name is
// their hash): the next file with those bytes is recorded against it. Quarantine records the
// catalog row first, then the reason file, then the file: each step is idempotent.
#include <string>
#include <vector>

#include "common/fault.h"
#include "scheduler/catalog.h"
#include "scheduler/clock.h"
#include "dataset/shard_validator.h"

namespace perennial::sched {

struct IngestOutcome {
  std::string source;  // the file's name in incoming/ (any bytes: show it with printable())
  bool accepted = false;
  bool skipped = false;  // left in incoming/ for a later pass (it vanished, or `reason` failed)
  std::string hash;
  int64_t rows = 0;
  std::string rule;    // when rejected
  std::string reason;
};

// Creates ROOT's directory layout (incoming/, data/, quarantine/, runs/, tmp/).
void ensureRootLayout(const std::string& root);

class Ingester {
 public:
  Ingester(Catalog& catalog, std::string root, data::DatasetRules rules, double settleS, Clock& clock);

  // Names in incoming/ ready for ingest, sorted (so shards arriving together keep their order).
  std::vector<std::string> pending();
  // Ingests every pending file.
  std::vector<IngestOutcome> ingestPending();
  // Ingests ROOT/incoming/NAME.
  IngestOutcome ingest(const std::string& name);

 private:
  struct Candidate;
  IngestOutcome ingestOpen(Candidate& c);
  // Quarantines C: its private copy when there is one, else the entry in incoming/ itself.
  IngestOutcome quarantine(Candidate& c, const std::string& hash, const std::string& rule, const std::string& reason);
  // Removes C's name from incoming/ if it still names the file that was read.
  void removeEntry(const Candidate& c);
  // The fault points "validated", "linked", "recorded", "quarantine-recorded" and
  // "quarantine-moved" between the steps above (NOTE [Fault points], common/fault.h).
  static void fault(const std::string& step) { perennial::fault::reached(step); }

  Catalog& cat_;
  std::string root_;
  data::DatasetRules rules_;
  double settleS_;
  Clock& clock_;
};

// Copies FILES into ROOT/incoming/ under the arrival convention: each is written to a hidden name
// of its own (created with O_EXCL|O_NOFOLLOW under a random name, so nothing planted in
// incoming/ is followed or overwritten), fsynced, and renamed to its name without replacing
// anything there. Throws DataError naming a file that cannot be read or a name already waiting.
std::vector<std::string> stageFiles(const std::string& root, const std::vector<std::string>& files);

}  // namespace perennial::sched
