#include "scheduler/catalog.h"

#include <ostream>

#include <sys/stat.h>

#include <cstdio>

#include "common/error.h"
#include "common/text.h"

namespace perennial::sched {
namespace {

// Migration N takes the schema from version N-1 to N. Never edit a released migration: append.
const char* const kMigrations[] = {
    // 1: the first schema.
    R"sql(
CREATE TABLE shards(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  hash TEXT NOT NULL UNIQUE,
  file TEXT NOT NULL,
  source TEXT NOT NULL,
  rows INTEGER NOT NULL,
  bytes INTEGER NOT NULL,
  profile TEXT NOT NULL,
  ingested_at REAL NOT NULL);
CREATE TABLE quarantine(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  file TEXT NOT NULL UNIQUE,
  source TEXT NOT NULL,
  rule TEXT NOT NULL,
  reason TEXT NOT NULL,
  at REAL NOT NULL);
CREATE TABLE snapshots(
  id TEXT PRIMARY KEY,
  max_seq INTEGER NOT NULL,
  shards INTEGER NOT NULL,
  rows INTEGER NOT NULL,
  profile TEXT NOT NULL);
CREATE INDEX snapshots_by_seq ON snapshots(max_seq);
CREATE TABLE runs(
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  state TEXT NOT NULL,
  trigger TEXT NOT NULL,
  reason TEXT NOT NULL,
  snapshot_id TEXT NOT NULL REFERENCES snapshots(id),
  config TEXT NOT NULL,
  config_sha256 TEXT NOT NULL,
  warm_start TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  executor TEXT NOT NULL,
  exec_id TEXT NOT NULL,
  exit_code INTEGER,
  message TEXT NOT NULL,
  result TEXT NOT NULL,
  cancel_requested INTEGER NOT NULL,
  created_at REAL NOT NULL,
  updated_at REAL NOT NULL,
  finished_at REAL);
CREATE INDEX runs_by_state ON runs(state);
CREATE TABLE events(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  at REAL NOT NULL,
  kind TEXT NOT NULL,
  subject TEXT NOT NULL,
  detail TEXT NOT NULL);
CREATE INDEX events_by_kind ON events(kind, id);
CREATE TABLE trigger_state(
  name TEXT PRIMARY KEY,
  evaluated_at REAL NOT NULL,
  fired INTEGER NOT NULL,
  detail TEXT NOT NULL,
  last_fired_at REAL);
CREATE TABLE requests(
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  arg TEXT NOT NULL,
  at REAL NOT NULL,
  handled_at REAL);
CREATE INDEX requests_open ON requests(kind, handled_at);
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
)sql",
    // 2: the identity of the file a shard was copied from (ingest.h: finishing an interrupted
    // ingest of that very file, rather than calling it a duplicate of itself).
    R"sql(
ALTER TABLE shards ADD COLUMN source_id TEXT NOT NULL DEFAULT '';
)sql",
};
constexpr int kNumMigrations = static_cast<int>(sizeof(kMigrations) / sizeof(kMigrations[0]));
static_assert(kNumMigrations == kCatalogSchemaVersion, "one migration per schema version");

const char* kRunColumns =
    "seq, id, state, trigger, reason, snapshot_id, config, config_sha256, warm_start, attempt, max_attempts, "
    "executor, exec_id, exit_code, message, result, cancel_requested, created_at, updated_at, finished_at";

std::string resultText(const RunRecord& r) { return r.result ? dumpJson(r.result->toJson()) : std::string(); }

// The known states' names, for an error message: "pending, submitted, ...".
std::string runStateNames() {
  std::string out;
  for (RunState st : kAllRunStates) {
    if (!out.empty()) out += ", ";
    out += runStateName(st);
  }
  return out;
}

