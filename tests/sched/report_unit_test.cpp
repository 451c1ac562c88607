// `perennial report` (scheduler/report/report.h) on hand-built roots: HTML escaping, an empty root, a
// catalog full of hostile strings, and a root with many runs, versions and long curves.
// PERENNIAL_REPORT_UNIT_OUT=DIR keeps the pages for a look in a browser.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "scheduler/catalog.h"
#include "scheduler/registry.h"
#include "scheduler/report/report.h"

namespace perennial::sched {
namespace {

namespace stdfs = std::filesystem;
using nlohmann::json;

class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (stdfs::path(::testing::TempDir()) / "perennial-report-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr) << tmpl;
    dir_ = tmpl;
    root_ = dir_ + "/root";
    stdfs::create_directories(root_);
  }
  void TearDown() override {
    std::error_code ec;
    // Published registry files are read-only.
    for (auto it = stdfs::recursive_directory_iterator(dir_, ec); !ec && it != stdfs::recursive_directory_iterator();
         it.increment(ec)) {
      std::error_code ignored;
      stdfs::permissions(it->path(), stdfs::perms::owner_all, stdfs::perm_options::add, ignored);
    }
    stdfs::remove_all(dir_, ec);
  }

  std::string render() {
    ReportOptions opt;
    opt.root = root_;
    opt.now = 1.7e9;
    return renderReport(opt);
  }
  // Keeps PAGE as NAME under $PERENNIAL_REPORT_UNIT_OUT, when set.
  static void keep(const std::string& page, const std::string& name) {
    if (const char* out = std::getenv("PERENNIAL_REPORT_UNIT_OUT")) {
      stdfs::create_directories(out);
      std::ofstream(std::string(out) + "/" + name) << page;
    }
  }
  static void write(const std::string& path, const std::string& content) {
    stdfs::create_directories(stdfs::path(path).parent_path());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << content;
  }

  std::string dir_, root_;
};

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos; pos = haystack.find(needle, pos + needle.size())) ++n;
  return n;
}

