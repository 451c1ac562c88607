// The scheduler's catalog (scheduler/catalog.h) and ingest of arriving files (scheduler/ingest.h),
// including recovery from a crash at each step of an ingest.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <hdf5.h>
#include <nlohmann/json.hpp>

#include "common/h5.h"
#include "common/error.h"
#include "common/fault.h"
#include "common/sha256.h"
#include "common/text.h"
#include "tests/sched/catalog_test_peer.h"
#include "scheduler/catalog.h"
#include "scheduler/catalog_host.h"
#include "scheduler/clock.h"
#include "scheduler/ingest.h"
#include "dataset/profile.h"
#include "dataset/shard_validator.h"
#include "tests/sched/shard_fixtures.h"
#include "dataset/shard_dataset.h"

namespace perennial::sched {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;
using data::DatasetRules;
using data::Profile;

using testing::fashionSpec;
using testing::messageOf;
using testing::kElems;
using testing::kRows;

// A valid shard; SALT changes its bytes (so two salts give two different hashes).
void writeValidShard(const std::string& path, int salt = 0, int64_t rows = kRows) {
  std::vector<uint8_t> images(static_cast<size_t>(rows * kElems));
  for (size_t i = 0; i < images.size(); ++i) images[i] = static_cast<uint8_t>((i * 7 + static_cast<size_t>(salt) * 13) % 256);
  std::vector<int64_t> labels(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) labels[static_cast<size_t>(r)] = (r + salt) % 10;
  data::writeShard(path, fashionSpec(), images.data(), labels.data(), rows);
}

void writeText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::string readText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> listDir(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : stdfs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool endsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

double realNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void setMtime(const std::string& path, double secondsAgo) {
  const auto t = stdfs::last_write_time(path);
  stdfs::last_write_time(path, t - std::chrono::duration_cast<stdfs::file_time_type::duration>(
                                       std::chrono::duration<double>(secondsAgo)));
}

class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (stdfs::path(::testing::TempDir()) / "perennial-catalog-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << tmpl;
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    stdfs::remove_all(dir_, ec);
  }
  std::string path(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_;
};

// ---------------------------------------------------------------------------------------------
// Catalog

class CatalogTest : public TempDirTest {
 protected:
  std::string dbPath() const { return path("catalog.db"); }

  static ShardRecord shard(const std::string& hash, int64_t rows, double at = 100) {
    ShardRecord s;
    s.hash = hash;
    s.file = "data/" + hash + ".h5";
    s.source = hash + "-source.h5";
    s.rows = rows;
    s.bytes = rows * 1000;
    s.profile = "{\"rows\": " + std::to_string(rows) + "}";
    s.ingestedAt = at;
    return s;
  }

  static RunRecord run(Catalog& c, const std::string& snapshotId, RunState st, double at = 10) {
    RunRecord r;
    r.id = c.nextRunId();
    r.state = st;
    r.trigger = "new_data";
    r.reason = "test";
    r.snapshotId = snapshotId;
    r.config = "[train]\n";
    r.configSha256 = "abc";
    r.executor = "local";
    r.maxAttempts = 3;
    r.createdAt = at;
    r.updatedAt = at;
    return r;
  }
};

TEST_F(CatalogTest, FreshCatalogHasTheCurrentSchemaInWalMode) {
  Catalog c(dbPath());
  EXPECT_EQ(c.schemaVersion(), kCatalogSchemaVersion);
  Statement s = CatalogTestPeer::db(c).prepare("PRAGMA journal_mode");
  ASSERT_TRUE(s.step());
  EXPECT_EQ(s.text(0), "wal");
  EXPECT_EQ(c.shardCount(), 0);
  EXPECT_EQ(c.quarantineCount(), 0);
  EXPECT_EQ(c.activeRunCount(), 0);
  EXPECT_FALSE(c.lastRunCreatedAt());
  EXPECT_TRUE(c.events(10).empty());
  EXPECT_TRUE(c.triggerStates().empty());
  EXPECT_FALSE(c.meta("champion"));
}

TEST_F(CatalogTest, ReopeningKeepsTheData) {
  {
    Catalog c(dbPath());
    ShardRecord s = shard("aaaa", 5);
    c.insertShard(s);
    c.setMeta("champion", "r000001");
    c.addEvent(3, "scheduler", "", {{"x", 1}});
  }
  Catalog c(dbPath());
  EXPECT_EQ(c.schemaVersion(), kCatalogSchemaVersion);
  EXPECT_EQ(c.shardCount(), 1);
  ASSERT_TRUE(c.shardByHash("aaaa"));
  EXPECT_EQ(c.shardByHash("aaaa")->rows, 5);
  EXPECT_EQ(c.meta("champion").value_or(""), "r000001");
  ASSERT_EQ(c.events(10).size(), 1u);
}

TEST_F(CatalogTest, NewerSchemaIsRefused) {
  {
    Catalog c(dbPath());
    CatalogTestPeer::db(c).exec("PRAGMA user_version=" + std::to_string(kCatalogSchemaVersion + 1));
  }
  try {
    Catalog c(dbPath());
    ADD_FAILURE() << "a catalog of a newer schema was opened";
  } catch (const IoError& e) {
    EXPECT_CONTAINS(std::string(e.what()), std::string("newer"));
    EXPECT_CONTAINS(std::string(e.what()), dbPath());
  }
}

// NOTE [Catalog host]: whoever opens the catalog holds a lease on its host record; another host
// is refused while the catalog is open, before SQLite touches the file, and takes it over when
// it is idle. (Another host is a lease taken with another identity.)
TEST_F(CatalogTest, IsOpenOnOneHostAtATime) {
  const HostIdentity me = thisHost();
  const HostIdentity other{"node-b", "b00t"};
  ASSERT_FALSE(me.host.empty());
  ASSERT_NE(me.host, other.host);
  const std::string record = catalogHostFile(dbPath());
  auto recorded = [&] { return json::parse(std::ifstream(record)); };
  {
    Catalog c(dbPath());
    EXPECT_EQ(recorded()["host"], me.host);
    EXPECT_EQ(recorded()["boot_id"], me.bootId);
    // Open here: another host is refused, naming both hosts and the file.
    const std::string message = messageOf<IoError>([&] { CatalogHostLease lease(dbPath(), other); });
    EXPECT_CONTAINS(message, dbPath() + ": the catalog is in use on host '" + me.host + "' (recorded in " + record +
                                 "), this is 'node-b'");
    EXPECT_CONTAINS(message, "run this command on '" + me.host + "'");
    Catalog second(dbPath());  // this host again: fine
    // A machine with this name but another boot (a namesake elsewhere) is refused too.
    EXPECT_CONTAINS(messageOf<IoError>([&] { CatalogHostLease lease(dbPath(), {me.host, "another-boot"}); }),
                    "in use on another machine named '" + me.host + "' (boot id " + me.bootId);
  }
  // Idle: the other host takes it over; while it holds it, this host is refused, and SQLite never
  // opened the database here (its -wal and -shm files, removed at the last close, stay away).
  ASSERT_FALSE(stdfs::exists(dbPath() + "-shm"));
  {
    CatalogHostLease lease(dbPath(), other);
    EXPECT_EQ(recorded()["host"], "node-b");
    EXPECT_CONTAINS(messageOf<IoError>([&] { Catalog c(dbPath()); }), "in use on host 'node-b'");
    EXPECT_FALSE(stdfs::exists(dbPath() + "-wal"));
    EXPECT_FALSE(stdfs::exists(dbPath() + "-shm"));
  }
  // Released: this host opens it again and records itself.
  {
    Catalog c(dbPath());
    EXPECT_EQ(recorded()["host"], me.host);
    // A record that is not one, found while the catalog is open, is named.
    std::ofstream(record) << "{\"host\": 7}";
    EXPECT_CONTAINS(messageOf<IoError>([&] { Catalog again(dbPath()); }), record + ": not a catalog host record");
  }
  // ... and rewritten by the next process that finds the catalog idle.
  Catalog c(dbPath());
  EXPECT_EQ(recorded()["host"], me.host);
}

TEST_F(CatalogTest, ShardsAreNumberedInIngestOrder) {
  Catalog c(dbPath());
  std::vector<ShardRecord> in;
  for (int i = 0; i < 5; ++i) {
    ShardRecord s = shard("h" + std::to_string(i), 10 * (i + 1), 100 + i);
    c.insertShard(s);
    EXPECT_EQ(s.seq, i + 1);
    in.push_back(s);
  }
  EXPECT_EQ(c.shardCount(), 5);

  const auto got = c.shardByHash("h2");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->seq, 3);
  EXPECT_EQ(got->file, "data/h2.h5");
  EXPECT_EQ(got->source, "h2-source.h5");
  EXPECT_EQ(got->rows, 30);
  EXPECT_EQ(got->bytes, 30000);
  EXPECT_EQ(got->profile, "{\"rows\": 30}");
  EXPECT_DOUBLE_EQ(got->ingestedAt, 102);
  EXPECT_FALSE(c.shardByHash("nope"));

  const NewDataStats all = c.shardsAfter(0);
  EXPECT_EQ(all.shards, 5);
  EXPECT_EQ(all.rows, 150);
  EXPECT_EQ(all.maxSeq, 5);
  const NewDataStats tail = c.shardsAfter(3);
  EXPECT_EQ(tail.shards, 2);
  EXPECT_EQ(tail.rows, 90);
  EXPECT_EQ(tail.maxSeq, 5);
  const NewDataStats none = c.shardsAfter(5);
  EXPECT_EQ(none.shards, 0);
  EXPECT_EQ(none.rows, 0);
  EXPECT_EQ(none.maxSeq, 0);

  const auto mid = c.shards(1, 4, true);
  ASSERT_EQ(mid.size(), 3u);
  EXPECT_EQ(mid[0].seq, 2);
  EXPECT_EQ(mid[2].seq, 4);
  EXPECT_EQ(mid[1].hash, "h2");
  EXPECT_EQ(mid[1].profile, "{\"rows\": 30}");
  const auto noProfile = c.shards(0, 5, false);
  ASSERT_EQ(noProfile.size(), 5u);
  for (const auto& s : noProfile) EXPECT_TRUE(s.profile.empty());
  EXPECT_TRUE(c.shards(5, 10, true).empty());
  EXPECT_TRUE(c.shards(3, 3, true).empty());

  const auto recent = c.recentShards(2);
  ASSERT_EQ(recent.size(), 2u);
  EXPECT_EQ(recent[0].seq, 5);
  EXPECT_EQ(recent[1].seq, 4);
  EXPECT_EQ(c.recentShards(100).size(), 5u);
}

TEST_F(CatalogTest, DuplicateShardHashIsRefused) {
  Catalog c(dbPath());
  ShardRecord a = shard("same", 1);
  c.insertShard(a);
  ShardRecord b = shard("same", 2);
  EXPECT_THROW(c.insertShard(b), IoError);
  EXPECT_EQ(c.shardCount(), 1);
}

TEST_F(CatalogTest, QuarantineInsertIsIdempotentOnFile) {
  Catalog c(dbPath());
  c.insertQuarantine({0, "quarantine/a.h5.1234", "a.h5", "hdf5", "not HDF5", 5});
  EXPECT_EQ(CatalogTestPeer::db(c).changes(), 1);
  c.insertQuarantine({0, "quarantine/a.h5.1234", "a.h5", "spec", "other reason", 6});
  EXPECT_EQ(CatalogTestPeer::db(c).changes(), 0);
  c.insertQuarantine({0, "quarantine/b.h5.5678", "b.h5", "labels", "bad label", 7});
  EXPECT_EQ(c.quarantineCount(), 2);
  const auto q = c.quarantined(10);
  ASSERT_EQ(q.size(), 2u);
  EXPECT_EQ(q[0].file, "quarantine/b.h5.5678");  // newest first
  EXPECT_EQ(q[1].file, "quarantine/a.h5.1234");
  EXPECT_EQ(q[1].rule, "hdf5");  // the first insert wins
  EXPECT_EQ(q[1].reason, "not HDF5");
  EXPECT_EQ(q[1].source, "a.h5");
  EXPECT_DOUBLE_EQ(q[1].at, 5);
  EXPECT_EQ(c.quarantined(1).size(), 1u);
}

TEST_F(CatalogTest, RunsAreInsertedUpdatedAndQueried) {
  Catalog c(dbPath());
  c.insertSnapshot({"snapA", 3, 3, 30, "{}"});
  EXPECT_EQ(c.nextRunId(), "r000001");
  RunRecord a = run(c, "snapA", RunState::kPending, 10);
  c.insertRun(a);
  EXPECT_EQ(a.id, "r000001");
  EXPECT_EQ(a.seq, 1);
  EXPECT_EQ(c.nextRunId(), "r000002");
  RunRecord b = run(c, "snapA", RunState::kPending, 20);
  c.insertRun(b);
  EXPECT_EQ(b.id, "r000002");
  EXPECT_EQ(c.nextRunId(), "r000003");
  EXPECT_EQ(c.lastRunCreatedAt().value_or(-1), 20);

  EXPECT_EQ(c.activeRunCount(), 0);
  a.state = RunState::kSubmitted;
  a.attempt = 1;
  a.execId = "4242";
  a.updatedAt = 11;
  c.updateRun(a);
  EXPECT_EQ(c.activeRunCount(), 1);
  b.state = RunState::kRunning;
  c.updateRun(b);
  EXPECT_EQ(c.activeRunCount(), 2);

  a.state = RunState::kFailed;
  a.exitCode = 3;
  a.message = "boom";
  a.finishedAt = 15;
  a.cancelRequested = true;
  c.updateRun(a);
  EXPECT_EQ(c.activeRunCount(), 1);

  const auto got = c.run("r000001");
  ASSERT_TRUE(got);
  EXPECT_EQ(got->state, RunState::kFailed);
  EXPECT_EQ(got->attempt, 1);
  EXPECT_EQ(got->execId, "4242");
  ASSERT_TRUE(got->exitCode);
  EXPECT_EQ(*got->exitCode, 3);
  EXPECT_EQ(got->message, "boom");
  ASSERT_TRUE(got->finishedAt);
  EXPECT_DOUBLE_EQ(*got->finishedAt, 15);
  EXPECT_TRUE(got->cancelRequested);
  EXPECT_EQ(got->trigger, "new_data");
  EXPECT_EQ(got->snapshotId, "snapA");
  EXPECT_EQ(got->maxAttempts, 3);
  EXPECT_DOUBLE_EQ(got->createdAt, 10);
  EXPECT_DOUBLE_EQ(got->updatedAt, 11);
  EXPECT_FALSE(c.run("r000009"));

  const auto failed = c.runsInStates({RunState::kFailed});
  ASSERT_EQ(failed.size(), 1u);
  EXPECT_EQ(failed[0].id, "r000001");
  const auto both = c.runsInStates({RunState::kRunning, RunState::kFailed});
  ASSERT_EQ(both.size(), 2u);
  EXPECT_EQ(both[0].id, "r000001");  // in seq order
  EXPECT_EQ(both[1].id, "r000002");
  EXPECT_TRUE(c.runsInStates({RunState::kSucceeded}).empty());

  const auto recent = c.recentRuns(1);
  ASSERT_EQ(recent.size(), 1u);
  EXPECT_EQ(recent[0].id, "r000002");

  RunRecord ghost = run(c, "snapA", RunState::kPending);
  ghost.id = "r999999";
  EXPECT_THROW(c.updateRun(ghost), InternalError);
}

TEST_F(CatalogTest, RunNeedsAKnownSnapshot) {
  Catalog c(dbPath());
  RunRecord r = run(c, "no-such-snapshot", RunState::kPending);
  EXPECT_THROW(c.insertRun(r), IoError);
}

TEST_F(CatalogTest, SnapshotsAreIdempotentAndFoundByMaxSeq) {
  Catalog c(dbPath());
  c.insertSnapshot({"s2", 2, 2, 20, "{\"p\":2}"});
  c.insertSnapshot({"s5", 5, 5, 50, "{\"p\":5}"});
  c.insertSnapshot({"s2", 99, 99, 99, "changed"});  // ignored
  const auto s2 = c.snapshot("s2");
  ASSERT_TRUE(s2);
  EXPECT_EQ(s2->maxSeq, 2);
  EXPECT_EQ(s2->rows, 20);
  EXPECT_EQ(s2->profile, "{\"p\":2}");
  EXPECT_FALSE(c.snapshot("s9"));
  EXPECT_FALSE(c.snapshotAtOrBefore(1));
  EXPECT_EQ(c.snapshotAtOrBefore(4)->id, "s2");
  EXPECT_EQ(c.snapshotAtOrBefore(5)->id, "s5");
  EXPECT_EQ(c.snapshotAtOrBefore(100)->id, "s5");
}

TEST_F(CatalogTest, CoveredSeqIsTheNewestRunsSnapshotOrTheChampions) {
  Catalog c(dbPath());
  c.insertSnapshot({"s3", 3, 3, 30, "{}"});
  c.insertSnapshot({"s5", 5, 5, 50, "{}"});
  c.insertSnapshot({"s7", 7, 7, 70, "{}"});
  c.insertSnapshot({"s9", 9, 9, 90, "{}"});
  EXPECT_EQ(c.coveredSeq(""), 0);
  EXPECT_EQ(c.coveredSeq("s3"), 3);  // the champion's snapshot

  // Every run covers its snapshot, whatever its state: a failed or cancelled run is not started
  // again for the same data.
  for (RunState st : {RunState::kPending, RunState::kSubmitted, RunState::kRunning, RunState::kSucceeded,
                      RunState::kFailed, RunState::kCancelled, RunState::kRejected, RunState::kPromoted}) {
    SCOPED_TRACE(runStateName(st));
    RunRecord r = run(c, "s5", st);
    c.insertRun(r);
    EXPECT_EQ(c.coveredSeq(""), 5);
    EXPECT_EQ(c.coveredSeq("s3"), 5);
    EXPECT_EQ(c.coveredSeq("s7"), 7);  // a champion beyond the runs
  }
  // Runs are created in ingest order, so a newer run's snapshot is never smaller: the newest
  // run decides.
  RunRecord ok = run(c, "s7", RunState::kSucceeded);
  c.insertRun(ok);
  EXPECT_EQ(c.coveredSeq(""), 7);
  RunRecord newerFailed = run(c, "s9", RunState::kFailed);
  c.insertRun(newerFailed);
  EXPECT_EQ(c.coveredSeq(""), 9);
}

TEST_F(CatalogTest, EventsNewestFirstWithAndWithoutKind) {
  Catalog c(dbPath());
  c.addEvent(1, "ingest", "h1", {{"rows", 8}});
  c.addEvent(2, "quarantine", "h2", {{"rule", "hdf5"}});
  c.addEvent(3, "ingest", "h3", {{"rows", 4}});
  c.addEvent(4, "run", "r000001", json::object());
  const auto all = c.events(10);
  ASSERT_EQ(all.size(), 4u);
  EXPECT_EQ(all[0].kind, "run");
  EXPECT_EQ(all[3].subject, "h1");
  EXPECT_DOUBLE_EQ(all[3].at, 1);
  EXPECT_EQ(json::parse(all[3].detail).at("rows"), 8);
  EXPECT_EQ(c.events(2).size(), 2u);
  const auto ingests = c.events(10, "ingest");
  ASSERT_EQ(ingests.size(), 2u);
  EXPECT_EQ(ingests[0].subject, "h3");
  EXPECT_EQ(ingests[1].subject, "h1");
  EXPECT_EQ(c.events(1, "ingest").size(), 1u);
  EXPECT_TRUE(c.events(10, "trigger").empty());
}

TEST_F(CatalogTest, TriggerStateUpsertKeepsLastFiredAt) {
  Catalog c(dbPath());
  EXPECT_FALSE(c.lastFiredAt("new_data"));
  c.saveTriggerState({"new_data", 10, false, "{\"n\":1}", std::nullopt});
  EXPECT_FALSE(c.lastFiredAt("new_data"));
  c.saveTriggerState({"new_data", 20, true, "{\"n\":2}", 20.0});
  EXPECT_EQ(c.lastFiredAt("new_data").value_or(-1), 20);
  c.saveTriggerState({"new_data", 30, false, "{\"n\":3}", std::nullopt});
  EXPECT_EQ(c.lastFiredAt("new_data").value_or(-1), 20);
  c.saveTriggerState({"drift", 31, false, "{}", std::nullopt});

  const auto states = c.triggerStates();
  ASSERT_EQ(states.size(), 2u);
  EXPECT_EQ(states[0].name, "drift");  // by name
  EXPECT_FALSE(states[0].lastFiredAt);
  EXPECT_EQ(states[1].name, "new_data");
  EXPECT_DOUBLE_EQ(states[1].evaluatedAt, 30);
  EXPECT_FALSE(states[1].fired);
  EXPECT_EQ(states[1].detail, "{\"n\":3}");
  ASSERT_TRUE(states[1].lastFiredAt);
  EXPECT_DOUBLE_EQ(*states[1].lastFiredAt, 20);

  c.saveTriggerState({"new_data", 40, true, "{}", 40.0});
  EXPECT_EQ(c.lastFiredAt("new_data").value_or(-1), 40);
}

TEST_F(CatalogTest, RequestsOpenAndClose) {
  Catalog c(dbPath());
  c.addRequest("trigger", "manual", 1);
  c.addRequest("cancel", "r000001", 2);
  c.addRequest("trigger", "drift", 3);
  auto open = c.openRequests("trigger");
  ASSERT_EQ(open.size(), 2u);
  EXPECT_EQ(open[0].arg, "manual");
  EXPECT_EQ(open[0].kind, "trigger");
  EXPECT_DOUBLE_EQ(open[0].at, 1);
  EXPECT_EQ(open[1].arg, "drift");
  c.closeRequest(open[0].id, 5);
  open = c.openRequests("trigger");
  ASSERT_EQ(open.size(), 1u);
  EXPECT_EQ(open[0].arg, "drift");
  ASSERT_EQ(c.openRequests("cancel").size(), 1u);
  EXPECT_EQ(c.openRequests("cancel")[0].arg, "r000001");
  EXPECT_TRUE(c.openRequests("other").empty());
}

TEST_F(CatalogTest, MetaGetAndSet) {
  Catalog c(dbPath());
  EXPECT_FALSE(c.meta("ticks"));
  c.setMeta("ticks", "1");
  EXPECT_EQ(c.meta("ticks").value_or(""), "1");
  c.setMeta("ticks", "2");
  EXPECT_EQ(c.meta("ticks").value_or(""), "2");
  c.setMeta("champion", "");
  ASSERT_TRUE(c.meta("champion"));
  EXPECT_EQ(*c.meta("champion"), "");
}

TEST_F(CatalogTest, TransactionRollsBackWhenTheBodyThrows) {
  Catalog c(dbPath());
  ShardRecord kept = shard("kept", 1);
  c.insertShard(kept);
  EXPECT_THROW(c.transaction([&] {
                 ShardRecord s = shard("lost", 2);
                 c.insertShard(s);
                 c.setMeta("k", "v");
                 c.addEvent(1, "ingest", "lost", json::object());
                 throw std::runtime_error("body failed");
               }),
               std::runtime_error);
  EXPECT_EQ(c.shardCount(), 1);
  EXPECT_FALSE(c.shardByHash("lost"));
  EXPECT_FALSE(c.meta("k"));
  EXPECT_TRUE(c.events(10).empty());

  // The connection is usable afterwards, and a body that succeeds commits.
  c.transaction([&] {
    ShardRecord s = shard("committed", 3);
    c.insertShard(s);
  });
  EXPECT_TRUE(c.shardByHash("committed"));
  Catalog other(dbPath());
  EXPECT_EQ(other.shardCount(), 2);
}

TEST_F(CatalogTest, AnotherConnectionSeesCommittedWrites) {
  Catalog writer(dbPath());
  Catalog reader(dbPath());
  ShardRecord s = shard("shared", 4);
  writer.insertShard(s);
  EXPECT_TRUE(reader.shardByHash("shared"));
}

// When COMMIT itself fails (here a deferred foreign key; in production SQLITE_FULL or
// SQLITE_IOERR on a full disk), the transaction is rolled back and the connection stays usable;
// otherwise a daemon would stay wedged after one failed tick.
TEST_F(CatalogTest, ConnectionIsUsableAfterAFailedCommit) {
  // A deferred constraint makes COMMIT (not the body) fail. The transaction must not be left
  // open: the failed writes are gone and later transactions work.
  Catalog c(dbPath());
  EXPECT_THROW(c.transaction([&] {
                 CatalogTestPeer::db(c).exec("PRAGMA defer_foreign_keys=ON");
                 RunRecord r = run(c, "no-such-snapshot", RunState::kPending);
                 c.insertRun(r);
               }),
               IoError);
  EXPECT_NO_THROW(c.transaction([&] { c.setMeta("after", "1"); }));
  EXPECT_TRUE(c.runsInStates({RunState::kPending}).empty());
  Catalog other(dbPath());
  EXPECT_EQ(other.meta("after").value_or(""), "1");
}

// user_version is read again under the migration's write lock, so two connections opening a new
// catalog together do not both run migration 1.
TEST_F(CatalogTest, TwoConnectionsCreatingTheCatalogAtOnceBothSucceed) {
  // Two processes (`sched run` and `sched status`, say) open a new catalog at the same moment:
  // both read user_version 0 before either has migrated. A third connection holds the write
  // lock so that both have read the version before either may migrate.
  Database holder(dbPath());
  holder.exec("BEGIN IMMEDIATE");
  std::string errors[2];
  std::thread openers[2];
  for (int i = 0; i < 2; ++i) {
    openers[i] = std::thread([this, i, &errors] {
      try {
        Catalog c(dbPath());
        if (c.schemaVersion() != kCatalogSchemaVersion) errors[i] = "schema version " + std::to_string(c.schemaVersion());
      } catch (const std::exception& e) {
        errors[i] = e.what();
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  holder.exec("ROLLBACK");
  for (auto& t : openers) t.join();
  EXPECT_EQ(errors[0], "");
  EXPECT_EQ(errors[1], "");
  Catalog c(dbPath());
  EXPECT_EQ(c.schemaVersion(), kCatalogSchemaVersion);
}

// The catalog, the JSON output and the metrics spell each state by this name: changing one
// changes the on-disk format.
TEST(CatalogStateTest, EveryStateReadsBackFromItsName) {
  const std::vector<std::pair<RunState, std::string>> names{
      {RunState::kPending, "pending"},       {RunState::kSubmitted, "submitted"}, {RunState::kRunning, "running"},
      {RunState::kSucceeded, "succeeded"},   {RunState::kFailed, "failed"},       {RunState::kPreempted, "preempted"},
      {RunState::kCancelled, "cancelled"},   {RunState::kValidating, "validating"},
      {RunState::kPromoted, "promoted"},     {RunState::kRejected, "rejected"}};
  ASSERT_EQ(names.size(), std::size(kAllRunStates));
  for (size_t i = 0; i < names.size(); ++i) {
    const auto& [st, name] = names[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(kAllRunStates[i], st);
    EXPECT_EQ(runStateName(st), name);
    EXPECT_EQ(parseRunState(name), st);
  }
  for (const char* bad : {"", "Pending", "pending ", "in flight", "?", "3"}) {
    SCOPED_TRACE(bad);
    EXPECT_FALSE(parseRunState(bad));
  }
}

TEST_F(CatalogTest, EveryStateIsStoredByNameAndReadBack) {
  Catalog c(dbPath());
  c.insertSnapshot({"snapA", 3, 3, 30, "{}"});
  for (RunState st : kAllRunStates) {
    SCOPED_TRACE(runStateName(st));
    RunRecord inserted = run(c, "snapA", st);
    c.insertRun(inserted);
    Statement raw = CatalogTestPeer::db(c).prepare("SELECT state FROM runs WHERE id = ?");
    raw.bind(1, inserted.id);
    ASSERT_TRUE(raw.step());
    EXPECT_EQ(raw.text(0), runStateName(st));
    ASSERT_TRUE(c.run(inserted.id));
    EXPECT_EQ(c.run(inserted.id)->state, st);

    RunRecord updated = run(c, "snapA", RunState::kPending);
    c.insertRun(updated);
    updated.state = st;
    c.updateRun(updated);
    ASSERT_TRUE(c.run(updated.id));
    EXPECT_EQ(c.run(updated.id)->state, st);
    const auto found = c.runsInStates({st});
    ASSERT_EQ(found.size(), 2u);
    EXPECT_EQ(found[0].id, inserted.id);
    EXPECT_EQ(found[1].id, updated.id);
  }
  const auto counts = c.runCountsByState();
  ASSERT_EQ(counts.size(), std::size(kAllRunStates));
  for (RunState st : kAllRunStates) EXPECT_EQ(counts.at(runStateName(st)), 2) << runStateName(st);
}

// A state this build does not know (one of a newer Perennial, or a catalog edited by hand) is
// refused where a run is read, naming the run and the text; the counts still show it.
TEST_F(CatalogTest, AnUnknownStoredStateIsRefusedByName) {
  Catalog c(dbPath());
  c.insertSnapshot({"snapA", 3, 3, 30, "{}"});
  RunRecord r = run(c, "snapA", RunState::kPending);
  c.insertRun(r);
  CatalogTestPeer::db(c).prepare("UPDATE runs SET state = 'paused' WHERE id = ?").bind(1, r.id).run();
  EXPECT_EQ(c.runCountsByState().at("paused"), 1);
  const std::string message = messageOf<DataError>([&] { c.run(r.id); });
  EXPECT_CONTAINS(message, dbPath());  // the file
  EXPECT_CONTAINS(message, r.id);
  EXPECT_CONTAINS(message, std::string("'paused'"));
  EXPECT_CONTAINS(message, std::string("pending, submitted, running"));
  EXPECT_THROW(c.recentRuns(10), DataError);
}

TEST(CatalogStateTest, ActiveAndTerminalStates) {
  const std::set<RunState> active{RunState::kSubmitted, RunState::kRunning};
  const std::set<RunState> terminal{RunState::kSucceeded, RunState::kFailed, RunState::kCancelled,
                                    RunState::kPromoted, RunState::kRejected};
  for (RunState st : kAllRunStates) {
    SCOPED_TRACE(runStateName(st));
    EXPECT_EQ(isActiveState(st), active.count(st) == 1);
    EXPECT_EQ(isTerminalState(st), terminal.count(st) == 1);
  }
}

// A state prints as its name (gtest's failure messages, logs).
TEST(CatalogStateTest, PrintsByName) {
  std::ostringstream out;
  out << RunState::kValidating << " " << RunState::kPending;
  EXPECT_EQ(out.str(), "validating pending");
}

// activeRunCount and coveredSeq select their states by RunState, not by names spelled in SQL.
TEST_F(CatalogTest, CountsAndCoverageSeeEveryState) {
  Catalog c(dbPath());
  c.insertSnapshot({"snapA", 3, 3, 30, "{}"});
  for (RunState st : kAllRunStates) {
    RunRecord r = run(c, "snapA", st);
    c.insertRun(r);
  }
  EXPECT_EQ(c.activeRunCount(), 2);  // submitted, running
  EXPECT_EQ(c.coveredSeq(""), 3);    // every run covers its snapshot, whatever its state
}

// ---------------------------------------------------------------------------------------------
// Ingest

class IngestTest : public TempDirTest {
 protected:
  void SetUp() override {
    TempDirTest::SetUp();
    root_ = path("root");
    ensureRootLayout(root_);
    open();
  }

  // (Re)opens the catalog and the ingester, as a restarted scheduler would.
  void open(double settleS = 0) {
    ingester_.reset();
    catalog_.reset();
    catalog_ = std::make_unique<Catalog>(root_ + "/catalog.db");
    ingester_ = std::make_unique<Ingester>(*catalog_, root_, DatasetRules{}, settleS, clock_);
  }

  std::string incoming(const std::string& name) const { return root_ + "/incoming/" + name; }
  std::vector<std::string> files(const std::string& sub) const { return listDir(root_ + "/" + sub); }
  static std::string hashOf(const std::string& file) { return toHex(sha256File(file)); }
  // A quarantined file's name: its content's hash and its arrival name's, never the name itself.
  static std::string quarantineName(const std::string& hash, const std::string& name) {
    return hash.substr(0, 32) + "-" + toHex(sha256(name.data(), name.size())).substr(0, 16);
  }

  // Files in quarantine/: the moved files and the reason files, apart.
  void quarantineFiles(std::vector<std::string>& moved, std::vector<std::string>& reasons) const {
    moved.clear();
    reasons.clear();
    for (const auto& f : files("quarantine")) (endsWith(f, ".reason.json") ? reasons : moved).push_back(f);
  }

  FakeClock clock_{5000};
  std::string root_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Ingester> ingester_;
};

TEST_F(IngestTest, RootLayoutIsCreated) {
  for (const char* d : {"incoming", "data", "quarantine", "runs", "tmp"}) {
    EXPECT_TRUE(stdfs::is_directory(root_ + "/" + d)) << d;
  }
  ensureRootLayout(root_);  // idempotent
}

TEST_F(IngestTest, ValidShardIsIngested) {
  writeValidShard(incoming("batch-001.h5"));
  const std::string hash = hashOf(incoming("batch-001.h5"));
  const auto bytes = static_cast<int64_t>(stdfs::file_size(incoming("batch-001.h5")));
  EXPECT_EQ(ingester_->pending(), std::vector<std::string>{"batch-001.h5"});

  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].accepted) << out[0].rule << ": " << out[0].reason;
  EXPECT_EQ(out[0].source, "batch-001.h5");
  EXPECT_EQ(out[0].hash, hash);
  EXPECT_EQ(out[0].rows, kRows);
  EXPECT_TRUE(out[0].rule.empty());

  EXPECT_TRUE(files("incoming").empty());
  EXPECT_TRUE(files("quarantine").empty());
  EXPECT_EQ(files("data"), std::vector<std::string>{hash + ".h5"});
  const std::string stored = root_ + "/data/" + hash + ".h5";
  struct stat st {};
  ASSERT_EQ(::stat(stored.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  EXPECT_EQ(st.st_nlink, 1u);
  EXPECT_EQ(hashOf(stored), hash);

  const auto rec = catalog_->shardByHash(hash);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->seq, 1);
  EXPECT_EQ(rec->file, "data/" + hash + ".h5");
  EXPECT_EQ(rec->source, "batch-001.h5");
  EXPECT_EQ(rec->rows, kRows);
  EXPECT_EQ(rec->bytes, bytes);
  EXPECT_DOUBLE_EQ(rec->ingestedAt, 5000);
  const Profile p = Profile::fromJson(rec->profile, "catalog");
  EXPECT_EQ(p.rows, kRows);
  ASSERT_EQ(p.labels.size(), 10u);
  int64_t labelTotal = 0;
  for (int64_t n : p.labels) labelTotal += n;
  EXPECT_EQ(labelTotal, kRows);
  int64_t valueTotal = 0;
  for (int64_t n : p.hist.at("value")) valueTotal += n;
  EXPECT_EQ(valueTotal, kRows * kElems);

  const auto events = catalog_->events(10, "ingest");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].subject, hash);
  EXPECT_DOUBLE_EQ(events[0].at, 5000);
  const json detail = json::parse(events[0].detail);
  EXPECT_EQ(detail.at("source"), "batch-001.h5");
  EXPECT_EQ(detail.at("seq"), 1);
  EXPECT_EQ(detail.at("rows"), kRows);
  EXPECT_EQ(detail.at("bytes"), bytes);
  EXPECT_EQ(catalog_->quarantineCount(), 0);

  // Nothing is left to do.
  EXPECT_TRUE(ingester_->pending().empty());
  EXPECT_TRUE(ingester_->ingestPending().empty());
}

TEST_F(IngestTest, ShardsArrivingTogetherKeepTheirNameOrder) {
  writeValidShard(incoming("c.h5"), 3);
  writeValidShard(incoming("a.h5"), 1);
  writeValidShard(incoming("b.h5"), 2);
  EXPECT_EQ(ingester_->pending(), (std::vector<std::string>{"a.h5", "b.h5", "c.h5"}));
  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 3u);
  const auto shards = catalog_->shards(0, 100, false);
  ASSERT_EQ(shards.size(), 3u);
  EXPECT_EQ(shards[0].source, "a.h5");
  EXPECT_EQ(shards[1].source, "b.h5");
  EXPECT_EQ(shards[2].source, "c.h5");
  EXPECT_EQ(files("data").size(), 3u);
  EXPECT_TRUE(files("incoming").empty());
}

TEST_F(IngestTest, BadFileIsQuarantinedWithItsReason) {
  writeText(incoming("junk.h5"), "definitely not HDF5\n");
  const std::string hash = hashOf(incoming("junk.h5"));
  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].accepted);
  EXPECT_EQ(out[0].source, "junk.h5");
  EXPECT_EQ(out[0].rule, "hdf5");
  EXPECT_EQ(out[0].hash, hash);
  EXPECT_CONTAINS(out[0].reason, std::string("not an HDF5 file"));

