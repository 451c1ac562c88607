// The scheduler's run handling and triggers with a fake clock, a fake executor and a fake
// evaluator: no process is started here (tests/sched/*.sh run the real thing).
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <future>
#include <thread>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/ostream_sink.h>

#include "common/error.h"
#include "common/fault.h"
#include "common/fs_util.h"
#include "common/log.h"
#include "common/read_file.h"
#include "dataset/snapshot.h"
#include "tests/sched/catalog_test_peer.h"
#include "scheduler/daemon.h"
#include "scheduler/metrics.h"
#include "scheduler/scheduler.h"
#include "tests/sched/shard_fixtures.h"
#include "dataset/shard_dataset.h"

namespace perennial::sched {
namespace {
namespace stdfs = std::filesystem;
using nlohmann::json;
using data::snapshotId;

class FakeExecutor : public Executor {
 public:
  struct Job {
    AttemptState state = AttemptState::kRunning;
    int exitCode = 0;
    bool cancelled = false;
  };
  std::string name() const override { return "fake"; }
  std::string submit(const AttemptSpec& spec) override {
    const std::string k = key(spec.runId, spec.attempt);
    if (jobs.count(k) && jobs[k].state == AttemptState::kRunning) throw IoError(k + " already running");
    jobs[k] = Job{};
    ++submits;
    specs[spec.runId] = spec;
    return "job-" + k;
  }
  AttemptStatus poll(const AttemptSpec& spec, const std::string&) override {
    auto it = jobs.find(key(spec.runId, spec.attempt));
    AttemptStatus s;
    if (it == jobs.end()) return s;
    s.state = it->second.state;
    s.exitCode = it->second.exitCode;
    s.execId = "job-" + key(spec.runId, spec.attempt);
    return s;
  }
  void cancel(const AttemptSpec& spec, const std::string&) override {
    jobs[key(spec.runId, spec.attempt)].cancelled = true;
    ++cancels;
  }
  // Ends an attempt; a successful one leaves the trainer's result.json behind.
  void finish(const std::string& runId, int64_t attempt, int exitCode, double accuracy = 0.9) {
    Job& j = jobs.at(key(runId, attempt));
    j.state = AttemptState::kExited;
    j.exitCode = exitCode;
    if (exitCode == 0) {
      const std::string dir = specs.at(runId).runDir + "/train";
      stdfs::create_directories(dir);
      fs::writeFileAtomic(dir + "/result.json", json{{"test_accuracy", accuracy}, {"test_loss", 0.3},
                                                     {"param_sha256", "p-" + runId}, {"world_size", 2},
                                                     {"perennial_version", "test"}}.dump());
      fs::writeFileAtomic(dir + "/model.h5", "weights of " + runId);
    }
  }
  void lose(const std::string& runId, int64_t attempt) { jobs.at(key(runId, attempt)).state = AttemptState::kLost; }
  static std::string key(const std::string& id, int64_t attempt) { return id + "/" + std::to_string(attempt); }

  std::map<std::string, Job> jobs;
  std::map<std::string, AttemptSpec> specs;
  int submits = 0;
  int cancels = 0;
};

class FakeEvaluator : public Evaluator {
 public:
  double accuracy(const std::string& model, const std::vector<std::string>& shards) override {
    ++calls;
    lastModel = model;
    lastShards = shards;
    return value;
  }
  double value = 0.9;
  int calls = 0;
  std::string lastModel;
  std::vector<std::string> lastShards;
};

class FakeGatekeeper : public Gatekeeper {
 public:
  GateOutcome validate(const std::string& candidate, const std::string& champion,
                       const std::vector<std::string>& holdout, const std::string& verdictPath) override {
    ++calls;
    lastCandidate = candidate;
    lastChampion = champion;
    lastHoldout = holdout;
    GateOutcome g;
    g.exitCode = exitCode;
    if (exitCode > 1) g.error = "could not evaluate";
    if (noVerdict) {
      g.verdictProblem = "there is none";
      return g;
    }
    Verdict v;
    v.passed = exitCode == 0;
    if (exitCode == 1) {
      for (const char* failed : {"change.accuracy", "slices"}) v.checks.push_back({failed, false, 0.0, 0.0, ""});
    }
    v.candidate.path = candidate;
    v.candidate.metrics.accuracy = 0.8;
    v.candidate.metrics.loss = 0.5;
    v.candidate.metrics.samples = 100;
    g.verdict = v;
    fs::writeFileAtomic(verdictPath, v.toJson().dump());
    return g;
  }
  int exitCode = 0;
  bool noVerdict = false;  // exits without writing one (it failed before judging)
  int calls = 0;
  std::string lastCandidate, lastChampion;
  std::vector<std::string> lastHoldout;
};

struct Crash : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root = stdfs::temp_directory_path() / ("perennial-sched-" + std::to_string(::getpid()) + "-" +
                                           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    stdfs::remove_all(root);
    stdfs::create_directories(root + "/holdout");
    ensureRootLayout(root);
    std::ofstream(root + "/train.cfg") << "[model]\narch = mlp\nhidden = 16\n[train]\nepochs = 1\n";
    config.source = root + "/sched.cfg";
    config.trainConfig = root + "/train.cfg";
    config.holdout = root + "/holdout";
    config.onDemand = true;
    config.maxAttempts = 3;
    catalog = std::make_unique<Catalog>(root + "/catalog.db");
  }
  void TearDown() override {
    scheduler.reset();
    catalog.reset();
    stdfs::remove_all(root);
  }

  Scheduler& sched() {
    if (!scheduler) {
      scheduler = std::make_unique<Scheduler>(config, root, *catalog, executor, clock, &evaluator,
                                              withGate ? &gatekeeper : nullptr);
    }
    return *scheduler;
  }
  // A restart: new catalog connection and scheduler object on the same root.
  void restart() {
    scheduler.reset();
    catalog = std::make_unique<Catalog>(root + "/catalog.db");
  }