RunRecord readRun(const Statement& s) {
  RunRecord r;
  r.seq = s.int64(0);
  r.id = s.text(1);
  const std::string stateName = s.text(2);
  const std::optional<RunState> state = parseRunState(stateName);
  if (!state) {
    throw DataError(s.dbPath() + ": run " + r.id + " is in state '" + printable(stateName) +
                    "', which this Perennial does not know (it knows " + runStateNames() + ")");
  }
  r.state = *state;
  r.trigger = s.text(3);
  r.reason = s.text(4);
  r.snapshotId = s.text(5);
  r.config = s.text(6);
  r.configSha256 = s.text(7);
  r.warmStart = s.text(8);
  r.attempt = s.int64(9);
  r.maxAttempts = s.int64(10);
  r.executor = s.text(11);
  r.execId = s.text(12);
  if (!s.isNull(13)) r.exitCode = s.int64(13);
  r.message = s.text(14);
  if (const std::string text = s.text(15); !text.empty()) {
    try {
      r.result = TrainResult::parse(text, "run " + r.id + ": result");
    } catch (const DataError&) {
      r.result.reset();
    }
  }
  r.cancelRequested = s.int64(16) != 0;
  r.createdAt = s.real(17);
  r.updatedAt = s.real(18);
  if (!s.isNull(19)) r.finishedAt = s.real(19);
  return r;
}

ShardRecord readShard(const Statement& s, bool withProfile) {
  ShardRecord r;
  r.seq = s.int64(0);
  r.hash = s.text(1);
  r.file = s.text(2);
  r.source = s.text(3);
  r.rows = s.int64(4);
  r.bytes = s.int64(5);
  r.ingestedAt = s.real(6);
  if (withProfile) r.profile = s.text(7);
  return r;
}

// "?,?,?": N parameters, for a state list bound by bindStates (the states' names, never spelled
// out in SQL, so that a state added to RunState is in every query that means "all of them").
std::string placeholders(size_t n) {
  std::string out;
  for (size_t i = 0; i < n; ++i) out += i ? ",?" : "?";
  return out;
}

void bindStates(Statement& s, int first, const std::vector<RunState>& states) {
  for (size_t i = 0; i < states.size(); ++i) s.bind(first + static_cast<int>(i), runStateName(states[i]));
}

std::vector<RunState> statesWhere(bool (*keep)(RunState)) {
  std::vector<RunState> out;
  for (RunState st : kAllRunStates) {
    if (keep(st)) out.push_back(st);
  }
  return out;
}

}  // namespace

const char* runStateName(RunState s) {
  switch (s) {
    case RunState::kPending: return "pending";
    case RunState::kSubmitted: return "submitted";
    case RunState::kRunning: return "running";
    case RunState::kSucceeded: return "succeeded";
    case RunState::kFailed: return "failed";
    case RunState::kPreempted: return "preempted";
    case RunState::kCancelled: return "cancelled";
    case RunState::kValidating: return "validating";
    case RunState::kPromoted: return "promoted";
    case RunState::kRejected: return "rejected";
  }
  return "?";
}

std::ostream& operator<<(std::ostream& os, RunState s) { return os << runStateName(s); }

std::optional<RunState> parseRunState(const std::string& name) {
  for (RunState st : kAllRunStates) {
    if (name == runStateName(st)) return st;
  }
  return std::nullopt;
}

bool isActiveState(RunState s) { return s == RunState::kSubmitted || s == RunState::kRunning; }
bool isTerminalState(RunState s) {
  return s == RunState::kSucceeded || s == RunState::kFailed || s == RunState::kCancelled ||
         s == RunState::kPromoted || s == RunState::kRejected;
}

// The lease (NOTE [Catalog host]) is taken before SQLite opens the file: lease_ precedes db_.
Catalog::Catalog(const std::string& path, Access access) : lease_(path), db_(path) {
  // Owner read-write, group read: the catalog decides what is trained and published. (SQLite
  // gives its -wal and -shm files the database file's permissions.) A catalog someone made
  // group- or world-writable keeps what they chose.
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && (st.st_mode & 0777) == 0644) ::chmod(path.c_str(), 0640);
  migrate();
  if (access == Access::kReadOnly) db_.exec("PRAGMA query_only=1");
}

void Catalog::readTransaction(const std::function<void()>& body) {
  db_.exec("BEGIN");
  try {
    body();
  } catch (...) {
    try {
      db_.exec("ROLLBACK");
    } catch (const std::exception&) {
    }
    throw;
  }
  db_.exec("COMMIT");
}