// Every section, a complete document, and nothing that loads from elsewhere.
void expectWellFormedPage(const std::string& page) {
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(page.find("</html>"), std::string::npos);
  for (const char* id : {"summary", "quality", "curves", "timeline", "lineage", "verdicts", "runs", "quarantine"}) {
    EXPECT_NE(page.find(std::string("<section id=\"") + id + "\""), std::string::npos) << id;
  }
  EXPECT_FALSE(std::regex_search(page, std::regex(R"((src|href)\s*=\s*"(https?:)?//|@import|url\()", std::regex::icase)));
  EXPECT_EQ(count(page, "<script"), 1u) << "one inline script";
  EXPECT_EQ(page.find("<script src"), std::string::npos);
  EXPECT_EQ(count(page, "<svg"), count(page, "</svg>"));
  EXPECT_EQ(count(page, "<section"), count(page, "</section>"));
  EXPECT_EQ(count(page, "<table"), count(page, "</table>"));
}

TEST(HtmlEscape, EscapesMarkupQuotesAndControlCharacters) {
  EXPECT_EQ(htmlEscape(""), "");
  EXPECT_EQ(htmlEscape("plain text, 100% ok"), "plain text, 100% ok");
  EXPECT_EQ(htmlEscape("<script>alert('x')</script>"), "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;");
  EXPECT_EQ(htmlEscape("a & b \"c\""), "a &amp; b &quot;c&quot;");
  EXPECT_EQ(htmlEscape("&amp;"), "&amp;amp;") << "escaped once more, never left as an entity";
  EXPECT_EQ(htmlEscape("tab\tnew\nline\r"), "tab\tnew\nline\r");
  EXPECT_EQ(htmlEscape(std::string("nul\0bell\a", 9)), "nul\xEF\xBF\xBD" "bell\xEF\xBF\xBD");
  EXPECT_EQ(htmlEscape("caf\xC3\xA9 \xE2\x86\x92"), "caf\xC3\xA9 \xE2\x86\x92") << "UTF-8 passes through";
}

TEST_F(ReportTest, MissingRootIsAConfigError) {
  ReportOptions opt;
  opt.root = dir_ + "/nonexistent";
  EXPECT_THROW(renderReport(opt), ConfigError);
  opt.root = "";
  EXPECT_THROW(renderReport(opt), ConfigError);
  EXPECT_THROW(writeReport(root_, "", dir_ + "/no/such/dir/report.html"), ConfigError);
}

TEST_F(ReportTest, EmptyRootRendersEveryEmptyState) {
  const std::string page = render();
  keep(page, "empty.html");
  expectWellFormedPage(page);
  for (const char* text : {"No catalog yet", "No registry versions yet", "No runs yet", "No events yet", "No champion yet",
                           "Nothing quarantined", "none yet"}) {
    EXPECT_NE(page.find(text), std::string::npos) << text;
  }
  EXPECT_FALSE(stdfs::exists(root_ + "/catalog.db")) << "the report creates no catalog";
  EXPECT_FALSE(stdfs::exists(root_ + "/registry"));

  // A catalog with nothing in it yet (the scheduler ticked once).
  { Catalog cat(root_ + "/catalog.db"); }
  const std::string page2 = render();
  expectWellFormedPage(page2);
  EXPECT_EQ(page2.find("No catalog yet"), std::string::npos);
  EXPECT_NE(page2.find("No runs yet"), std::string::npos);

  writeReport(root_, "", dir_ + "/report.html");
  std::ifstream in(dir_ + "/report.html");
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_NE(ss.str().find("No runs yet"), std::string::npos);
}

TEST_F(ReportTest, EscapesEveryStringFromTheCatalogAndTheRegistry) {
  const std::string evil = "<img src=x onerror=alert(1)>&\"'";
  {
    Catalog cat(root_ + "/catalog.db");
    ShardRecord s;
    s.hash = "ab12";
    s.file = "data/ab12.h5";
    s.source = "shard " + evil + ".h5";
    s.rows = 100;
    s.bytes = 1000;
    s.profile = "{}";
    s.ingestedAt = 1000;
    cat.insertShard(s);
    cat.addEvent(1000, "ingest", s.hash, {{"source", s.source}, {"rows", 100}, {"seq", 1}});
    cat.insertQuarantine({0, "quarantine/" + evil, "bad " + evil, "rule" + evil, "reason " + evil, 1001});
    cat.addEvent(1001, "quarantine", "cd34", {{"source", "bad " + evil}, {"rule", "rule" + evil}, {"reason", evil}});
    cat.addEvent(1002, "trigger", "trig" + evil, {{"reason", "why " + evil}, {"run", "r000001"}});
    cat.insertSnapshot({"snap" + evil, 1, 1, 100, "{}"});
    RunRecord r;
    r.id = "r000001";
    r.state = RunState::kRejected;
    r.trigger = "trig" + evil;
    r.reason = "reason " + evil;
    r.snapshotId = "snap" + evil;
    r.config = "[model]\narch = " + evil;
    r.configSha256 = "sha" + evil;
    r.executor = "local";
    r.createdAt = r.updatedAt = 1002;
    cat.insertRun(r);
    r.message = "failed checks: " + evil;
    r.result = TrainResult{};
    r.result->test.accuracy = 0.5;
    r.finishedAt = r.updatedAt = 1010;
    cat.updateRun(r);
    cat.addEvent(1010, "run", r.id, {{"state", "rejected"}, {"message", r.message}});
    cat.saveTriggerState({"trig" + evil, 1010, true, json{{"reason", evil}, {"held", evil}}.dump(), 1002.0});
    cat.setMeta("last_tick_at", "1010");
  }
  write(root_ + "/runs/r000001/verdict.json",
        json{{"decision", "reject"},
             {"failed", {"check" + evil}},
             {"checks", {{{"name", "check" + evil}, {"passed", false}, {"value", evil}, {"threshold", {{"k" + evil, evil}}}, {"detail", evil}}}},
             {"candidate", {{"accuracy", 0.5}, {"loss", 1.0}}},
             {"champion", nullptr}}
            .dump());
  write(root_ + "/runs/r000001/train/metrics.jsonl",
        "{\"kind\":\"train\",\"step\":10,\"loss\":2.0}\nnot json " + evil + "\n{\"kind\":\"eval\",\"step\":20,\"test_accuracy\":0.5}\n");
  // A registry model whose name needs escaping (allowed by the registry's rules).
  const std::string model = "m<b>&\"x'";
  write(dir_ + "/weights.h5", "weights");
  Registry reg(root_ + "/registry");
  PublishRequest req;
  req.name = model;
  req.weights = dir_ + "/weights.h5";
  req.runId = "r000000";
  req.lineage = {{"reason", evil}, {"config", evil}, {"parent_version", nullptr}, {"code_version", evil}};
  req.metrics = {{"accuracy", 0.4}};
  req.verdict = {{"decision", "pass"}, {"checks", json::array()}};
  reg.promote(model, reg.publish(req), "because " + evil);

  const std::string page = render();
  keep(page, "escaping.html");
  expectWellFormedPage(page);
  EXPECT_EQ(page.find("<img"), std::string::npos);
  EXPECT_EQ(page.find("<b>"), std::string::npos);
  EXPECT_EQ(page.find(evil), std::string::npos);
  EXPECT_NE(page.find("&lt;img src=x onerror=alert(1)&gt;&amp;&quot;&#39;"), std::string::npos);
  EXPECT_NE(page.find("m&lt;b&gt;&amp;&quot;x&#39;:v1"), std::string::npos) << "the champion's name, escaped";
  EXPECT_EQ(count(page, "<script"), 1u);
}

// A judged run's verdict is its own verdict.json (Verdict, gate.h), else the one its registry
// version holds; one that does not read says why instead of its checks.
TEST_F(ReportTest, VerdictsComeFromTheRunElseItsRegistryVersion) {
  const auto verdict = [](const std::string& check, bool pass) {
    return json{{"decision", pass ? "pass" : "reject"},
                {"checks", {{{"name", check}, {"passed", pass}, {"value", 0.5}, {"threshold", 0.25}, {"detail", "d"}}}},
                {"candidate", {{"accuracy", 0.875}, {"loss", 0.5}}},
                {"champion", nullptr}};
  };
  {
    Catalog cat(root_ + "/catalog.db");
    cat.insertSnapshot({"snap", 0, 0, 0, "{}"});
    for (const char* id : {"r000001", "r000002", "r000003"}) {
      RunRecord r;
      r.id = id;
      r.snapshotId = "snap";
      r.state = std::string(id) == "r000001" ? RunState::kPromoted : RunState::kRejected;
      r.trigger = "manual";
      r.executor = "local";
      r.createdAt = r.updatedAt = 1000;
      cat.insertRun(r);
      r.finishedAt = r.updatedAt = 1100;
      cat.updateRun(r);
    }
    cat.setMeta("champion", "r000001");
  }
  // r000001: no verdict.json of its own; its registry version holds one.
  write(dir_ + "/weights.h5", "weights");
  Registry reg(root_ + "/registry");
  PublishRequest req;
  req.name = "m";
  req.weights = dir_ + "/weights.h5";
  req.runId = "r000001";
  req.lineage = {{"run_id", "r000001"}};
  req.metrics = {{"accuracy", 0.875}};
  req.verdict = verdict("from-the-registry", true);
  reg.promote("m", reg.publish(req), "first");
  // r000002: a verdict.json that does not read; r000003: its own.
  write(root_ + "/runs/r000002/verdict.json", "{\"decision\": ");
  write(root_ + "/runs/r000003/verdict.json", verdict("from-the-run", false).dump());

  const std::string page = render();
  keep(page, "verdicts.html");
  expectWellFormedPage(page);
  const std::string verdicts = page.substr(page.find("<section id=\"verdicts\""));
  EXPECT_EQ(count(verdicts, "<details class=\"verdict\""), 3u);
  EXPECT_NE(verdicts.find("<code>from-the-registry</code>"), std::string::npos);
  EXPECT_NE(verdicts.find("<code>from-the-run</code>"), std::string::npos);
  EXPECT_NE(verdicts.find("candidate 0.8750 vs champion none (first model)"), std::string::npos);
  EXPECT_NE(verdicts.find("The verdict does not read: " + htmlEscape(root_) + "/runs/r000002/verdict.json: not JSON"),
            std::string::npos);
}

TEST_F(ReportTest, ManyRunsStayReadableAndSmall) {
  // The registry's history is stamped with the clock: the catalog's times end now too.
  const int numRuns = 60;
  const double t0 = static_cast<double>(std::time(nullptr)) - (numRuns + 1) * 3600.0;
  write(dir_ + "/weights.h5", "weights");
  Registry reg(root_ + "/registry");
  {
    Catalog cat(root_ + "/catalog.db");
    std::string parent;
    int64_t seq = 0;
    for (int i = 1; i <= numRuns; ++i) {
      const double at = t0 + i * 3600.0;
      // Two shards arrive before each run; every tenth run also sees a quarantined file.
      for (int k = 0; k < 2; ++k) {
        ShardRecord s;
        s.hash = "h" + std::to_string(i) + "-" + std::to_string(k);
        s.file = "data/" + s.hash + ".h5";
        s.source = "shard-" + s.hash + ".h5";
        s.rows = 1000;
        s.bytes = 1;
        s.profile = "{}";
        s.ingestedAt = at - 600 + k;
        cat.insertShard(s);
        seq = s.seq;
        cat.addEvent(s.ingestedAt, "ingest", s.hash, {{"source", s.source}, {"rows", 1000}, {"seq", s.seq}});
      }
      if (i % 10 == 0) {
        cat.insertQuarantine({0, "quarantine/bad" + std::to_string(i), "bad" + std::to_string(i), "hdf5", "not HDF5", at - 500});
        cat.addEvent(at - 500, "quarantine", "q", {{"source", "bad" + std::to_string(i)}, {"rule", "hdf5"}});
      }
      const std::string snap = "snap" + std::to_string(i);
      cat.insertSnapshot({snap, seq, seq, seq * 1000, "{}"});
      const bool drift = i % 3 == 0;
      cat.addEvent(at, "trigger", drift ? "drift" : "new_data",
                   drift ? json{{"reason", "PSI"}, {"run", "r"}, {"thresholds", {{"psi", 0.2}}}, {"values", {{"psi", {{"max", 0.2 + 0.01 * i}}}}}}
                         : json{{"reason", "2000 new rows >= 2000"}, {"run", "r"}});
      RunRecord r;
      r.id = cat.nextRunId();
      r.state = RunState::kPending;
      r.trigger = drift ? "drift" : "new_data";
      r.reason = r.trigger + ": fired";
      r.snapshotId = snap;
      r.config = "[model]\narch = mlp\n";
      r.configSha256 = std::string(64, 'c');
      r.executor = "local";
      r.createdAt = r.updatedAt = at;
      cat.insertRun(r);
      cat.addEvent(at, "run", r.id, {{"state", "pending"}, {"rows", seq * 1000}});
      // Outcomes: most promoted, every fourth rejected, every seventh failed, the last running.
      const double accuracy = 0.70 + 0.002 * i + (i % 4 == 0 ? -0.03 : 0);
      if (i == numRuns) {
        r.state = RunState::kRunning;
      } else if (i % 7 == 0) {
        r.state = RunState::kFailed;
        r.message = "exit status 1";
      } else {
        r.state = i % 4 == 0 ? RunState::kRejected : RunState::kPromoted;
        r.result = TrainResult{};
        r.result->test.accuracy = accuracy;
        r.result->paramSha256 = std::string(64, 'p');
        r.result->perennialVersion = "0.1.0";
      }
      r.attempt = 1;
      r.updatedAt = at + 1200;
      if (isTerminalState(r.state)) r.finishedAt = r.updatedAt;
      cat.updateRun(r);
      cat.addEvent(r.updatedAt, "run", r.id, {{"state", runStateName(r.state)}});
      if (r.state == RunState::kPromoted || r.state == RunState::kRejected) {
        const json verdict{{"decision", r.state == RunState::kPromoted ? "pass" : "reject"},
                           {"checks", {{{"name", "threshold.accuracy"}, {"passed", true}, {"value", accuracy}, {"threshold", 0.5}, {"detail", "ok"}},
                                       {{"name", "improvement"}, {"passed", r.state == RunState::kPromoted}, {"value", 0.001}, {"threshold", 0.002}, {"detail", "gain"}}}},
                           {"candidate", {{"accuracy", accuracy}, {"loss", 1.0}}},
                           {"champion", parent.empty() ? json(nullptr) : json{{"accuracy", accuracy - 0.002}, {"loss", 1.0}}}};
        write(root_ + "/runs/" + r.id + "/verdict.json", verdict.dump());
        if (r.state == RunState::kPromoted) {
          PublishRequest req;
          req.name = "fashion";
          req.weights = dir_ + "/weights.h5";
          req.runId = r.id;
          req.lineage = {{"data_snapshot", snap}, {"shards", json::array({"a", "b"})}, {"parent_version", parent.empty() ? json(nullptr) : json(parent)},
                         {"config_sha256", r.configSha256}, {"checkpoint_sha256", std::string(64, 'k')}, {"code_version", "0.1.0"},
                         {"trigger", r.trigger}, {"reason", r.reason}, {"config", r.config}};
          req.metrics = {{"accuracy", accuracy}};
          req.verdict = verdict;
          parent = reg.publish(req);
          reg.promote("fashion", parent, "passed");
          cat.setMeta("champion", r.id);
        }
      }
      // Long curves: 2000 loss points and 20 evaluations per run.
      std::string metrics;
      for (int step = 1; step <= 2000; ++step) {
        metrics += json{{"kind", "train"}, {"step", step}, {"loss", 2.0 / (1 + step * 0.01) + 0.001 * i}}.dump() + "\n";
        if (step % 100 == 0) metrics += json{{"kind", "eval"}, {"step", step}, {"test_accuracy", accuracy * step / 2000}}.dump() + "\n";
      }
      write(root_ + "/runs/" + r.id + "/train/metrics.jsonl", metrics);
    }
    cat.saveTriggerState({"drift", t0 + numRuns * 3600.0 + 60, false,
                          json{{"reason", "PSI 0.100 < 0.2"}, {"thresholds", {{"psi", 0.2}}}, {"values", {{"psi", {{"max", 0.1}}}}}}.dump(),
                          std::nullopt});
    cat.setMeta("last_tick_at", std::to_string(t0 + numRuns * 3600.0 + 60));
  }
  const std::string champion = reg.rollback("fashion", "by hand");

  const std::string page = render();
  keep(page, "many-runs.html");
  expectWellFormedPage(page);
  EXPECT_LT(page.size(), 1500000u) << "the page stays small";
  // The champion after the rollback, and its parent chain back to v1.
  EXPECT_NE(page.find("fashion:" + champion), std::string::npos);
  EXPECT_NE(page.find("<strong>v1</strong>"), std::string::npos);
  EXPECT_NE(page.find("rollback"), std::string::npos);
  // Curves of the 12 newest runs only, each downsampled to at most 300 points.
  const std::string curves = page.substr(page.find("<section id=\"curves\""), page.find("<section id=\"timeline\"") - page.find("<section id=\"curves\""));
  EXPECT_EQ(count(curves, "<polyline"), 2u * 12u) << "a loss and an accuracy line per run";
  std::regex points("points=\"([^\"]*)\"");
  for (auto it = std::sregex_iterator(page.begin(), page.end(), points); it != std::sregex_iterator(); ++it) {
    const std::string p = (*it)[1];
    EXPECT_LE(static_cast<size_t>(std::count(p.begin(), p.end(), ' ')) + 1, 300u);
  }
  EXPECT_NE(curves.find("r000060"), std::string::npos);
  EXPECT_EQ(curves.find("r000048"), std::string::npos);
  // The runs table: the newest 50; verdicts: 12.
  const std::string runs = page.substr(page.find("<section id=\"runs\""));
  EXPECT_EQ(count(runs.substr(0, runs.find("</section>")), "<tr>"), 51u) << "a header and 50 runs";
  EXPECT_EQ(count(page, "<details class=\"verdict\""), 12u);
  EXPECT_NE(page.find("r000060"), std::string::npos);
  EXPECT_NE(page.find("in flight"), std::string::npos);
}

// Versions measured on different holdouts: the chart says so, each point names its holdout, and
// the line joins only the versions measured on the same one.
TEST_F(ReportTest, VersionsOnDifferentHoldoutsAreLabelledAndNotJoined) {
  write(dir_ + "/weights.h5", "weights");
  Registry reg(root_ + "/registry");
  const std::string a(64, 'a'), b(64, 'b');
  int n = 0;
  for (const auto& [accuracy, holdout] : std::vector<std::pair<double, std::string>>{{0.80, a}, {0.82, a}, {0.79, b}}) {
    PublishRequest req;
    req.name = "m";
    req.weights = dir_ + "/weights.h5";
    req.runId = "r00000" + std::to_string(++n);
    req.lineage = {{"run_id", req.runId}};
    req.metrics = {{"accuracy", accuracy}, {"holdout_id", holdout}, {"holdout_rows", 1000 * n}};
    reg.promote("m", reg.publish(req), "test");
  }
  const std::string page = render();
  keep(page, "holdouts.html");
  expectWellFormedPage(page);
  const std::string quality = page.substr(page.find("<section id=\"quality\""));
  const std::string versions = quality.substr(0, quality.find("</figure>"));
  EXPECT_NE(versions.find("measured on 2 different holdouts"), std::string::npos) << versions;
  EXPECT_NE(versions.find("holdout aaaaaaaaaaaa (2000 rows)"), std::string::npos);
  EXPECT_NE(versions.find("holdout bbbbbbbbbbbb (3000 rows)"), std::string::npos);
  EXPECT_EQ(count(versions, "<polyline"), 1u) << "v1-v2 joined, v3 alone";
}

}  // namespace
}  // namespace perennial::sched