  // Drops a shard of ROWS rows into incoming/. LABEL_LO..LABEL_HI and the pixel range set the
  // distribution (for drift).
  void drop(const std::string& name, int64_t rows, int labelLo = 0, int labelHi = 9, int pixLo = 0, int pixHi = 255) {
    const data::DatasetSpec spec = testing::fashionSpec();
    std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>()(name)));
    std::vector<uint8_t> px(static_cast<size_t>(rows * 784));
    std::vector<int64_t> labels(static_cast<size_t>(rows));
    std::uniform_int_distribution<int> p(pixLo, pixHi), l(labelLo, labelHi);
    for (auto& v : px) v = static_cast<uint8_t>(p(rng));
    for (auto& v : labels) v = l(rng);
    data::writeShard(root + "/tmp/" + name, spec, px.data(), labels.data(), rows);
    stdfs::rename(root + "/tmp/" + name, root + "/incoming/" + name);
  }

  RunRecord run(const std::string& id) { return *catalog->run(id); }
  json triggerDetail(const std::string& name) {
    for (const auto& t : catalog->triggerStates()) {
      if (t.name == name) return json::parse(t.detail);
    }
    return nullptr;
  }
  void request() { catalog->transaction([&] { catalog->addRequest("trigger", "test", clock.now()); }); }

  std::string root;
  SchedConfig config;
  FakeClock clock;
  FakeExecutor executor;
  FakeEvaluator evaluator;
  FakeGatekeeper gatekeeper;
  bool withGate = false;
  std::unique_ptr<Catalog> catalog;
  std::unique_ptr<Scheduler> scheduler;
};

TEST_F(SchedulerTest, NewDataFiresAtTheThresholdAndOnlyOncePerData) {
  config.newDataRows = 20;
  drop("a.h5", 10);
  TickReport r = sched().tick();
  ASSERT_EQ(r.ingested.size(), 1u);
  EXPECT_TRUE(r.created.empty());
  EXPECT_EQ(triggerDetail("new_data")["values"]["new_rows"], 10);
  EXPECT_EQ(triggerDetail("new_data")["thresholds"]["new_data_rows"], 20);

  drop("b.h5", 10);
  r = sched().tick();
  ASSERT_EQ(r.created.size(), 1u);
  const std::string id = r.created[0];
  EXPECT_EQ(run(id).state, RunState::kRunning);
  EXPECT_EQ(run(id).trigger, "new_data");
  EXPECT_EQ(run(id).attempt, 1);
  EXPECT_EQ(executor.submits, 1);
  // The run's directory holds its resolved config and the snapshot's shards.
  EXPECT_TRUE(stdfs::exists(root + "/runs/" + id + "/config.cfg"));
  EXPECT_EQ(std::distance(stdfs::directory_iterator(root + "/runs/" + id + "/data"), stdfs::directory_iterator()), 2);
  json snap = json::parse(std::ifstream(root + "/runs/" + id + "/snapshot.json"));
  EXPECT_EQ(snap["rows"], 20);
  EXPECT_EQ(snap["id"], run(id).snapshotId);

  // The data are covered by the live run: no second run.
  r = sched().tick();
  EXPECT_TRUE(r.created.empty());
  EXPECT_EQ(triggerDetail("new_data")["values"]["new_rows"], 0);

  executor.finish(id, 1, 0, 0.85);
  r = sched().tick();
  EXPECT_EQ(run(id).state, RunState::kSucceeded);
  ASSERT_TRUE(run(id).result);
  EXPECT_EQ(run(id).result->test.accuracy, 0.85);
  EXPECT_EQ(catalog->meta("champion").value_or(""), id);
  EXPECT_TRUE(r.created.empty());
  EXPECT_EQ(catalog->events(100, "trigger").size(), 1u);  // one firing, one event
}

TEST_F(SchedulerTest, CooldownAndConcurrencyHoldAFiringTrigger) {
  config.cooldownS = 100;
  config.maxConcurrent = 1;
  drop("a.h5", 5);
  request();
  TickReport r = sched().tick();
  ASSERT_EQ(r.created.size(), 1u);
  const std::string first = r.created[0];

  request();
  r = sched().tick();
  EXPECT_TRUE(r.created.empty());
  EXPECT_NE(triggerDetail("on_demand")["held"].get<std::string>().find("max_concurrent"), std::string::npos);

  executor.finish(first, 1, 0);
  clock.advance(10);
  r = sched().tick();
  EXPECT_TRUE(r.created.empty());
  EXPECT_NE(triggerDetail("on_demand")["held"].get<std::string>().find("cooldown"), std::string::npos);

  clock.advance(91);
  r = sched().tick();
  ASSERT_EQ(r.created.size(), 1u);  // the request was kept while held
  EXPECT_TRUE(catalog->openRequests("trigger").empty());
}

TEST_F(SchedulerTest, NothingStartsWithoutData) {
  request();
  TickReport r = sched().tick();
  EXPECT_TRUE(r.created.empty());
  EXPECT_EQ(triggerDetail("on_demand")["held"], "no data ingested yet");
}

TEST_F(SchedulerTest, ScheduleFiresEveryInterval) {
  config.onDemand = false;
  config.intervalS = 100;
  drop("a.h5", 5);
  EXPECT_TRUE(sched().tick().created.empty());
  clock.advance(99);
  EXPECT_TRUE(sched().tick().created.empty());
  clock.advance(1);
  TickReport r = sched().tick();
  ASSERT_EQ(r.created.size(), 1u);
  EXPECT_EQ(run(r.created[0]).trigger, "schedule");
  executor.finish(r.created[0], 1, 0);
  clock.advance(50);
  EXPECT_TRUE(sched().tick().created.empty());
  clock.advance(50);
  EXPECT_EQ(sched().tick().created.size(), 1u);
}

