#pragma once
// The scheduler's catalog: one SQLite database (ROOT/catalog.db) holding shards, quarantined
// files, data snapshots, runs, events, trigger states and requests. The schema is versioned
// (PRAGMA user_version) and migrated forward on open; every state change is one transaction,
// so the scheduler may be killed at any point and restarted. The catalog is open on one host at
// a time (catalog_host.h): every process that opens it takes a lease first.
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "scheduler/catalog_host.h"
#include "scheduler/sqlite.h"
#include "trainer/results.h"

namespace perennial::sched {

inline constexpr int kCatalogSchemaVersion = 2;

// Where a scheduler root keeps its catalog.
inline std::string catalogPath(const std::string& root) { return root + "/catalog.db"; }

struct ShardRecord {
  int64_t seq = 0;       // ingest order, 1-based, never reused
  std::string hash;      // SHA-256 of the file's bytes
  std::string file;      // path relative to the root (data/<hash>.h5)
  std::string source;    // the name it arrived under (any bytes: see common/text.h)
  std::string sourceId;  // that file's identity when it was copied (ingest.cpp), "" before schema 2
  int64_t rows = 0;
  int64_t bytes = 0;
  std::string profile;   // JSON (profile.h)
  double ingestedAt = 0;
};

struct QuarantineRecord {
  int64_t id = 0;
  std::string file;    // relative to the root (quarantine/...)
  std::string source;
  std::string rule;
  std::string reason;
  double at = 0;
};

// Run states. A run is created pending; an attempt goes submitted -> running -> one of
// succeeded | failed | preempted | cancelled; a failed or preempted attempt with attempts left
// goes back to pending. With the validation gate, a run whose training succeeded goes
// validating -> promoted | rejected (without it, succeeded is final and the run is champion).
// The catalog stores each as its name (runStateName): runs.state, the "state" of run events.
enum class RunState {
  kPending,
  kSubmitted,
  kRunning,
  kSucceeded,
  kFailed,
  kPreempted,
  kCancelled,
  kValidating,
  kPromoted,
  kRejected,
};

// Every state, in the order above.
inline constexpr RunState kAllRunStates[] = {
    RunState::kPending,  RunState::kSubmitted, RunState::kRunning,   RunState::kSucceeded,
    RunState::kFailed,   RunState::kPreempted, RunState::kCancelled, RunState::kValidating,
    RunState::kPromoted, RunState::kRejected};

// "pending", "submitted", ...: the name the catalog, the JSON output and the metrics use.
const char* runStateName(RunState s);
// Writes runStateName(S) (so that test failures and logs show the name, not a byte).
std::ostream& operator<<(std::ostream& os, RunState s);
// The state named NAME (exactly as runStateName spells it); nullopt for any other text.
std::optional<RunState> parseRunState(const std::string& name);
// Not JSON's number of the enum (nlohmann's default), which would change the events and the
// JSON output: spell a state with runStateName. (Deleted, `json{{"state", s}}` does not compile.)
void to_json(nlohmann::json& j, RunState s) = delete;

bool isActiveState(RunState s);    // submitted | running
// succeeded | failed | cancelled | promoted | rejected (preempted retries)
bool isTerminalState(RunState s);

struct RunRecord {
  int64_t seq = 0;
  std::string id;  // r000001, ...
  RunState state = RunState::kPending;
  std::string trigger;   // the trigger that fired it
  std::string reason;    // why (the trigger's explanation)
  std::string snapshotId;
  std::string config;    // resolved training configuration (INI)
  std::string configSha256;
  std::string warmStart; // run id of the champion it starts from; empty: from scratch
  int64_t attempt = 0;   // attempts started so far
  int64_t maxAttempts = 1;
  std::string executor;
  std::string execId;    // the executor's handle of the current attempt (pid, Slurm job id)
  std::optional<int64_t> exitCode;
  std::string message;
  // result.json of a succeeded run (absent before; also when the stored text does not read as one,
  // which only a catalog edited by hand can hold).
  std::optional<TrainResult> result;
  bool cancelRequested = false;
  double createdAt = 0, updatedAt = 0;
  std::optional<double> finishedAt;
};

struct SnapshotRecord {
  std::string id;  // SHA-256 of the manifest
  int64_t maxSeq = 0;
  int64_t shards = 0;
  int64_t rows = 0;
  std::string profile;   // merged profile of its shards (JSON)
  // The manifest (every shard's seq, hash and rows) is the catalog's shards up to maxSeq: a
  // snapshot is always a prefix of the ingest order. Runs write it out as snapshot.json.
};

struct EventRecord {
  int64_t id = 0;
  double at = 0;
  std::string kind;     // ingest | quarantine | trigger | run | request | scheduler
  std::string subject;  // shard hash, trigger name, run id
  std::string detail;   // JSON
};

struct TriggerStateRecord {
  std::string name;
  double evaluatedAt = 0;
  bool fired = false;
  std::string detail;  // JSON: values, thresholds, decision
  std::optional<double> lastFiredAt;
};

struct RequestRecord {
  int64_t id = 0;
  std::string kind;  // trigger | cancel
  std::string arg;
  double at = 0;
};

struct NewDataStats {
  int64_t shards = 0;
  int64_t rows = 0;
  int64_t maxSeq = 0;
};

class Catalog {
 public:
  enum class Access { kReadWrite, kReadOnly };
  // Opens or creates PATH and migrates it to kCatalogSchemaVersion. Refuses (IoError) a catalog
  // written by a newer Perennial, and (IoError) one that is open on another host, before SQLite
  // opens it (NOTE [Catalog host], catalog_host.h: the catalog holds a lease while it is open).
  // With kReadOnly, every statement after the migration that would write fails (the metrics
  // endpoint's connections).
  explicit Catalog(const std::string& path, Access access = Access::kReadWrite);

