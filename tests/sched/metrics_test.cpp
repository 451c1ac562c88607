// The Prometheus metrics (scheduler/metrics.h): the exposition text rendered from a catalog, and
// the loopback HTTP server that serves it.
#include "scheduler/metrics.h"

#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "common/error.h"
#include "scheduler/catalog.h"

namespace perennial::sched {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

// A strict reader of the text exposition format 0.0.4: every line is a HELP or TYPE comment or
// a sample `name{label="value",...} value`; every sample's family has HELP and TYPE lines first;
// label values use only the escapes \\, \" and \n. Samples are keyed `name{k="v",...}` with
// the values unescaped.
struct Exposition {
  std::map<std::string, std::string> samples;
  std::map<std::string, std::string> types;  // family -> type
  std::set<std::string> helps;
};

// Void, so that ASSERTs can end it (parseExposition returns what was read until then).
void parseInto(const std::string& text, Exposition& e) {
  static const std::regex name("[a-zA-Z_:][a-zA-Z0-9_:]*");
  static const std::regex value(
      "[-+]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][-+]?[0-9]+)?|NaN|[-+]Inf");
  EXPECT_TRUE(!text.empty() && text.back() == '\n') << "the text ends with a newline";
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    SCOPED_TRACE(line);
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const std::string rest = line.substr(7);
      const auto sp = rest.find(' ');
      ASSERT_NE(sp, std::string::npos);
      const std::string family = rest.substr(0, sp);
      EXPECT_TRUE(std::regex_match(family, name));
      if (line[2] == 'H') {
        EXPECT_TRUE(e.helps.insert(family).second) << "one HELP per family";
      } else {
        const std::string type = rest.substr(sp + 1);
        EXPECT_TRUE(type == "counter" || type == "gauge") << type;
        EXPECT_TRUE(e.helps.count(family)) << "HELP before TYPE";
        EXPECT_TRUE(e.types.emplace(family, type).second) << "one TYPE per family";
      }
      continue;
    }
    ASSERT_FALSE(line.empty() || line[0] == '#') << "only HELP and TYPE comments, no blank lines";
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    const std::string metric = line.substr(0, i);
    ASSERT_TRUE(std::regex_match(metric, name)) << metric;
    EXPECT_TRUE(e.types.count(metric)) << metric << " has no TYPE line before it";
    std::string key = metric;
    if (i < line.size() && line[i] == '{') {
      key += '{';
      ++i;
      bool first = true;
      while (i < line.size() && line[i] != '}') {
        if (!first) {
          ASSERT_EQ(line[i], ',');
          ++i;
        }
        first = false;
        const auto eq = line.find('=', i);
        ASSERT_NE(eq, std::string::npos);
        const std::string label = line.substr(i, eq - i);
        EXPECT_TRUE(std::regex_match(label, std::regex("[a-zA-Z_][a-zA-Z0-9_]*"))) << label;
        i = eq + 1;
        ASSERT_LT(i, line.size());
        ASSERT_EQ(line[i], '"');
        ++i;
        std::string v;
        for (;;) {
          ASSERT_LT(i, line.size()) << "unterminated label value";
          const char c = line[i++];
          if (c == '"') break;
          if (c == '\\') {
            ASSERT_LT(i, line.size());
            const char x = line[i++];
            ASSERT_TRUE(x == '\\' || x == '"' || x == 'n') << "bad escape \\" << x;
            v += x == 'n' ? '\n' : x;
          } else {
            v += c;
          }
        }
        key += label + "=\"" + v + "\",";
      }
      ASSERT_LT(i, line.size());
      ++i;  // '}'
      if (key.back() == ',') key.pop_back();
      key += '}';
    }
    ASSERT_LT(i, line.size());
    ASSERT_EQ(line[i], ' ');
    const std::string v = line.substr(i + 1);
    EXPECT_TRUE(std::regex_match(v, value)) << v;
    EXPECT_TRUE(e.samples.emplace(key, v).second) << "duplicate sample " << key;
  }
}

Exposition parseExposition(const std::string& text) {
  Exposition e;
  parseInto(text, e);
  return e;
}

class MetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root = stdfs::temp_directory_path() /
           ("perennial-metrics-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    stdfs::remove_all(root);
    stdfs::create_directories(root);
    catalog = std::make_unique<Catalog>(root + "/catalog.db");
  }
  void TearDown() override {
    catalog.reset();
    stdfs::remove_all(root);
  }

  void addShard(const std::string& hash, int64_t rows) {
    ShardRecord s;
    s.hash = hash;
    s.file = "data/" + hash + ".h5";
    s.source = hash + ".h5";
    s.rows = rows;
    s.bytes = rows * 10;
    s.profile = "{}";
    s.ingestedAt = 1;
    catalog->insertShard(s);
  }

  // A run in STATE; a finished one has RESULT and FINISHED_AT.
  std::string addRun(RunState st, const json& result = nullptr, double finishedAt = 0) {
    catalog->insertSnapshot({"snap", 1, 1, 10, "{}"});
    RunRecord r;
    r.id = catalog->nextRunId();
    r.state = RunState::kPending;
    r.trigger = "new_data";
    r.snapshotId = "snap";
    r.createdAt = r.updatedAt = 1;
    catalog->insertRun(r);
    r.state = st;
    if (!result.is_null()) {
      json j = result;
      // A result without test_accuracy is a regression model's: no accuracy recorded.
      const json required = j.contains("test_accuracy")
                                ? json{{"test_loss", 0.0}, {"param_sha256", "p"}}
                                : json{{"task", "regression"}, {"test_loss", 0.0}, {"test_mse", 0.0}, {"test_mae", 0.0},
                                       {"test_r2", 0.0}, {"param_sha256", "p"}};
      for (const auto& [k, v] : required.items()) {
        if (!j.contains(k)) j[k] = v;
      }
      r.result = TrainResult::fromJson(j, "test result");
    }
    if (finishedAt > 0) r.finishedAt = r.updatedAt = finishedAt;
    catalog->updateRun(r);
    return r.id;
  }

  std::string root;
  std::unique_ptr<Catalog> catalog;
  TickStats ticks;
};

const char* const kAllStates[] = {"pending",   "submitted", "running",    "succeeded", "failed",
                                  "preempted", "cancelled", "validating", "promoted",  "rejected"};
const char* const kFamilies[] = {"perennial_runs",
                                 "perennial_shards_ingested_total",
                                 "perennial_shard_rows_ingested_total",
                                 "perennial_shards_quarantined_total",
                                 "perennial_shards_quarantined_by_rule_total",
                                 "perennial_trigger_firings_total",
                                 "perennial_trigger_fired",
                                 "perennial_last_training_duration_seconds",
                                 "perennial_champion_info",
                                 "perennial_champion_accuracy",
                                 "perennial_scheduler_ticks_total",
                                 "perennial_scheduler_tick_failures_total",
                                 "perennial_scheduler_tick_duration_seconds",
                                 "perennial_scheduler_last_tick_timestamp_seconds"};

TEST_F(MetricsTest, AnEmptyCatalogHasEveryFamilyAndEveryRunState) {
  const Exposition e = parseExposition(renderMetrics(*catalog, ticks));
  for (const char* f : kFamilies) {
    SCOPED_TRACE(f);
    EXPECT_TRUE(e.helps.count(f));
    EXPECT_TRUE(e.types.count(f));
  }
  EXPECT_EQ(e.types.at("perennial_runs"), "gauge");
  EXPECT_EQ(e.types.at("perennial_shards_ingested_total"), "counter");
  EXPECT_EQ(e.types.at("perennial_trigger_firings_total"), "counter");
  EXPECT_EQ(e.types.at("perennial_champion_info"), "gauge");
  for (const char* st : kAllStates)
    EXPECT_EQ(e.samples.at(std::string("perennial_runs{state=\"") + st + "\"}"), "0") << st;
  EXPECT_EQ(e.samples.at("perennial_shards_ingested_total"), "0");
  EXPECT_EQ(e.samples.at("perennial_shard_rows_ingested_total"), "0");
  EXPECT_EQ(e.samples.at("perennial_shards_quarantined_total"), "0");
  EXPECT_EQ(e.samples.at("perennial_scheduler_ticks_total"), "0");
  EXPECT_EQ(e.samples.at("perennial_scheduler_last_tick_timestamp_seconds"), "0");
  // Nothing known yet: no sample rather than a made-up one.
  EXPECT_EQ(e.samples.count("perennial_last_training_duration_seconds"), 0u);
  EXPECT_EQ(e.samples.count("perennial_champion_accuracy"), 0u);
  for (const auto& [k, v] : e.samples) EXPECT_NE(k.rfind("perennial_champion_info", 0), 0u) << k;
}