TEST_F(SchedulerTest, DriftComparesNewDataWithTheChampionsTrainingData) {
  config.driftPsi = 0.2;
  config.driftMinRows = 40;
  drop("base1.h5", 50, 0, 4, 0, 100);
  drop("base2.h5", 50, 0, 4, 0, 100);
  request();
  TickReport r = sched().tick();
  ASSERT_EQ(r.created.size(), 1u);
  executor.finish(r.created[0], 1, 0);
  sched().tick();
  ASSERT_TRUE(catalog->meta("champion"));
  EXPECT_EQ(triggerDetail("drift")["reason"], "too few new rows to measure (0)");

  // Same distribution: measured, below the threshold.
  drop("same.h5", 60, 0, 4, 0, 100);
  r = sched().tick();
  EXPECT_TRUE(r.created.empty());
  const double low = triggerDetail("drift")["values"]["psi"]["max"];
  EXPECT_LT(low, 0.2);

  // Each new measurement is an event (for the report's drift history); the same data, once.
  EXPECT_EQ(catalog->events(10, "measurement").size(), 1u);
  sched().tick();
  EXPECT_EQ(catalog->events(10, "measurement").size(), 1u);

  // Other classes and brighter images: fires, and the event records values and thresholds.
  drop("shifted.h5", 200, 5, 9, 150, 255);
  r = sched().tick();
  ASSERT_EQ(r.created.size(), 1u);
  EXPECT_EQ(run(r.created[0]).trigger, "drift");
  auto events = catalog->events(1, "trigger");
  ASSERT_EQ(events.size(), 1u);
  json e = json::parse(events[0].detail);
  EXPECT_GE(e["values"]["psi"]["max"].get<double>(), 0.2);
  EXPECT_GE(e["values"]["psi"]["labels"].get<double>(), 0.2);
  EXPECT_EQ(e["thresholds"]["psi"], 0.2);
  EXPECT_EQ(e["run"], r.created[0]);
}

TEST_F(SchedulerTest, DecayMeasuresTheChampionOnNewDataOnce) {
  config.decayMargin = 0.05;
  config.decayMinRows = 10;
  drop("a.h5", 20);
  request();
  TickReport r = sched().tick();
  const std::string champ = r.created.at(0);
  executor.finish(champ, 1, 0, 0.90);
  sched().tick();

  evaluator.value = 0.88;  // 0.02 below validation: no decay
  drop("b.h5", 20);
  r = sched().tick();
  EXPECT_TRUE(r.created.empty());
  EXPECT_EQ(evaluator.calls, 1);
  EXPECT_EQ(evaluator.lastModel, root + "/runs/" + champ + "/train/model.h5");
  EXPECT_EQ(evaluator.lastShards.size(), 1u);
  sched().tick();
  EXPECT_EQ(evaluator.calls, 1) << "the same new data are not evaluated twice";
  restart();
  sched().tick();
  EXPECT_EQ(evaluator.calls, 1) << "nor after a restart (the measurement is in the catalog)";

  evaluator.value = 0.80;  // 0.10 below: decay
  drop("c.h5", 20);
  r = sched().tick();
  EXPECT_EQ(evaluator.calls, 2);
  ASSERT_EQ(r.created.size(), 1u);
  EXPECT_EQ(run(r.created[0]).trigger, "decay");
  json d = triggerDetail("decay");
  EXPECT_NEAR(d["values"]["drop"].get<double>(), 0.10, 1e-9);
  EXPECT_EQ(d["values"]["validation_accuracy"], 0.90);
}

TEST_F(SchedulerTest, FailedAndPreemptedAttemptsAreRetriedUpToTheLimit) {
  drop("a.h5", 5);
  request();
  const std::string id = sched().tick().created.at(0);
  executor.finish(id, 1, 1);
  sched().tick();  // failed -> pending -> submitted again
  EXPECT_EQ(run(id).attempt, 2);
  EXPECT_EQ(run(id).state, RunState::kRunning);
  executor.finish(id, 2, 75);  // preempted: retried
  sched().tick();
  EXPECT_EQ(run(id).attempt, 3);
  executor.finish(id, 3, 1);
  sched().tick();
  EXPECT_EQ(run(id).state, RunState::kFailed);
  EXPECT_NE(run(id).message.find("no attempts left"), std::string::npos);
  EXPECT_EQ(executor.submits, 3);
  // Every state change is an event.
  std::vector<std::string> states;
  for (const auto& e : catalog->events(100, "run")) states.insert(states.begin(), json::parse(e.detail).value("state", ""));
  EXPECT_EQ(states, (std::vector<std::string>{"pending", "submitted", "running", "failed", "pending", "submitted",
                                              "running", "preempted", "pending", "submitted", "running", "failed"}));
}

TEST_F(SchedulerTest, AFailedRunIsNotStartedAgainForTheSameData) {
  // Before, a run that failed all its attempts left its data uncovered, so the new-data trigger
  // created a fresh run on every tick, without end.
  config.newDataRows = 5;
  drop("a.h5", 5);
  const std::string id = sched().tick().created.at(0);
  for (int a = 1; a <= 3; ++a) {
    executor.finish(id, a, 1);
    sched().tick();
  }
  ASSERT_EQ(run(id).state, RunState::kFailed);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(sched().tick().created.empty()) << "tick " << i;
  drop("b.h5", 5);
  EXPECT_EQ(sched().tick().created.size(), 1u) << "new data start the next run";
}