int Catalog::schemaVersion() {
  Statement s = db_.prepare("PRAGMA user_version");
  s.step();
  return static_cast<int>(s.int64(0));
}

void Catalog::migrate() {
  const int have = schemaVersion();
  if (have > kCatalogSchemaVersion) {
    throw IoError(db_.path() + ": catalog schema version " + std::to_string(have) +
                  " is newer than this Perennial supports (" + std::to_string(kCatalogSchemaVersion) +
                  "); upgrade Perennial");
  }
  if (have == kCatalogSchemaVersion) return;
  // The version is read again under the write lock: two processes opening a new catalog at
  // once must not both migrate it.
  db_.transaction([&] {
    for (int v = schemaVersion() + 1; v <= kCatalogSchemaVersion; ++v) {
      db_.exec(kMigrations[v - 1]);
      db_.exec("PRAGMA user_version=" + std::to_string(v));
    }
  });
}

std::optional<ShardRecord> Catalog::shardByHash(const std::string& hash) {
  Statement s = db_.prepare(
      "SELECT seq, hash, file, source, rows, bytes, ingested_at, profile, source_id FROM shards WHERE hash = ?");
  s.bind(1, hash);
  if (!s.step()) return std::nullopt;
  ShardRecord r = readShard(s, true);
  r.sourceId = s.text(8);
  return r;
}

void Catalog::insertShard(ShardRecord& r) {
  db_.prepare(
         "INSERT INTO shards(hash, file, source, rows, bytes, profile, ingested_at, source_id) VALUES (?,?,?,?,?,?,?,?)")
      .bind(1, r.hash).bind(2, r.file).bind(3, r.source).bind(4, r.rows).bind(5, r.bytes).bind(6, r.profile)
      .bind(7, r.ingestedAt).bind(8, r.sourceId).run();
  r.seq = db_.lastInsertId();
}

NewDataStats Catalog::shardsAfter(int64_t seq) {
  Statement s = db_.prepare("SELECT COUNT(*), COALESCE(SUM(rows), 0), COALESCE(MAX(seq), 0) FROM shards WHERE seq > ?");
  s.bind(1, seq);
  s.step();
  return {s.int64(0), s.int64(1), s.int64(2)};
}

std::vector<ShardRecord> Catalog::shards(int64_t afterSeq, int64_t upToSeq, bool withProfile) {
  Statement s = db_.prepare(std::string("SELECT seq, hash, file, source, rows, bytes, ingested_at") +
                            (withProfile ? ", profile" : "") +
                            " FROM shards WHERE seq > ? AND seq <= ? ORDER BY seq");
  s.bind(1, afterSeq).bind(2, upToSeq);
  std::vector<ShardRecord> out;
  while (s.step()) out.push_back(readShard(s, withProfile));
  return out;
}

std::vector<ShardRecord> Catalog::recentShards(int64_t limit) {
  Statement s = db_.prepare(
      "SELECT seq, hash, file, source, rows, bytes, ingested_at FROM shards ORDER BY seq DESC LIMIT ?");
  s.bind(1, limit);
  std::vector<ShardRecord> out;
  while (s.step()) out.push_back(readShard(s, false));
  return out;
}

int64_t Catalog::shardCount() {
  Statement s = db_.prepare("SELECT COUNT(*) FROM shards");
  s.step();
  return s.int64(0);
}

bool Catalog::insertQuarantine(const QuarantineRecord& q) {
  db_.prepare("INSERT OR IGNORE INTO quarantine(file, source, rule, reason, at) VALUES (?,?,?,?,?)")
      .bind(1, q.file).bind(2, q.source).bind(3, q.rule).bind(4, q.reason).bind(5, q.at).run();
  return db_.changes() > 0;
}

std::vector<std::pair<std::string, int64_t>> Catalog::quarantineCountsByRule() {
  Statement s = db_.prepare("SELECT rule, COUNT(*) FROM quarantine GROUP BY rule ORDER BY rule");
  std::vector<std::pair<std::string, int64_t>> out;
  while (s.step()) out.emplace_back(s.text(0), s.int64(1));
  return out;
}