  EXPECT_TRUE(files("incoming").empty());
  EXPECT_TRUE(files("data").empty());
  std::vector<std::string> moved, reasons;
  quarantineFiles(moved, reasons);
  ASSERT_EQ(moved.size(), 1u);
  ASSERT_EQ(reasons.size(), 1u);
  EXPECT_EQ(moved[0], quarantineName(hash, "junk.h5"));
  EXPECT_EQ(reasons[0], moved[0] + ".reason.json");
  EXPECT_EQ(readText(root_ + "/quarantine/" + moved[0]), "definitely not HDF5\n");

  const json why = json::parse(readText(root_ + "/quarantine/" + reasons[0]));
  EXPECT_EQ(why.at("rule"), "hdf5");
  EXPECT_EQ(why.at("source"), "junk.h5");
  EXPECT_EQ(why.at("sha256"), hash);
  EXPECT_CONTAINS(why.at("reason").get<std::string>(), std::string("not an HDF5 file"));
  EXPECT_DOUBLE_EQ(why.at("at").get<double>(), 5000);

  ASSERT_EQ(catalog_->quarantineCount(), 1);
  const auto q = catalog_->quarantined(10);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].file, "quarantine/" + moved[0]);
  EXPECT_EQ(q[0].source, "junk.h5");
  EXPECT_EQ(q[0].rule, "hdf5");
  EXPECT_EQ(q[0].reason, out[0].reason);
  EXPECT_EQ(catalog_->shardCount(), 0);
  const auto events = catalog_->events(10, "quarantine");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(json::parse(events[0].detail).at("rule"), "hdf5");
}