// A pass whose transaction fails (a full disk: here a trigger that makes the catalog refuse the
// retry's "pending") changes nothing, and logs no state change it did not make.
TEST_F(SchedulerTest, AFailedTransactionLogsNoStateChange) {
  drop("a.h5", 5);
  request();
  const std::string id = sched().tick().created.at(0);
  executor.finish(id, 1, 1);
  CatalogTestPeer::db(*catalog).exec("CREATE TRIGGER full_disk BEFORE UPDATE OF state ON runs WHEN NEW.state = 'pending' "
                     "BEGIN SELECT RAISE(ABORT, 'injected: database or disk is full'); END");
  std::ostringstream out;
  auto logger = log::get("sched");
  const auto sinks = logger->sinks();
  logger->sinks() = {std::make_shared<spdlog::sinks::ostream_sink_mt>(out)};
  EXPECT_THROW(sched().tick(), Error);
  logger->sinks() = sinks;
  EXPECT_EQ(out.str().find("->"), std::string::npos) << out.str();
  EXPECT_EQ(run(id).state, RunState::kRunning);
  EXPECT_EQ(run(id).attempt, 1);
  // The cause gone, the same pass goes through, and is logged.
  CatalogTestPeer::db(*catalog).exec("DROP TRIGGER full_disk");
  logger->sinks() = {std::make_shared<spdlog::sinks::ostream_sink_mt>(out)};
  sched().tick();
  logger->sinks() = sinks;
  EXPECT_NE(out.str().find("run " + id + " -> failed"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("run " + id + " -> pending"), std::string::npos) << out.str();
  EXPECT_EQ(run(id).attempt, 2);
}

TEST_F(SchedulerTest, ConfigurationErrorsAreNotRetried) {
  drop("a.h5", 5);
  request();
  const std::string id = sched().tick().created.at(0);
  executor.finish(id, 1, 2);
  sched().tick();
  EXPECT_EQ(run(id).state, RunState::kFailed);
  EXPECT_EQ(run(id).attempt, 1);
  EXPECT_NE(run(id).message.find("configuration error"), std::string::npos);
}

TEST_F(SchedulerTest, LostAttemptIsRetried) {
  drop("a.h5", 5);
  request();
  const std::string id = sched().tick().created.at(0);
  executor.lose(id, 1);
  sched().tick();
  EXPECT_EQ(run(id).attempt, 2);
  EXPECT_EQ(run(id).state, RunState::kRunning);
}

TEST_F(SchedulerTest, CancelPendingAndRunning) {
  config.maxConcurrent = 1;
  drop("a.h5", 5);
  request();
  const std::string running = sched().tick().created.at(0);
  catalog->transaction([&] { catalog->addRequest("cancel", running, clock.now()); });
  sched().tick();
  EXPECT_EQ(executor.cancels, 1);
  EXPECT_TRUE(run(running).cancelRequested);
  EXPECT_EQ(run(running).state, RunState::kRunning);
  executor.finish(running, 1, 75);  // the trainer checkpoints and stops on SIGTERM
  sched().tick();
  EXPECT_EQ(run(running).state, RunState::kCancelled);
  EXPECT_EQ(executor.submits, 1) << "a cancelled run is not retried";

  // A run that never started is cancelled at once.
  config.maxConcurrent = 1;
  request();
  clock.advance(1);
  const std::string second = sched().tick().created.at(0);
  executor.jobs.clear();  // pretend it is queued: re-create it as pending
  catalog->transaction([&] {
    RunRecord r = run(second);
    r.state = RunState::kPending;
    catalog->updateRun(r);
  });
  catalog->transaction([&] { catalog->addRequest("cancel", second, clock.now()); });
  TickReport report;
  sched().handleCancelRequests(report);
  EXPECT_EQ(run(second).state, RunState::kCancelled);
  // Unknown runs and finished runs: the request is closed and recorded, nothing else happens.
  catalog->transaction([&] { catalog->addRequest("cancel", "r999999", clock.now()); });
  sched().handleCancelRequests(report);
  EXPECT_TRUE(catalog->openRequests("cancel").empty());
}

// A crash between recording "submitted" and starting the process: the restarted scheduler
// starts it (once); a crash after starting it: the restarted scheduler adopts it.
TEST_F(SchedulerTest, RestartNeverSubmitsTwice) {
  for (const std::string point : {"materialized", "submitted-recorded", "spawned", "run-created"}) {
    SCOPED_TRACE(point);
    TearDown();
    SetUp();
    executor = FakeExecutor{};
    drop("a.h5", 5);
    request();
    {
      fault::ScopedHandler faults([&](const std::string& s) {
        if (s == point) throw Crash(s);
      });
      EXPECT_THROW(sched().tick(), Crash);
    }
    restart();
    sched().tick();
    sched().tick();
    auto runs = catalog->recentRuns(10);
    ASSERT_EQ(runs.size(), 1u);
    EXPECT_EQ(runs[0].state, RunState::kRunning);
    EXPECT_EQ(runs[0].attempt, 1);
    EXPECT_EQ(executor.submits, 1);
  }
}

TEST_F(SchedulerTest, CrashAfterAnAttemptEndsIsHandledOnce) {
  drop("a.h5", 5);
  request();
  const std::string id = sched().tick().created.at(0);
  executor.finish(id, 1, 1);
  {
    fault::ScopedHandler faults([](const std::string& s) {
      if (s == "attempt-ended") throw Crash(s);
    });
    EXPECT_THROW(sched().tick(), Crash);
  }
  EXPECT_EQ(run(id).attempt, 1);
  restart();
  sched().tick();
  EXPECT_EQ(run(id).attempt, 2);
  EXPECT_EQ(executor.submits, 2);
}

TEST_F(SchedulerTest, WarmStartFromTheChampionIsInTheResolvedConfig) {
  config.warmStart = "champion";
  drop("a.h5", 5);
  request();
  const std::string first = sched().tick().created.at(0);
  EXPECT_EQ(run(first).warmStart, "");
  EXPECT_NE(run(first).config.find("init = \n"), std::string::npos);
  EXPECT_NE(run(first).config.find("train = " + root + "/runs/" + first + "/data\n"), std::string::npos);
  EXPECT_NE(run(first).config.find("test = " + root + "/holdout\n"), std::string::npos);
  executor.finish(first, 1, 0);
  sched().tick();
  request();
  const std::string second = sched().tick().created.at(0);
  EXPECT_EQ(run(second).warmStart, first);
  EXPECT_NE(run(second).config.find("init = " + root + "/runs/" + first + "/train/model.h5"), std::string::npos);
  EXPECT_EQ(executor.specs[second].trainArgs,
            (std::vector<std::string>{"train", "--config", root + "/runs/" + second + "/config.cfg", "--run-dir",
                                      root + "/runs/" + second + "/train", "--resume", "auto"}));
}

TEST_F(SchedulerTest, TorchScriptPathIsRelativeToTheTrainingConfig) {
  std::ofstream(root + "/train.cfg") << "[model]\narch = torchscript\npath = missing.pt\n";
  try {
    sched();
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("model.path: " + root + "/missing.pt: no such file"), std::string::npos) << e.what();
  }
  scheduler.reset();
  std::ofstream(root + "/missing.pt") << "x";
  std::ofstream(root + "/train.cfg") << "[model]\narch = torchscript\npath = missing.pt\n";
  drop("a.h5", 5);
  request();
  const std::string id = sched().tick().created.at(0);
  EXPECT_NE(run(id).config.find("path = " + root + "/missing.pt\n"), std::string::npos) << run(id).config;
}