std::map<std::string, int64_t> Catalog::runCountsByState() {
  Statement s = db_.prepare("SELECT state, COUNT(*) FROM runs GROUP BY state ORDER BY state");
  std::map<std::string, int64_t> out;
  while (s.step()) out[s.text(0)] = s.int64(1);
  return out;
}

std::optional<RunRecord> Catalog::lastTrainedRun() {
  Statement s = db_.prepare(std::string("SELECT ") + kRunColumns +
                            " FROM runs WHERE state IN (?, ?, ?) AND result <> '' "
                            "ORDER BY COALESCE(finished_at, updated_at) DESC, seq DESC LIMIT 1");
  s.bind(1, runStateName(RunState::kSucceeded))
      .bind(2, runStateName(RunState::kPromoted))
      .bind(3, runStateName(RunState::kRejected));
  if (!s.step()) return std::nullopt;
  return readRun(s);
}

std::optional<EventRecord> Catalog::lastEvent(const std::string& kind, const std::string& subject) {
  Statement s = db_.prepare(
      "SELECT id, at, kind, subject, detail FROM events WHERE kind = ? AND subject = ? ORDER BY id DESC LIMIT 1");
  s.bind(1, kind).bind(2, subject);
  if (!s.step()) return std::nullopt;
  return EventRecord{s.int64(0), s.real(1), s.text(2), s.text(3), s.text(4)};
}

std::map<std::string, int64_t> Catalog::eventCountsBySubject(const std::string& kind) {
  Statement s = db_.prepare("SELECT subject, COUNT(*) FROM events WHERE kind = ? GROUP BY subject");
  s.bind(1, kind);
  std::map<std::string, int64_t> out;
  while (s.step()) out[s.text(0)] = s.int64(1);
  return out;
}

std::vector<QuarantineRecord> Catalog::quarantined(int64_t limit) {
  Statement s = db_.prepare("SELECT id, file, source, rule, reason, at FROM quarantine ORDER BY id DESC LIMIT ?");
  s.bind(1, limit);
  std::vector<QuarantineRecord> out;
  while (s.step()) out.push_back({s.int64(0), s.text(1), s.text(2), s.text(3), s.text(4), s.real(5)});
  return out;
}

int64_t Catalog::quarantineCount() {
  Statement s = db_.prepare("SELECT COUNT(*) FROM quarantine");
  s.step();
  return s.int64(0);
}

void Catalog::insertSnapshot(const SnapshotRecord& r) {
  db_.prepare("INSERT OR IGNORE INTO snapshots(id, max_seq, shards, rows, profile) VALUES (?,?,?,?,?)")
      .bind(1, r.id).bind(2, r.maxSeq).bind(3, r.shards).bind(4, r.rows).bind(5, r.profile).run();
}