TEST_F(IngestTest, SpecViolationIsQuarantinedUnderItsRule) {
  // A valid HDF5 shard of another dataset.
  auto spec = fashionSpec();
  spec.name = "mnist";
  std::vector<uint8_t> images(static_cast<size_t>(kRows * kElems), 1);
  std::vector<int64_t> labels(static_cast<size_t>(kRows), 0);
  data::writeShard(incoming("other.h5"), spec, images.data(), labels.data(), kRows);
  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].accepted);
  EXPECT_EQ(out[0].rule, "spec");
  std::vector<std::string> moved, reasons;
  quarantineFiles(moved, reasons);
  ASSERT_EQ(reasons.size(), 1u);
  EXPECT_EQ(json::parse(readText(root_ + "/quarantine/" + reasons[0])).at("rule"), "spec");
  EXPECT_EQ(catalog_->quarantined(1).at(0).rule, "spec");
}

TEST_F(IngestTest, SameBytesUnderAnotherNameAreADuplicate) {
  writeValidShard(incoming("first.h5"));
  const std::string hash = hashOf(incoming("first.h5"));
  ASSERT_TRUE(ingester_->ingestPending().at(0).accepted);

  writeValidShard(incoming("second.h5"));  // the writer is deterministic: same bytes
  ASSERT_EQ(hashOf(incoming("second.h5")), hash);
  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].accepted);
  EXPECT_EQ(out[0].rule, "duplicate");
  EXPECT_EQ(out[0].hash, hash);
  EXPECT_CONTAINS(out[0].reason, std::string("first.h5"));
  EXPECT_CONTAINS(out[0].reason, std::string("second.h5"));

  EXPECT_EQ(catalog_->shardCount(), 1);
  EXPECT_EQ(files("data"), std::vector<std::string>{hash + ".h5"});
  EXPECT_TRUE(files("incoming").empty());
  std::vector<std::string> moved, reasons;
  quarantineFiles(moved, reasons);
  EXPECT_EQ(moved, std::vector<std::string>{quarantineName(hash, "second.h5")});
  ASSERT_EQ(reasons.size(), 1u);
  EXPECT_EQ(json::parse(readText(root_ + "/quarantine/" + reasons[0])).at("rule"), "duplicate");
  ASSERT_EQ(catalog_->quarantineCount(), 1);
  EXPECT_EQ(catalog_->quarantined(1).at(0).rule, "duplicate");
}