TEST_F(SchedulerTest, BadTrainingConfigIsRefusedAtStart) {
  std::ofstream(root + "/train.cfg") << "[model]\narch = ../transformer\n";
  try {
    sched();
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("train.config"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("model.arch"), std::string::npos) << e.what();
  }
}

TEST_F(SchedulerTest, EveryTriggersLatestEvaluationIsRecorded) {
  config.intervalS = 1000;
  config.newDataRows = 100;
  config.driftPsi = 0.2;
  config.decayMargin = 0.1;
  drop("a.h5", 5);
  sched().tick();
  auto states = catalog->triggerStates();
  ASSERT_EQ(states.size(), 5u);
  for (const auto& t : states) {
    json d = json::parse(t.detail);
    EXPECT_TRUE(d.contains("reason") && d.contains("values") && d.contains("thresholds")) << t.name;
    EXPECT_EQ(t.evaluatedAt, clock.now());
  }
}

// With the gate: a run that trained is validated, then published and promoted, or rejected.
class GatedSchedulerTest : public SchedulerTest {
 protected:
  void SetUp() override {
    SchedulerTest::SetUp();
    withGate = true;
    config.modelName = "fashion-mnist";
  }
  // Creates a run on demand, lets it train successfully and ticks once (validation follows).
  std::string trainOne(const std::string& shard) {
    drop(shard, 5);
    request();
    clock.advance(1);
    const std::string id = sched().tick().created.at(0);
    executor.finish(id, 1, 0);
    sched().tick();
    return id;
  }
  Registry registry() { return Registry(root + "/registry"); }
};

TEST_F(GatedSchedulerTest, PassingRunsArePublishedAndPromoted) {
  const std::string first = trainOne("a.h5");
  EXPECT_EQ(run(first).state, RunState::kPromoted);
  EXPECT_EQ(run(first).message, "fashion-mnist:v1");
  EXPECT_EQ(gatekeeper.lastChampion, "") << "the first model has no champion to compare with";
  EXPECT_EQ(gatekeeper.lastCandidate, root + "/runs/" + first + "/train/model.h5");
  EXPECT_EQ(gatekeeper.lastHoldout, std::vector<std::string>{root + "/holdout"});
  EXPECT_EQ(catalog->meta("champion").value_or(""), first);
  EXPECT_EQ(registry().alias("fashion-mnist", "champion").value_or(""), "v1");
  VersionInfo v1 = registry().show("fashion-mnist", "v1");
  EXPECT_EQ(v1.lineage["run_id"], first);
  EXPECT_EQ(v1.lineage["shards"].size(), 1u);
  EXPECT_TRUE(v1.lineage["parent_version"].is_null());
  EXPECT_EQ(v1.lineage["param_sha256"], "p-" + first);
  EXPECT_EQ(v1.lineage["config_sha256"], run(first).configSha256);
  EXPECT_EQ(v1.metrics["accuracy"], 0.8);
  EXPECT_TRUE(registry().verify("fashion-mnist", "v1").empty());

  const std::string second = trainOne("b.h5");
  EXPECT_EQ(run(second).state, RunState::kPromoted);
  EXPECT_EQ(gatekeeper.lastChampion, root + "/registry/fashion-mnist/versions/v1/model.h5");
  VersionInfo v2 = registry().show("fashion-mnist", "champion");
  EXPECT_EQ(v2.version, "v2");
  EXPECT_EQ(v2.lineage["parent_version"], "v1");
  EXPECT_EQ(v2.lineage["shards"].size(), 2u);
  EXPECT_EQ(registry().alias("fashion-mnist", "previous").value_or(""), "v1");
}

TEST_F(GatedSchedulerTest, ARollbackInTheRegistryMovesTheSchedulersChampion) {
  const std::string first = trainOne("a.h5");
  const std::string second = trainOne("b.h5");
  EXPECT_EQ(catalog->meta("champion").value_or(""), second);
  registry().rollback("fashion-mnist", "test");
  sched().tick();
  EXPECT_EQ(catalog->meta("champion").value_or(""), first);
  EXPECT_EQ(catalog->meta("champion_version").value_or(""), "v1");
  EXPECT_EQ(json::parse(catalog->events(1, "champion").at(0).detail)["by"], "registry");
}