TEST_F(MetricsTest, ValuesComeFromTheCatalogAndTheTickStats) {
  addShard("aaa", 1000);
  addShard("bbb", 500);
  catalog->insertQuarantine({0, "quarantine/x.1", "x.h5", "hdf5", "not HDF5", 2});
  catalog->insertQuarantine({0, "quarantine/y.1", "y.h5", "hdf5", "truncated", 3});
  catalog->insertQuarantine({0, "quarantine/z.1", "z.h5", "labels", "label 12 in row 3", 4});
  addRun(RunState::kFailed, nullptr, 5);
  addRun(RunState::kRejected, {{"wall_seconds", 30.5}, {"train_seconds", 20}, {"test_accuracy", 0.5}},
         8);
  const std::string champ =
      addRun(RunState::kPromoted, {{"wall_seconds", 12.25}, {"test_accuracy", 0.875}}, 7);
  addRun(RunState::kRunning);
  addRun(RunState::kPending);
  catalog->setMeta("champion", champ);
  catalog->setMeta("champion_version", "v2");
  catalog->addEvent(7, "champion", champ,
                    {{"run", champ}, {"model", "fashion"}, {"version", "v2"}});
  for (int i = 0; i < 3; ++i) catalog->addEvent(1 + i, "trigger", "new_data", {{"reason", "rows"}});
  catalog->addEvent(4, "trigger", "on_demand", {{"reason", "asked"}});
  catalog->addEvent(4, "run", "r000001", {{"state", "pending"}});  // not a firing
  catalog->saveTriggerState({"new_data", 9, true, "{}", 9.0});
  catalog->saveTriggerState({"on_demand", 9, false, "{}", std::nullopt});
  catalog->saveTriggerState({"schedule", 9, false, "{}", std::nullopt});
  ticks.recordTick(0.25, 1700000000.5);
  ticks.recordTick(0.125, 1700000001.5);
  ticks.failures = 1;

  const std::string text = renderMetrics(*catalog, ticks, {"/nonexistent", "fashion"});
  const Exposition e = parseExposition(text);
  const auto& s = e.samples;
  EXPECT_EQ(s.at("perennial_runs{state=\"failed\"}"), "1");
  EXPECT_EQ(s.at("perennial_runs{state=\"rejected\"}"), "1");
  EXPECT_EQ(s.at("perennial_runs{state=\"promoted\"}"), "1");
  EXPECT_EQ(s.at("perennial_runs{state=\"running\"}"), "1");
  EXPECT_EQ(s.at("perennial_runs{state=\"pending\"}"), "1");
  EXPECT_EQ(s.at("perennial_runs{state=\"succeeded\"}"), "0");
  EXPECT_EQ(s.at("perennial_shards_ingested_total"), "2");
  EXPECT_EQ(s.at("perennial_shard_rows_ingested_total"), "1500");
  EXPECT_EQ(s.at("perennial_shards_quarantined_total"), "3");
  EXPECT_EQ(s.at("perennial_shards_quarantined_by_rule_total{rule=\"hdf5\"}"), "2");
  EXPECT_EQ(s.at("perennial_shards_quarantined_by_rule_total{rule=\"labels\"}"), "1");
  EXPECT_EQ(s.at("perennial_trigger_firings_total{trigger=\"new_data\"}"), "3");
  EXPECT_EQ(s.at("perennial_trigger_firings_total{trigger=\"on_demand\"}"), "1");
  EXPECT_EQ(s.at("perennial_trigger_firings_total{trigger=\"schedule\"}"), "0");
  EXPECT_EQ(s.at("perennial_trigger_fired{trigger=\"new_data\"}"), "1");
  EXPECT_EQ(s.at("perennial_trigger_fired{trigger=\"on_demand\"}"), "0");
  // The most recently finished of the runs that trained: the rejected one (finished at 8).
  EXPECT_EQ(s.at("perennial_last_training_duration_seconds"), "30.5");
  EXPECT_EQ(s.at("perennial_champion_info{model=\"fashion\",version=\"v2\",run=\"" + champ + "\"}"),
            "1");
  EXPECT_EQ(s.at("perennial_champion_accuracy"), "0.875");
  EXPECT_EQ(s.at("perennial_scheduler_ticks_total"), "2");
  EXPECT_EQ(s.at("perennial_scheduler_tick_failures_total"), "1");
  EXPECT_EQ(s.at("perennial_scheduler_tick_duration_seconds"), "0.125");
  EXPECT_EQ(s.at("perennial_scheduler_last_tick_timestamp_seconds"), "1700000001.5");
  // The exact text of one family.
  EXPECT_NE(text.find("# HELP perennial_shards_ingested_total Shards ingested (validated and "
                      "stored in data/).\n"
                      "# TYPE perennial_shards_ingested_total counter\n"
                      "perennial_shards_ingested_total 2\n"),
            std::string::npos)
      << text;
}

TEST_F(MetricsTest, LastTrainingFallsBackToTrainSecondsAndChampionAccuracyToTheRegistry) {
  const std::string champ = addRun(RunState::kPromoted, {{"train_seconds", 7}}, 3);
  catalog->setMeta("champion", champ);
  catalog->setMeta("champion_version", "v1");
  // An older champion event without a model name: the configured model is used.
  catalog->addEvent(3, "champion", champ, {{"run", champ}});
  const std::string reg = root + "/registry";
  stdfs::create_directories(reg + "/fm/versions/v1");
  std::ofstream(reg + "/fm/versions/v1/metrics.json")
      << json{{"accuracy", 0.75}, {"loss", 0.5}}.dump();
  const Exposition e = parseExposition(renderMetrics(*catalog, ticks, {reg, "fm"}));
  EXPECT_EQ(e.samples.at("perennial_last_training_duration_seconds"), "7");
  EXPECT_EQ(
      e.samples.at("perennial_champion_info{model=\"fm\",version=\"v1\",run=\"" + champ + "\"}"),
      "1");
  EXPECT_EQ(e.samples.at("perennial_champion_accuracy"), "0.75");
}