TEST_F(IngestTest, DuplicateUnderTheSameNameIsADuplicateToo) {
  writeValidShard(incoming("same.h5"));
  ASSERT_TRUE(ingester_->ingestPending().at(0).accepted);
  writeValidShard(incoming("same.h5"));
  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].rule, "duplicate");
  EXPECT_EQ(catalog_->shardCount(), 1);
  EXPECT_EQ(files("data").size(), 1u);
}

TEST_F(IngestTest, InProgressNamesAreNotPending) {
  writeValidShard(incoming(".hidden.h5"), 1);
  writeValidShard(incoming("upload.h5.tmp"), 2);
  writeValidShard(incoming("upload.h5.part"), 3);
  writeValidShard(incoming("ready.h5"), 4);
  stdfs::create_directory(incoming("subdir"));
  EXPECT_EQ(ingester_->pending(), std::vector<std::string>{"ready.h5"});
  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].source, "ready.h5");
  EXPECT_EQ(files("incoming"), (std::vector<std::string>{".hidden.h5", "subdir", "upload.h5.part", "upload.h5.tmp"}));
  EXPECT_EQ(catalog_->quarantineCount(), 0);

  // Renamed when complete: picked up.
  stdfs::rename(incoming("upload.h5.part"), incoming("upload.h5"));
  EXPECT_EQ(ingester_->pending(), std::vector<std::string>{"upload.h5"});
}