TEST_F(GatedSchedulerTest, RejectedRunLeavesTheChampion) {
  const std::string first = trainOne("a.h5");
  gatekeeper.exitCode = 1;
  const std::string second = trainOne("b.h5");
  EXPECT_EQ(run(second).state, RunState::kRejected);
  EXPECT_EQ(run(second).message, "failed checks: change.accuracy, slices");
  EXPECT_EQ(catalog->meta("champion").value_or(""), first);
  EXPECT_EQ(registry().versions("fashion-mnist"), std::vector<std::string>{"v1"});
  EXPECT_EQ(registry().alias("fashion-mnist", "champion").value_or(""), "v1");
  // A rejected run covers its data: the same data do not fire the new-data trigger again.
  EXPECT_EQ(catalog->coveredSeq(""), 2);
}

TEST_F(GatedSchedulerTest, AGateThatCannotJudgeFailsTheRun) {
  gatekeeper.exitCode = 2;
  const std::string id = trainOne("a.h5");
  EXPECT_EQ(run(id).state, RunState::kFailed);
  EXPECT_NE(run(id).message.find("could not judge"), std::string::npos) << run(id).message;
  EXPECT_FALSE(catalog->meta("champion"));
}

// `perennial validate` used to exit 1 on an error too (a full disk while writing the verdict),
// and the scheduler rejected a model nobody had judged.
TEST_F(GatedSchedulerTest, ExitOneWithoutARejectingVerdictIsNotARejection) {
  gatekeeper.exitCode = 1;
  gatekeeper.noVerdict = true;
  const std::string id = trainOne("a.h5");
  EXPECT_EQ(run(id).state, RunState::kFailed);
  EXPECT_NE(run(id).message.find("could not judge"), std::string::npos) << run(id).message;
  EXPECT_NE(run(id).message.find("verdict.json: there is none"), std::string::npos) << run(id).message;
  EXPECT_FALSE(catalog->meta("champion"));
  // Failed, not rejected: no rejection is recorded. Like every failed run it covers its data
  // (a gate that keeps failing must not start a run per tick); `sched trigger` retries it.
  EXPECT_NE(run(id).state, RunState::kRejected);
  EXPECT_EQ(catalog->coveredSeq(""), 1);
}

TEST_F(GatedSchedulerTest, NewestShardsJoinTheHoldout) {
  config.gate.newestShards = 1;
  trainOne("a.h5");
  ASSERT_EQ(gatekeeper.lastHoldout.size(), 2u);
  EXPECT_EQ(gatekeeper.lastHoldout[1], root + "/" + catalog->recentShards(1).at(0).file);
}

TEST_F(GatedSchedulerTest, CrashWhileValidatingOrPublishingIsFinishedOnce) {
  for (const std::string point : {"attempt-recorded", "validated-run", "publish-files-written", "publish-renamed",
                                  "published", "promoted"}) {
    SCOPED_TRACE(point);
    TearDown();
    SetUp();
    executor = FakeExecutor{};
    drop("a.h5", 5);
    request();
    const std::string id = sched().tick().created.at(0);
    executor.finish(id, 1, 0);
    {
      fault::ScopedHandler faults([&](const std::string& s) {
        if (s == point) throw Crash(s);
      });
      EXPECT_THROW(sched().tick(), Crash);
    }
    restart();
    sched().tick();
    EXPECT_EQ(run(id).state, RunState::kPromoted);
    EXPECT_EQ(registry().versions("fashion-mnist"), std::vector<std::string>{"v1"});
    EXPECT_EQ(registry().alias("fashion-mnist", "champion").value_or(""), "v1");
    EXPECT_TRUE(registry().verify("fashion-mnist", "v1").empty());
    EXPECT_EQ(catalog->events(100, "champion").size(), 1u);
  }
}