std::optional<SnapshotRecord> Catalog::snapshot(const std::string& id) {
  Statement s = db_.prepare("SELECT id, max_seq, shards, rows, profile FROM snapshots WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return SnapshotRecord{s.text(0), s.int64(1), s.int64(2), s.int64(3), s.text(4)};
}

std::optional<SnapshotRecord> Catalog::snapshotAtOrBefore(int64_t maxSeq) {
  Statement s = db_.prepare(
      "SELECT id, max_seq, shards, rows, profile FROM snapshots WHERE max_seq <= ? ORDER BY max_seq DESC LIMIT 1");
  s.bind(1, maxSeq);
  if (!s.step()) return std::nullopt;
  return SnapshotRecord{s.text(0), s.int64(1), s.int64(2), s.int64(3), s.text(4)};
}

int64_t Catalog::coveredSeq(const std::string& championSnapshot) {
  // Every run covers its snapshot, whatever its outcome: a run that failed all its attempts or
  // was cancelled is not started again for the same data (that made a failing configuration
  // create a new run on every tick); new data, the schedule or `sched trigger` start the next.
  // A run's snapshot is the ingest order's prefix up to MAX(seq) when the run was created, and
  // runs are created in seq order: the newest covering run covers the most. (The unary + keeps
  // SQLite from walking runs_by_state and sorting: this reads from the newest run backwards and
  // stops at the first covering one; BENCHMARKS.md, "Scheduler".)
  const std::vector<RunState> every(std::begin(kAllRunStates), std::end(kAllRunStates));
  Statement s = db_.prepare(
      "SELECT MAX(COALESCE((SELECT sn.max_seq FROM runs r JOIN snapshots sn ON sn.id = r.snapshot_id "
      "WHERE +r.state IN (" + placeholders(every.size()) + ") ORDER BY r.seq DESC LIMIT 1), 0), "
      "COALESCE((SELECT max_seq FROM snapshots WHERE id = ?), 0))");
  bindStates(s, 1, every);
  s.bind(static_cast<int>(every.size()) + 1, championSnapshot);
  s.step();
  return s.int64(0);
}

int64_t Catalog::maxShardSeq() {
  Statement s = db_.prepare("SELECT COALESCE(MAX(seq), 0) FROM shards");
  s.step();
  return s.int64(0);
}

std::string Catalog::nextRunId() {
  Statement s = db_.prepare("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs");
  s.step();
  char buf[32];
  std::snprintf(buf, sizeof buf, "r%06lld", static_cast<long long>(s.int64(0)));
  return buf;
}

void Catalog::insertRun(RunRecord& r) {
  db_.prepare(std::string("INSERT INTO runs(") + kRunColumns +
              ") VALUES (NULL,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
      .bind(1, r.id).bind(2, runStateName(r.state)).bind(3, r.trigger).bind(4, r.reason).bind(5, r.snapshotId)
      .bind(6, r.config).bind(7, r.configSha256).bind(8, r.warmStart).bind(9, r.attempt).bind(10, r.maxAttempts)
      .bind(11, r.executor).bind(12, r.execId)
      .bindNull(13)
      .bind(14, r.message).bind(15, resultText(r)).bind(16, static_cast<int64_t>(r.cancelRequested))
      .bind(17, r.createdAt).bind(18, r.updatedAt)
      .bindNull(19)
      .run();
  PERENNIAL_CHECK(!r.exitCode && !r.finishedAt, "a run is inserted before it ran");
  r.seq = db_.lastInsertId();
}

void Catalog::updateRun(const RunRecord& r) {
  Statement s = db_.prepare(
      "UPDATE runs SET state=?, attempt=?, exec_id=?, exit_code=?, message=?, result=?, cancel_requested=?, "
      "updated_at=?, finished_at=? WHERE id=?");
  s.bind(1, runStateName(r.state)).bind(2, r.attempt).bind(3, r.execId);
  if (r.exitCode) s.bind(4, *r.exitCode); else s.bindNull(4);
  s.bind(5, r.message).bind(6, resultText(r)).bind(7, static_cast<int64_t>(r.cancelRequested)).bind(8, r.updatedAt);
  if (r.finishedAt) s.bind(9, *r.finishedAt); else s.bindNull(9);
  s.bind(10, r.id).run();
  PERENNIAL_CHECK(db_.changes() == 1, "run " << r.id << " not in the catalog");
}

std::optional<RunRecord> Catalog::run(const std::string& id) {
  Statement s = db_.prepare(std::string("SELECT ") + kRunColumns + " FROM runs WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return readRun(s);
}

std::vector<RunRecord> Catalog::runsInStates(const std::vector<RunState>& states) {
  Statement s = db_.prepare(std::string("SELECT ") + kRunColumns + " FROM runs WHERE state IN (" +
                            placeholders(states.size()) + ") ORDER BY seq");
  bindStates(s, 1, states);
  std::vector<RunRecord> out;
  while (s.step()) out.push_back(readRun(s));
  return out;
}

std::vector<RunRecord> Catalog::recentRuns(int64_t limit) {
  Statement s = db_.prepare(std::string("SELECT ") + kRunColumns + " FROM runs ORDER BY seq DESC LIMIT ?");
  s.bind(1, limit);
  std::vector<RunRecord> out;
  while (s.step()) out.push_back(readRun(s));
  return out;
}

int64_t Catalog::activeRunCount() {
  const std::vector<RunState> active = statesWhere(isActiveState);
  Statement s = db_.prepare("SELECT COUNT(*) FROM runs WHERE state IN (" + placeholders(active.size()) + ")");
  bindStates(s, 1, active);
  s.step();
  return s.int64(0);
}

std::optional<double> Catalog::lastRunCreatedAt() {
  Statement s = db_.prepare("SELECT created_at FROM runs ORDER BY seq DESC LIMIT 1");
  if (!s.step()) return std::nullopt;
  return s.real(0);
}

void Catalog::addEvent(double at, const std::string& kind, const std::string& subject, const nlohmann::json& detail) {
  db_.prepare("INSERT INTO events(at, kind, subject, detail) VALUES (?,?,?,?)")
      .bind(1, at).bind(2, kind).bind(3, subject).bind(4, dumpJson(detail)).run();
}

std::vector<EventRecord> Catalog::events(int64_t limit, const std::string& kind) {
  Statement s = db_.prepare(kind.empty()
                                ? "SELECT id, at, kind, subject, detail FROM events ORDER BY id DESC LIMIT ?"
                                : "SELECT id, at, kind, subject, detail FROM events WHERE kind = ? ORDER BY id DESC LIMIT ?");
  if (kind.empty()) {
    s.bind(1, limit);
  } else {
    s.bind(1, kind).bind(2, limit);
  }
  std::vector<EventRecord> out;
  while (s.step()) out.push_back({s.int64(0), s.real(1), s.text(2), s.text(3), s.text(4)});
  return out;
}

void Catalog::saveTriggerState(const TriggerStateRecord& t) {
  Statement s = db_.prepare(
      "INSERT INTO trigger_state(name, evaluated_at, fired, detail, last_fired_at) VALUES (?,?,?,?,?) "
      "ON CONFLICT(name) DO UPDATE SET evaluated_at=excluded.evaluated_at, fired=excluded.fired, "
      "detail=excluded.detail, last_fired_at=COALESCE(excluded.last_fired_at, trigger_state.last_fired_at)");
  s.bind(1, t.name).bind(2, t.evaluatedAt).bind(3, static_cast<int64_t>(t.fired)).bind(4, t.detail);
  if (t.lastFiredAt) s.bind(5, *t.lastFiredAt); else s.bindNull(5);
  s.run();
}

std::vector<TriggerStateRecord> Catalog::triggerStates() {
  Statement s = db_.prepare("SELECT name, evaluated_at, fired, detail, last_fired_at FROM trigger_state ORDER BY name");
  std::vector<TriggerStateRecord> out;
  while (s.step()) {
    TriggerStateRecord t{s.text(0), s.real(1), s.int64(2) != 0, s.text(3), std::nullopt};
    if (!s.isNull(4)) t.lastFiredAt = s.real(4);
    out.push_back(std::move(t));
  }
  return out;
}

std::optional<double> Catalog::lastFiredAt(const std::string& trigger) {
  Statement s = db_.prepare("SELECT last_fired_at FROM trigger_state WHERE name = ?");
  s.bind(1, trigger);
  if (!s.step() || s.isNull(0)) return std::nullopt;
  return s.real(0);
}

void Catalog::addRequest(const std::string& kind, const std::string& arg, double at) {
  db_.prepare("INSERT INTO requests(kind, arg, at) VALUES (?,?,?)").bind(1, kind).bind(2, arg).bind(3, at).run();
}

std::vector<RequestRecord> Catalog::openRequests(const std::string& kind) {
  Statement s = db_.prepare("SELECT id, kind, arg, at FROM requests WHERE kind = ? AND handled_at IS NULL ORDER BY id");
  s.bind(1, kind);
  std::vector<RequestRecord> out;
  while (s.step()) out.push_back({s.int64(0), s.text(1), s.text(2), s.real(3)});
  return out;
}

void Catalog::closeRequest(int64_t id, double at) {
  db_.prepare("UPDATE requests SET handled_at = ? WHERE id = ?").bind(1, at).bind(2, id).run();
}

std::optional<std::string> Catalog::meta(const std::string& key) {
  Statement s = db_.prepare("SELECT value FROM meta WHERE key = ?");
  s.bind(1, key);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

void Catalog::setMeta(const std::string& key, const std::string& value) {
  db_.prepare("INSERT INTO meta(key, value) VALUES (?,?) ON CONFLICT(key) DO UPDATE SET value=excluded.value")
      .bind(1, key).bind(2, value).run();
}

}  // namespace perennial::sched