TEST_F(IngestTest, SettleTimeSkipsRecentlyModifiedFiles) {
  FakeClock realClock(realNow());
  Ingester settled(*catalog_, root_, DatasetRules{}, 60, realClock);
  writeValidShard(incoming("fresh.h5"), 1);
  writeValidShard(incoming("old.h5"), 2);
  setMtime(incoming("old.h5"), 3600);
  EXPECT_EQ(settled.pending(), std::vector<std::string>{"old.h5"});
  const auto out = settled.ingestPending();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].source, "old.h5");
  EXPECT_TRUE(out[0].accepted);
  EXPECT_EQ(files("incoming"), std::vector<std::string>{"fresh.h5"});

  // Once the settle time has passed, the file is picked up.
  realClock.advance(120);
  EXPECT_EQ(settled.pending(), std::vector<std::string>{"fresh.h5"});
  ASSERT_TRUE(settled.ingestPending().at(0).accepted);
  EXPECT_EQ(catalog_->shardCount(), 2);

  // Without a settle time even a file from the future is taken at once.
  writeValidShard(incoming("now.h5"), 3);
  EXPECT_EQ(ingester_->pending(), std::vector<std::string>{"now.h5"});
}

TEST_F(IngestTest, StageFilesCopiesIntoIncoming) {
  const std::string src = path("src");
  stdfs::create_directories(src);
  writeValidShard(src + "/one.h5", 1);
  writeValidShard(src + "/two.h5", 2);
  const auto names = stageFiles(root_, {src + "/one.h5", src + "/two.h5"});
  EXPECT_EQ(names, (std::vector<std::string>{"one.h5", "two.h5"}));
  EXPECT_EQ(files("incoming"), (std::vector<std::string>{"one.h5", "two.h5"}));
  EXPECT_EQ(hashOf(incoming("one.h5")), hashOf(src + "/one.h5"));
  EXPECT_EQ(hashOf(incoming("two.h5")), hashOf(src + "/two.h5"));
  EXPECT_TRUE(stdfs::exists(src + "/one.h5"));  // copied, not moved

  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].accepted);
  EXPECT_TRUE(out[1].accepted);
}