TEST_F(MetricsTest, AChampionWithoutTheGateHasNoVersion) {
  const std::string champ =
      addRun(RunState::kSucceeded, {{"wall_seconds", 2}, {"test_accuracy", 0.5}}, 3);
  catalog->setMeta("champion", champ);
  catalog->setMeta("champion_version", "v9");  // from an earlier, gated champion: not this one's
  catalog->addEvent(3, "champion", champ, {{"run", champ}, {"snapshot", "snap"}});
  const Exposition e = parseExposition(renderMetrics(*catalog, ticks, {root + "/registry", "fm"}));
  EXPECT_EQ(e.samples.at("perennial_champion_info{model=\"\",version=\"\",run=\"" + champ + "\"}"),
            "1");
  EXPECT_EQ(e.samples.at("perennial_champion_accuracy"), "0.5");
}

TEST_F(MetricsTest, LabelValuesAreEscaped) {
  EXPECT_EQ(escapeLabelValue("plain"), "plain");
  EXPECT_EQ(escapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  const std::string weird = "we\"ird\\trig\nger {x=\"1\"}";
  catalog->addEvent(1, "trigger", weird, json::object());
  catalog->saveTriggerState({weird, 1, true, "{}", 1.0});
  const std::string text = renderMetrics(*catalog, ticks);
  EXPECT_NE(
      text.find(
          "perennial_trigger_firings_total{trigger=\"we\\\"ird\\\\trig\\nger {x=\\\"1\\\"}\"} 1\n"),
      std::string::npos)
      << text;
  const Exposition e = parseExposition(text);  // still one line per sample
  EXPECT_EQ(e.samples.at("perennial_trigger_fired{trigger=\"" + weird + "\"}"), "1");
}

TEST_F(MetricsTest, TheServerServesMetricsOnLoopbackAnd404Elsewhere) {
  addShard("aaa", 1000);
  ticks.recordTick(0.5, 1700000000);
  MetricsServer server(root + "/catalog.db", &ticks);
  const int port = server.start(0);
  ASSERT_GT(port, 0);
  EXPECT_EQ(server.port(), port);

  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(5, 0);
  client.set_read_timeout(10, 0);
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res) << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  Exposition e = parseExposition(res->body);
  EXPECT_EQ(e.samples.at("perennial_shards_ingested_total"), "1");
  EXPECT_EQ(e.samples.at("perennial_scheduler_ticks_total"), "1");
  for (const char* st : kAllStates)
    EXPECT_TRUE(e.samples.count(std::string("perennial_runs{state=\"") + st + "\"}"));

  auto other = client.Get("/other");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  auto root404 = client.Get("/");
  ASSERT_TRUE(root404);
  EXPECT_EQ(root404->status, 404);

  // A scrape while the daemon's connection holds a write transaction reads the last committed
  // state and does not wait for it (WAL).
  catalog->transaction([&] {
    addShard("bbb", 10);
    auto during = client.Get("/metrics");
    ASSERT_TRUE(during);
    EXPECT_EQ(parseExposition(during->body).samples.at("perennial_shards_ingested_total"), "1");
  });
  res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(parseExposition(res->body).samples.at("perennial_shards_ingested_total"), "2");

  // A second server on the same port is refused; out-of-range ports are configuration errors.
  MetricsServer second(root + "/catalog.db", &ticks);
  EXPECT_THROW(second.start(port), IoError);
  MetricsServer third(root + "/catalog.db", &ticks);
  EXPECT_THROW(third.start(70000), ConfigError);

  server.stop();
  server.stop();  // idempotent
  httplib::Client after("127.0.0.1", port);
  after.set_connection_timeout(2, 0);
  EXPECT_FALSE(after.Get("/metrics")) << "the port is closed after stop()";
}

TEST_F(MetricsTest, AServerStoppedAtOnceStopsAndAMissingCatalogIsAnError) {
  for (int i = 0; i < 20; ++i) {
    MetricsServer s(root + "/catalog.db", &ticks);
    s.start(0);
  }  // the destructor stops each one, even before it began listening
  MetricsServer server(root + "/missing/catalog.db", nullptr);
  const int port = server.start(0);
  httplib::Client client("127.0.0.1", port);
  auto res = client.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 500);
  EXPECT_FALSE(stdfs::exists(root + "/missing")) << "a scrape creates nothing";
}

}  // namespace
}  // namespace perennial::sched