  // Runs BODY as one write transaction (BEGIN IMMEDIATE): all of its changes or none.
  void transaction(const std::function<void()>& body) { db_.transaction(body); }
  // Runs BODY as one read transaction: every read in it sees the same state of the catalog.
  void readTransaction(const std::function<void()>& body);
  int schemaVersion();

  // Shards.
  std::optional<ShardRecord> shardByHash(const std::string& hash);
  void insertShard(ShardRecord& s);  // sets s.seq
  NewDataStats shardsAfter(int64_t seq);
  std::vector<ShardRecord> shards(int64_t afterSeq, int64_t upToSeq, bool withProfile);
  std::vector<ShardRecord> recentShards(int64_t limit);
  int64_t shardCount();
  int64_t maxShardSeq();  // 0 when there is none

  // Quarantine. Insert is idempotent on FILE: returns false when FILE was already recorded.
  bool insertQuarantine(const QuarantineRecord& q);
  std::vector<QuarantineRecord> quarantined(int64_t limit);
  int64_t quarantineCount();
  std::vector<std::pair<std::string, int64_t>> quarantineCountsByRule();  // by rule name

  // Snapshots. Insert is idempotent on the id.
  void insertSnapshot(const SnapshotRecord& s);
  std::optional<SnapshotRecord> snapshot(const std::string& id);
  // The snapshot with the largest max_seq <= MAX_SEQ (to build the next profile incrementally).
  std::optional<SnapshotRecord> snapshotAtOrBefore(int64_t maxSeq);
  // Shards covered by the champion or by any run (a rejected run covers its data too: the same
  // data would give the same model; a failed or cancelled one is not retried on the same data).
  int64_t coveredSeq(const std::string& championSnapshot);

  // Runs. Reading a run whose stored state this build does not know throws DataError.
  std::string nextRunId();
  void insertRun(RunRecord& r);  // sets seq
  void updateRun(const RunRecord& r);
  std::optional<RunRecord> run(const std::string& id);
  std::vector<RunRecord> runsInStates(const std::vector<RunState>& states);
  std::vector<RunRecord> recentRuns(int64_t limit);
  int64_t activeRunCount();
  std::optional<double> lastRunCreatedAt();
  // By the stored name, only the states some run is in: a name this build does not know (a
  // newer Perennial's state) is counted too, where reading such a run throws (DataError).
  std::map<std::string, int64_t> runCountsByState();
  // The run that most recently finished training (succeeded, promoted or rejected) with a result.
  std::optional<RunRecord> lastTrainedRun();

  // Events.
  void addEvent(double at, const std::string& kind, const std::string& subject, const nlohmann::json& detail);
  std::vector<EventRecord> events(int64_t limit, const std::string& kind = "");
  std::optional<EventRecord> lastEvent(const std::string& kind, const std::string& subject);
  std::map<std::string, int64_t> eventCountsBySubject(const std::string& kind);

  // Trigger states (the latest evaluation of each trigger).
  void saveTriggerState(const TriggerStateRecord& t);
  std::vector<TriggerStateRecord> triggerStates();
  std::optional<double> lastFiredAt(const std::string& trigger);

  // Requests from other processes (`sched trigger`, `sched cancel`).
  void addRequest(const std::string& kind, const std::string& arg, double at);
  std::vector<RequestRecord> openRequests(const std::string& kind);
  void closeRequest(int64_t id, double at);

  // Small key/value settings: "champion" (run id), "ticks", "last_tick_at", ...
  std::optional<std::string> meta(const std::string& key);
  void setMeta(const std::string& key, const std::string& value);

 private:
  // Raw SQL for tests and benchmarks that fill or break a catalog on purpose
  // (tests/sched/catalog_test_peer.h); the scheduler's code goes through the methods above.
  friend struct CatalogTestPeer;
  void migrate();
  CatalogHostLease lease_;  // taken before, and released after, the database connection
  Database db_;
};

}  // namespace perennial::sched