TEST_F(IngestTest, StageFilesRefusesInProgressNames) {
  const std::string src = path("src");
  stdfs::create_directories(src);
  for (const char* name : {".hidden.h5", "x.h5.tmp", "x.h5.part"}) {
    SCOPED_TRACE(name);
    writeValidShard(src + "/" + name);
    try {
      stageFiles(root_, {src + "/" + name});
      ADD_FAILURE() << "staged";
    } catch (const DataError& e) {
      EXPECT_CONTAINS(std::string(e.what()), std::string(name));
    }
  }
  EXPECT_TRUE(files("incoming").empty());
}

TEST_F(IngestTest, StageFilesRefusesMissingFilesAndNameClashes) {
  EXPECT_THROW(stageFiles(root_, {path("missing.h5")}), DataError);
  const std::string src = path("src");
  stdfs::create_directories(src);
  writeValidShard(src + "/one.h5", 1);
  stageFiles(root_, {src + "/one.h5"});
  EXPECT_THROW(stageFiles(root_, {src + "/one.h5"}), DataError);
  EXPECT_EQ(files("incoming"), std::vector<std::string>{"one.h5"});
}

// ---------------------------------------------------------------------------------------------
// Crash recovery: the hook throws at one step (the scheduler "dies"); a new catalog connection
// and ingester on the same root finish the job.

struct Crash : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class IngestCrashTest : public IngestTest, public ::testing::WithParamInterface<const char*> {};