// Issue 17, point 11: a champion whose registry files cannot be read (here its lineage.json, then
// its model.h5) made every tick throw (or judged candidates against garbage). The rule
// (docs/scheduler.md, "A damaged champion"): reported once (event, catalog, metric), candidates
// wait unjudged in validating, every other part of the tick goes on, and once an operator rolls
// back (or repairs the files) the waiting candidate is judged against the champion now in place.
class DamagedChampionTest : public GatedSchedulerTest {
 protected:
  void check(const std::string& file) {
    const std::string first = trainOne("a.h5");
    const std::string second = trainOne("b.h5");
    ASSERT_EQ(run(second).state, RunState::kPromoted);
    const std::string v2 = root + "/registry/fashion-mnist/versions/v2/" + file;
    stdfs::permissions(v2, stdfs::perms::owner_write, stdfs::perm_options::add);
    std::ofstream(v2, std::ios::trunc | std::ios::binary) << "\xff\xfe{\"run_id\": \x1b[2J garbage";

    // A candidate trains and finishes: it is held, not judged, and the tick succeeds.
    drop("c.h5", 5);
    request();
    clock.advance(1);
    TickReport r;
    ASSERT_NO_THROW(r = sched().tick());
    ASSERT_EQ(r.created.size(), 1u);
    const std::string third = r.created[0];
    executor.finish(third, 1, 0);
    const int judged = gatekeeper.calls;
    ASSERT_NO_THROW(sched().tick());
    EXPECT_EQ(run(third).state, RunState::kValidating);
    EXPECT_NE(run(third).message.find("held: the champion fashion-mnist:v2 cannot be read"), std::string::npos)
        << run(third).message;
    EXPECT_NE(run(third).message.find(file), std::string::npos) << run(third).message;
    EXPECT_EQ(gatekeeper.calls, judged) << "a candidate was judged against a champion that cannot be read";
    EXPECT_EQ(registry().versions("fashion-mnist"), (std::vector<std::string>{"v1", "v2"}));
    EXPECT_EQ(registry().alias("fashion-mnist", "champion").value_or(""), "v2");

    // Reported: one event, the catalog (sched status) and the metric.
    auto damaged = catalog->events(10, "champion_damaged");
    ASSERT_EQ(damaged.size(), 1u);
    const json detail = json::parse(damaged[0].detail);
    EXPECT_EQ(detail["version"], "v2");
    ASSERT_FALSE(detail["problems"].empty());
    EXPECT_NE(detail["problems"][0].get<std::string>().find(file), std::string::npos) << detail.dump();
    EXPECT_EQ(detail["problems"][0].get<std::string>().find('\x1b'), std::string::npos) << "escaped for terminals";
    EXPECT_FALSE(catalog->meta("champion_damaged").value_or("").empty());
    TickStats stats;
    EXPECT_NE(renderMetrics(*catalog, stats).find("\nperennial_champion_damaged 1\n"), std::string::npos);

    // The loop goes on: later ticks succeed without reporting again, data are ingested, a later
    // trigger fires and its run is started.
    for (int i = 0; i < 3; ++i) {
      clock.advance(1);
      ASSERT_NO_THROW(sched().tick());
    }
    EXPECT_EQ(catalog->events(10, "champion_damaged").size(), 1u) << "reported once, not on every tick";
    EXPECT_EQ(run(third).state, RunState::kValidating);
    drop("d.h5", 5);
    request();
    clock.advance(1);
    ASSERT_NO_THROW(r = sched().tick());
    EXPECT_EQ(r.ingested.size(), 1u);
    ASSERT_EQ(r.created.size(), 1u) << "a trigger no longer fires";
    const std::string fourth = r.created[0];
    EXPECT_EQ(run(fourth).state, RunState::kRunning);
    EXPECT_EQ(executor.jobs.count(FakeExecutor::key(fourth, 1)), 1u);

    // The operator rolls back: the held candidate is judged against v1 and promoted.
    registry().rollback("fashion-mnist", "v2 is damaged");
    clock.advance(1);
    ASSERT_NO_THROW(sched().tick());
    EXPECT_EQ(run(third).state, RunState::kPromoted) << run(third).message;
    EXPECT_EQ(run(third).message, "fashion-mnist:v3");
    EXPECT_EQ(gatekeeper.lastChampion, root + "/registry/fashion-mnist/versions/v1/model.h5");
    EXPECT_EQ(registry().alias("fashion-mnist", "champion").value_or(""), "v3");
    EXPECT_EQ(catalog->meta("champion").value_or(""), third);
    EXPECT_EQ(catalog->events(10, "champion_repaired").size(), 1u);
    EXPECT_TRUE(catalog->meta("champion_damaged").value_or("").empty());
    EXPECT_NE(renderMetrics(*catalog, stats).find("\nperennial_champion_damaged 0\n"), std::string::npos);
    (void)first;
  }
};

TEST_F(DamagedChampionTest, UnreadableLineageHoldsPublishingAndTheLoopGoesOn) { check("lineage.json"); }

TEST_F(DamagedChampionTest, AlteredWeightsHoldPublishingAndTheLoopGoesOn) { check("model.h5"); }

// Issue 17, point 8: one snapshot-id recipe (dataset/snapshot.h), and each run's training
// configuration names its snapshot.json for the trainer to check its shards against.
TEST_F(SchedulerTest, ARunsSnapshotIdIsTheSharedRecipeAndItsConfigNamesTheSnapshot) {
  drop("a.h5", 5);
  drop("b.h5", 7);
  request();
  const std::string id = sched().tick().created.at(0);
  const json snap = json::parse(fs::readFile(root + "/runs/" + id + "/snapshot.json"));
  std::vector<std::string> hashes;
  for (const auto& s : snap["manifest"]) hashes.push_back(s["sha256"].get<std::string>());
  ASSERT_EQ(hashes.size(), 2u);
  EXPECT_EQ(snap["id"], snapshotId(hashes));
  EXPECT_EQ(run(id).snapshotId, snapshotId(hashes));
  EXPECT_NE(run(id).config.find("\nsnapshot = " + root + "/runs/" + id + "/snapshot.json\n"), std::string::npos)
      << run(id).config;
}