TEST_P(IngestCrashTest, RestartFinishesTheIngestOnce) {
  const std::string point = GetParam();
  // "bad.h5" sorts first, so a quarantine crash happens before the good shard is looked at, and a
  // crash in the good shard's ingest after the bad file was quarantined.
  writeText(incoming("bad.h5"), "not a shard at all");
  writeValidShard(incoming("good.h5"));
  const std::string goodHash = hashOf(incoming("good.h5"));
  const std::string badHash = hashOf(incoming("bad.h5"));

  int hits = 0;
  {
    fault::ScopedHandler faults([&](const std::string& step) {
      if (step == point) {
        ++hits;
        throw Crash("crash at " + step);
      }
    });
    EXPECT_THROW(ingester_->ingestPending(), Crash);
  }
  EXPECT_EQ(hits, 1);

  // Restart: a new catalog object and ingester (the old ones are gone with the process).
  open();
  const auto out = ingester_->ingestPending();
  for (const auto& o : out) {
    EXPECT_NE(o.rule, "duplicate") << o.source << ": " << o.reason;
    if (o.source == "good.h5") {
      EXPECT_TRUE(o.accepted) << o.rule << ": " << o.reason;
      EXPECT_EQ(o.hash, goodHash);
      EXPECT_EQ(o.rows, kRows);
    } else {
      EXPECT_EQ(o.source, "bad.h5");
      EXPECT_FALSE(o.accepted);
      EXPECT_EQ(o.rule, "hdf5");
    }
  }
  // A second pass finds nothing to do.
  EXPECT_TRUE(ingester_->ingestPending().empty());

  // The good shard: in the catalog once, one data file per catalog shard, one ingest event.
  EXPECT_EQ(catalog_->shardCount(), 1);
  const auto rec = catalog_->shardByHash(goodHash);
  ASSERT_TRUE(rec);
  EXPECT_EQ(rec->source, "good.h5");
  EXPECT_EQ(rec->rows, kRows);
  EXPECT_EQ(files("data"), std::vector<std::string>{goodHash + ".h5"});
  struct stat st {};
  ASSERT_EQ(::stat((root_ + "/data/" + goodHash + ".h5").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0444u);
  EXPECT_EQ(st.st_nlink, 1u);  // the incoming/ link is gone
  EXPECT_EQ(hashOf(root_ + "/data/" + goodHash + ".h5"), goodHash);
  EXPECT_EQ(catalog_->events(100, "ingest").size(), 1u);

  EXPECT_TRUE(files("incoming").empty());

  // The bad file: quarantined once (one row, one file, one reason file, one event).
  ASSERT_EQ(catalog_->quarantineCount(), 1);
  const auto q = catalog_->quarantined(10).at(0);
  EXPECT_EQ(q.rule, "hdf5");
  EXPECT_EQ(q.source, "bad.h5");
  std::vector<std::string> moved, reasons;
  quarantineFiles(moved, reasons);
  EXPECT_EQ(moved, std::vector<std::string>{quarantineName(badHash, "bad.h5")});
  EXPECT_EQ(reasons, std::vector<std::string>{quarantineName(badHash, "bad.h5") + ".reason.json"});
  EXPECT_EQ(q.file, "quarantine/" + moved.at(0));
  EXPECT_EQ(readText(root_ + "/quarantine/" + moved.at(0)), "not a shard at all");
  EXPECT_EQ(json::parse(readText(root_ + "/quarantine/" + reasons.at(0))).at("rule"), "hdf5");
  EXPECT_EQ(catalog_->events(100, "quarantine").size(), 1u);
}

TEST_P(IngestCrashTest, CrashRepeatedAtTheSameStepStillConverges) {
  // The scheduler dies at the same step twice before a clean restart.
  const std::string point = GetParam();
  writeText(incoming("bad.h5"), "garbage");
  writeValidShard(incoming("good.h5"));
  const std::string goodHash = hashOf(incoming("good.h5"));
  for (int crash = 0; crash < 2; ++crash) {
    // On the second try a step already done may be skipped, so the point need not be reached again.
    try {
      fault::ScopedHandler faults([&](const std::string& step) {
        if (step == point) throw Crash("crash at " + step);
      });
      ingester_->ingestPending();
    } catch (const Crash&) {
    }
    open();
  }
  for (const auto& o : ingester_->ingestPending()) EXPECT_NE(o.rule, "duplicate") << o.source;
  EXPECT_EQ(catalog_->shardCount(), 1);
  EXPECT_TRUE(catalog_->shardByHash(goodHash));
  EXPECT_EQ(files("data"), std::vector<std::string>{goodHash + ".h5"});
  EXPECT_TRUE(files("incoming").empty());
  EXPECT_EQ(catalog_->quarantineCount(), 1);
  std::vector<std::string> moved, reasons;
  quarantineFiles(moved, reasons);
  EXPECT_EQ(moved.size(), 1u);
  EXPECT_EQ(reasons.size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(IngestCrashAtEveryStep, IngestCrashTest,
                         ::testing::Values("validated", "linked", "recorded", "quarantine-recorded",
                                           "quarantine-moved"),
                         [](const ::testing::TestParamInfo<const char*>& p) {
                           std::string n = p.param;
                           std::replace(n.begin(), n.end(), '-', '_');
                           return n;
                         });

TEST_F(IngestTest, CrashAfterLinkingThenADuplicateArrives) {
  // A crash after the link leaves data/<hash>.h5 without a catalog row; the restart must record
  // the original, and a later copy of the same bytes is a duplicate of it.
  writeValidShard(incoming("orig.h5"));
  const std::string hash = hashOf(incoming("orig.h5"));
  {
    fault::ScopedHandler faults([](const std::string& step) {
      if (step == "linked") throw Crash(step);
    });
    EXPECT_THROW(ingester_->ingestPending(), Crash);
  }
  EXPECT_EQ(files("data"), std::vector<std::string>{hash + ".h5"});
  open();
  ASSERT_TRUE(ingester_->ingestPending().at(0).accepted);
  EXPECT_EQ(catalog_->shardByHash(hash)->source, "orig.h5");
  writeValidShard(incoming("copy.h5"));
  EXPECT_EQ(ingester_->ingestPending().at(0).rule, "duplicate");
  EXPECT_EQ(catalog_->shardCount(), 1);
  EXPECT_EQ(files("data").size(), 1u);
}

// Chaos seed 500929: a copy of a shard was stored (data/<hash>.h5) and the scheduler died before
// its catalog row; the original then arrived. The original's ingest used that data file, and
// the copy, retried, was taken for "our own interrupted ingest" (the same inode) and deleted:
// neither ingested nor quarantined. Each must be accounted for once.
TEST_F(IngestTest, CopyStoredThenCrashThenOriginalArrives) {
  writeValidShard(incoming("b-copy.h5"));
  const std::string hash = hashOf(incoming("b-copy.h5"));
  {
    fault::ScopedHandler faults([](const std::string& step) {
      if (step == "linked") throw Crash(step);
    });
    EXPECT_THROW(ingester_->ingestPending(), Crash);
  }
  open();
  writeValidShard(incoming("a-orig.h5"));
  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].accepted) << out[0].reason;
  EXPECT_EQ(out[1].rule, "duplicate");
  EXPECT_EQ(catalog_->shardByHash(hash)->source, "a-orig.h5");
  EXPECT_EQ(catalog_->quarantined(10).at(0).source, "b-copy.h5");
  EXPECT_TRUE(files("incoming").empty());
}

// What is stored is the scheduler's own read-only copy: not the producer's inode, so writing to
// the producer's file afterwards changes nothing that is trained on.
TEST_F(IngestTest, StoredShardIsAPrivateReadOnlyCopy) {
  writeValidShard(incoming("s.h5"));
  ASSERT_EQ(::chmod(incoming("s.h5").c_str(), 0666), 0);
  const std::string hash = hashOf(incoming("s.h5"));
  ASSERT_EQ(::link(incoming("s.h5").c_str(), path("kept-by-producer").c_str()), 0);
  ASSERT_TRUE(ingester_->ingestPending().at(0).accepted);
  struct stat src {}, dst {};
  ASSERT_EQ(::stat(path("kept-by-producer").c_str(), &src), 0);
  ASSERT_EQ(::lstat((root_ + "/data/" + hash + ".h5").c_str(), &dst), 0);
  EXPECT_TRUE(S_ISREG(dst.st_mode));
  EXPECT_NE(src.st_ino, dst.st_ino);
  EXPECT_EQ(dst.st_mode & 0777, 0444u);
  EXPECT_EQ(dst.st_nlink, 1u);
  EXPECT_EQ(src.st_mode & 0777, 0666u);  // the producer's file is never chmodded
  writeText(path("kept-by-producer"), "overwritten by the producer");
  EXPECT_EQ(hashOf(root_ + "/data/" + hash + ".h5"), hash);
  EXPECT_TRUE(files("tmp").empty());
}

// Anything but a regular file is quarantined without being opened or followed: a symbolic link
// (to another file, or to /dev/zero) and a FIFO, which would block a read forever.
TEST_F(IngestTest, SymlinksAndFifosAreQuarantinedUnread) {
  writeValidShard(path("secret.h5"));
  ASSERT_EQ(::chmod(path("secret.h5").c_str(), 0600), 0);
  ASSERT_EQ(::symlink(path("secret.h5").c_str(), incoming("link.h5").c_str()), 0);
  ASSERT_EQ(::symlink("/dev/zero", incoming("zero.h5").c_str()), 0);
  ASSERT_EQ(::mkfifo(incoming("fifo.h5").c_str(), 0660), 0);
  writeValidShard(incoming("valid.h5"), 4);
  const auto start = std::chrono::steady_clock::now();
  const auto out = ingester_->ingestPending();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  ASSERT_EQ(out.size(), 4u);
  for (const auto& o : out) {
    if (o.source == "valid.h5") {
      EXPECT_TRUE(o.accepted) << o.reason;
    } else {
      EXPECT_EQ(o.rule, "type") << o.source << ": " << o.reason;
    }
  }
  EXPECT_EQ(catalog_->shardCount(), 1);
  EXPECT_EQ(catalog_->quarantineCount(), 3);
  EXPECT_TRUE(files("incoming").empty());
  for (const auto& f : files("data")) {
    struct stat st {};
    ASSERT_EQ(::lstat((root_ + "/data/" + f).c_str(), &st), 0);
    EXPECT_TRUE(S_ISREG(st.st_mode)) << f;
  }
  struct stat st {};
  ASSERT_EQ(::stat(path("secret.h5").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

// The size limit is checked on the descriptor before a byte is read or hashed.
TEST_F(IngestTest, OversizedFileIsRefusedBeforeItIsRead) {
  {
    std::ofstream f(incoming("huge.h5"));
  }
  ASSERT_EQ(::truncate(incoming("huge.h5").c_str(), int64_t{64} << 30), 0);  // sparse: no disk used
  const auto start = std::chrono::steady_clock::now();
  const auto out = ingester_->ingestPending();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].rule, "size");
  EXPECT_EQ(out[0].hash, "");
  EXPECT_CONTAINS(out[0].reason, std::string("not read"));
  EXPECT_TRUE(files("incoming").empty());
}

// Chunked datasets whose chunks were never written read as zeros: a few kilobytes must not pass
// for 100,000 rows.
TEST_F(IngestTest, ChunkedShardWithUnwrittenChunksIsRefused) {
  writeValidShard(incoming("sparse.h5"));
  {
    h5::Handle file(H5Fopen(incoming("sparse.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    ASSERT_GE(file.get(), 0);
    for (const char* name : {"images", "labels"}) ASSERT_GE(H5Ldelete(file, name, H5P_DEFAULT), 0);
    hsize_t idims[3] = {100000, 28, 28}, ichunk[3] = {1000, 28, 28}, ldims[1] = {100000}, lchunk[1] = {1000};
    h5::Handle ispace(H5Screate_simple(3, idims, nullptr)), lspace(H5Screate_simple(1, ldims, nullptr));
    h5::Handle ipl(H5Pcreate(H5P_DATASET_CREATE)), lpl(H5Pcreate(H5P_DATASET_CREATE));
    H5Pset_chunk(ipl, 3, ichunk);
    H5Pset_chunk(lpl, 1, lchunk);
    h5::Handle a(H5Dcreate2(file, "images", H5T_STD_U8LE, ispace, H5P_DEFAULT, ipl, H5P_DEFAULT));
    h5::Handle b(H5Dcreate2(file, "labels", H5T_STD_I64LE, lspace, H5P_DEFAULT, lpl, H5P_DEFAULT));
    ASSERT_GE(a.get(), 0);
    ASSERT_GE(b.get(), 0);
  }
  ASSERT_LT(stdfs::file_size(incoming("sparse.h5")), 100000u);
  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_FALSE(out[0].accepted);
  EXPECT_EQ(out[0].rule, "hdf5");
  EXPECT_CONTAINS(out[0].reason, std::string("chunks stored"));
}

// Names are other people's bytes: invalid UTF-8, 250 bytes, escape sequences. None may stop the
// pass, break the catalog's JSON or reach a terminal raw; a valid file after them is ingested.
TEST_F(IngestTest, HostileNamesAffectOnlyTheirOwnFile) {
  const std::string bad = "bad\xff\xfe.h5";
  const std::string longName = std::string(247, 'n') + ".h5";
  const std::string escape = "evil\x1b[31mred\nINFO fake.h5";
  writeText(incoming(bad), "not hdf5");
  writeText(incoming(longName), "not hdf5 either");
  writeValidShard(incoming(escape), 1);
  writeValidShard(incoming("zz-valid.h5"), 2);
  const auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(catalog_->shardCount(), 2);
  EXPECT_EQ(catalog_->quarantineCount(), 2);
  EXPECT_TRUE(files("incoming").empty());
  int escaped = 0;
  for (const auto& f : files("quarantine")) {
    const std::string stem = f.substr(0, f.find('.'));
    EXPECT_EQ(stem.size(), 49u) << f;  // named by hash, never by the name
    for (char ch : stem) EXPECT_TRUE(std::isxdigit(static_cast<unsigned char>(ch)) || ch == '-') << f;
    if (endsWith(f, ".reason.json")) {
      const json why = json::parse(readText(root_ + "/quarantine/" + f));  // valid UTF-8 JSON
      if (why["source_printable"] == "bad\\xff\\xfe.h5") ++escaped;
    }
  }
  EXPECT_EQ(escaped, 1);
  for (const auto& e : catalog_->events(100)) EXPECT_FALSE(json::parse(e.detail, nullptr, false).is_discarded());
}

// An error on one file (here a full disk, injected) leaves that file for the next pass; the
// files after it are ingested in the same pass.
TEST_F(IngestTest, AnErrorOnOneFileLeavesItForTheNextPass) {
  writeValidShard(incoming("a.h5"), 1);
  writeValidShard(incoming("b.h5"), 2);
  int calls = 0;
  fault::ScopedHandler faults([&](const std::string& step) {
    if (step == "validated" && calls++ == 0) throw IoError("injected: no space left on device");
  });
  auto out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].skipped);
  EXPECT_CONTAINS(out[0].reason, std::string("no space left"));
  EXPECT_TRUE(out[1].accepted);
  EXPECT_EQ(files("incoming"), std::vector<std::string>{"a.h5"});
  out = ingester_->ingestPending();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_TRUE(out[0].accepted);
  EXPECT_EQ(catalog_->shardCount(), 2);
  EXPECT_TRUE(files("tmp").empty());
}

// `data add` writes only files it created itself: a symbolic link planted at the old temporary
// name is not followed, and a name already waiting is not replaced.
TEST_F(IngestTest, StageFilesFollowsNothingPlantedAndReplacesNothing) {
  writeValidShard(path("shard.h5"));
  writeText(path("victim"), "the caller's other file");
  ASSERT_EQ(::symlink(path("victim").c_str(), incoming(".shard.h5.tmp").c_str()), 0);
  EXPECT_EQ(stageFiles(root_, {path("shard.h5")}), std::vector<std::string>{"shard.h5"});
  EXPECT_EQ(readText(path("victim")), "the caller's other file");
  EXPECT_EQ(hashOf(incoming("shard.h5")), hashOf(path("shard.h5")));
  EXPECT_THROW(stageFiles(root_, {path("shard.h5")}), DataError);
  EXPECT_EQ(hashOf(incoming("shard.h5")), hashOf(path("shard.h5")));
}

// printable(): nothing that moves a terminal's cursor or starts a log line gets through, valid
// UTF-8 passes, and distinct names stay distinct.
TEST(Printable, EscapesControlsAndInvalidUtf8Only) {
  EXPECT_EQ(printable("plain-name_1.h5"), "plain-name_1.h5");
  EXPECT_EQ(printable("caf\xc3\xa9.h5"), "caf\xc3\xa9.h5");
  EXPECT_EQ(printable("a\x1b[31mb\nc\td\x7f"), "a\\x1b[31mb\\x0ac\\x09d\\x7f");
  EXPECT_EQ(printable("bad\xff\xfe"), "bad\\xff\\xfe");
  EXPECT_EQ(printable("\xc2\x9b" "2J"), "\\xc2\\x9b2J");   // C1 CSI
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");  // a UTF-16 surrogate
  EXPECT_EQ(printable("\xe2\x82"), "\\xe2\\x82");           // cut short
  EXPECT_NE(printable("a\\x41"), printable("aA"));
  EXPECT_EQ(printable("a\\x41"), "a\\\\x41");
  EXPECT_EQ(dumpJson(json("x\xff")), "\"x\xef\xbf\xbd\"");
}

// The catalog and the root's folders are not writable by others (SECURITY.md).
TEST_F(CatalogTest, CatalogAndRootFoldersAreNotWritableByOthers) {
  const mode_t old = ::umask(022);
  {
    Catalog c(dbPath());
    c.transaction([&] { c.setMeta("k", "v"); });
  }
  struct stat st {};
  ASSERT_EQ(::stat(dbPath().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
  ensureRootLayout(path("root"));
  ASSERT_EQ(::stat(path("root/data").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0750u);
  ASSERT_EQ(::stat(path("root/incoming").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0770u);
  ::umask(old);
}

}  // namespace
}  // namespace perennial::sched