TEST_F(GatedSchedulerTest, OnPromoteRunsAfterThePromotionAndItsFailureIsRecorded) {
  config.onPromote = {"/bin/false"};
  const std::string id = trainOne("a.h5");
  EXPECT_EQ(run(id).state, RunState::kPromoted);
  auto events = catalog->events(10, "on_promote");
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(json::parse(events[0].detail)["exit_code"], 1);
  EXPECT_EQ(registry().alias("fashion-mnist", "champion").value_or(""), "v1") << "the promotion stands";

  config.onPromote = {"/usr/bin/env"};
  scheduler.reset();
  const std::string second = trainOne("b.h5");
  std::ifstream log(root + "/runs/" + second + "/on_promote.log");
  const std::string text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(text.find("PERENNIAL_VERSION=v2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("PERENNIAL_PREVIOUS=v1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("PERENNIAL_RUN=" + second + "\n"), std::string::npos) << text;
}

// The daemon loop (scheduler/daemon.h) ends when its stop token is set, from another thread as
// from a signal handler, between ticks or while it waits for the next one; it holds the root's
// lock while it runs, and a second scheduler on the root is refused.
TEST_F(SchedulerTest, DaemonStopsWhenItsStopTokenIsSetAndHoldsTheRootMeanwhile) {
  std::ofstream(root + "/sched.cfg") << "[dataset]\nfeature_shape = 28,28\n[train]\nconfig = train.cfg\nholdout = holdout\n"
                                        "[sched]\ntick_s = 30\n";
  SchedulerService service(root, root + "/sched.cfg", {"--sched.tick_s=30"});
  std::atomic<bool> stop{false};
  auto running = std::async(std::launch::async, [&] { service.runDaemon(stop, 0); });
  // The first tick records itself; then the daemon waits 30 s for the next.
  for (int i = 0; i < 500 && !service.catalog().meta("last_tick_at"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ASSERT_TRUE(service.catalog().meta("last_tick_at")) << "the daemon never ticked";
  EXPECT_THROW(SchedulerService(root, root + "/sched.cfg", {}).tickOnce(), IoError) << "a second scheduler on the root";
  stop.store(true);
  // The wait is cut short at the latest by the next inotify event; a signal cuts it at once
  // (sched.cli). Here a file arriving wakes it.
  std::ofstream(root + "/incoming/wake.h5") << "x";
  ASSERT_EQ(running.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "the daemon did not stop";
  running.get();
  EXPECT_NO_THROW(SchedulerService(root, root + "/sched.cfg", {}).tickOnce()) << "the lock went with the daemon";
}

TEST_F(SchedulerTest, ServiceRefusesABadConfigurationBeforeItTouchesTheRoot) {
  const std::string fresh = root + "/fresh-root";
  std::ofstream(root + "/bad.cfg") << "[train]\nconfig = train.cfg\nholdout = holdout\nranks = 0\n";
  EXPECT_THROW(SchedulerService(fresh, root + "/bad.cfg", {}), ConfigError);
  EXPECT_FALSE(stdfs::exists(fresh)) << "a bad configuration created the root";
  EXPECT_THROW(SchedulerService(fresh, "", {}), ConfigError) << "no configuration";
}

// train.nodes and train.ranks_per_node: checked with messages naming the file, key and rule.
TEST(SchedConfigTest, NodesAndRanksPerNode) {
  const std::string dir = (stdfs::temp_directory_path() / ("perennial-schedcfg-" + std::to_string(::getpid()))).string();
  stdfs::create_directories(dir + "/holdout");
  std::ofstream(dir + "/train.cfg") << "[train]\nepochs = 1\n";
  std::ofstream(dir + "/train.sbatch") << "#!/bin/bash\n";
  auto load = [&](const std::string& extra) {
    const std::string file = dir + "/sched.cfg";
    std::ofstream(file) << "[train]\nconfig = train.cfg\nholdout = holdout\n" << extra;
    return loadSchedConfig(file);
  };
  auto refused = [&](const std::string& extra) {
    try {
      load(extra);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  const std::string slurm = "[executor]\nkind = slurm\n[slurm]\nscript = train.sbatch\n";
  SchedConfig c = load("nodes = 1-2\nranks_per_node = 2\n" + slurm);
  EXPECT_EQ(c.nodes, "1-2");
  EXPECT_EQ(c.ranksPerNode, 2);
  EXPECT_EQ(c.ranks, 4) << "the largest world size";
  c = load("nodes = 3\nranks_per_node = 1\n" + slurm);
  EXPECT_EQ(c.ranks, 3);
  c = load("nodes = 1\nranks_per_node = 2\n");
  EXPECT_EQ(c.ranks, 2) << "one node also works with the local executor";
  c = load("ranks = 3\n");
  EXPECT_EQ(c.nodes, "");
  EXPECT_EQ(c.ranks, 3);
  const std::string file = dir + "/sched.cfg: ";
  for (const char* bad : {"0", "2-1", "a", "1-", "-2", "1-2-3", "1 - 2", "01"}) {
    EXPECT_EQ(refused(std::string("nodes = ") + bad + "\nranks_per_node = 1\n" + slurm),
              file + "train.nodes: must be a node count N or a range A-B with 1 <= A <= B (got '" + bad + "')");
  }
  EXPECT_EQ(refused("nodes = 2\n" + slurm), file + "train.ranks_per_node: required with train.nodes: at least 1 (got 0)");
  EXPECT_EQ(refused("ranks_per_node = 2\n"), file + "train.ranks_per_node: needs train.nodes (the nodes whose ranks it counts)");
  EXPECT_EQ(refused("ranks = 4\nnodes = 2\nranks_per_node = 2\n" + slurm),
            file + "train.ranks: give either train.ranks or train.nodes with train.ranks_per_node, not both");
  EXPECT_EQ(refused("nodes = 1-2\nranks_per_node = 1\n"),
            file + "train.nodes: runs on several nodes need executor.kind = slurm (the local executor runs mpirun on this machine)");
  stdfs::remove_all(dir);
}

// dataset.target_dtype: float32 targets make a regression dataset with no classes; the messages
// name the file, the key and the rule.
TEST(SchedConfigTest, TargetDtypeChoosesClassificationOrRegression) {
  const std::string dir = (stdfs::temp_directory_path() / ("perennial-schedcfg-t-" + std::to_string(::getpid()))).string();
  stdfs::create_directories(dir + "/holdout");
  std::ofstream(dir + "/train.cfg") << "[train]\nepochs = 1\n";
  const std::string file = dir + "/sched.cfg";
  auto load = [&](const std::string& dataset) {
    std::ofstream(file) << "[dataset]\n" << dataset << "[train]\nconfig = train.cfg\nholdout = holdout\n";
    return loadSchedConfig(file);
  };
  auto refused = [&](const std::string& dataset) {
    try {
      load(dataset);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  SchedConfig c = load("");
  EXPECT_EQ(c.dataset.spec.targetType, DType::kInt64);
  EXPECT_EQ(c.dataset.spec.numClasses, 10);
  c = load("target_dtype = float32\nfeature_dtype = float32\nfeature_shape = 4\n");
  EXPECT_TRUE(c.dataset.spec.regression());
  EXPECT_EQ(c.dataset.spec.numClasses, 0) << "the default 10 classes do not apply to regression";
  EXPECT_NE(refused("target_dtype = float32\nnum_classes = 10\n").find(file + ": dataset.num_classes: must be 0 with dataset.target_dtype = float32"),
            std::string::npos);
  EXPECT_NE(refused("target_dtype = int32\n").find(file + ": dataset.target_dtype: must be int64"), std::string::npos)
      << refused("target_dtype = int32\n");
  EXPECT_NE(refused("num_classes = 0\n").find("dataset.num_classes"), std::string::npos);
  stdfs::remove_all(dir);
}

}  // namespace
}  // namespace perennial::sched
