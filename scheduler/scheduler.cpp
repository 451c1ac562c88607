#include "scheduler/scheduler.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <algorithm>

#include "common/error.h"
#include "common/exit_codes.h"
#include "common/read_file.h"
#include "common/fs_util.h"
#include "common/log.h"
#include "common/sha256.h"
#include "dataset/snapshot.h"
#include "common/text.h"
#include "scheduler/process.h"
#include "scheduler/run_paths.h"
#include "dataset/shard_links.h"
#include "trainer/config/train_config.h"

namespace perennial::sched {
namespace {
namespace stdfs = std::filesystem;
using nlohmann::json;

// The last N lines of a log, for a failed run's message.
std::string tail(const std::string& path, size_t n) {
  const std::string text = fs::readFileIfPresent(path);
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (size_t k = 0; k < n && pos > 0; ++k) {
    pos = text.rfind('\n', pos - 1);
    if (pos == std::string::npos) {
      pos = 0;
      break;
    }
  }
  std::string out = text.substr(pos == 0 ? 0 : pos + 1);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

RootLock::RootLock(const std::string& root, bool wait) {
  const std::string path = root + "/scheduler.lock";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError(path + ": cannot open: " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
    ::close(fd);
    if (!wait && errno == EWOULDBLOCK) return;
    throw IoError(path + ": cannot lock: " + std::strerror(errno));
  }
  fd_ = fd;
}

RootLock::~RootLock() {
  if (fd_ >= 0) ::close(fd_);
}

Scheduler::Scheduler(SchedConfig config, std::string root, Catalog& catalog, Executor& executor, Clock& clock,
                     Evaluator* evaluator, Gatekeeper* gatekeeper)
    : config_(std::move(config)),
      root_(std::move(root)),
      cat_(catalog),
      exec_(executor),
      clock_(clock),
      evaluator_(evaluator),
      gatekeeper_(gatekeeper),
      registry_(config_.registryDir.empty() ? root_ + "/registry" : config_.registryDir),
      ingester_(catalog, root_, config_.dataset, config_.settleS, clock),
      triggers_(makeTriggers(config_)) {
  ensureRootLayout(root_);
  resolveTrainConfig("r000000", "");  // fails now, not at the first run, on a bad training config
  if (!cat_.meta("created_at")) {
    transaction([&] { cat_.setMeta("created_at", std::to_string(clock_.now())); });
  }
  for (const auto& t : cat_.triggerStates()) {
    lastFired_[t.name] = t.fired;
    const auto detail = nlohmann::json::parse(t.detail, nullptr, false);
    if (detail.is_object() && detail.contains("values") && detail["values"].is_object()) {
      lastKey_[t.name] = detail["values"].value("key", "");
    }
  }
}


std::string Scheduler::resolveTrainConfig(const std::string& runId, const std::string& warmFrom) {
  const RunPaths run = RunPaths::of(root_, runId);
  try {
    std::map<std::string, std::string> settings{{"data.train", run.data()},
                                                {"data.test", config_.holdout},
                                                // The trainer checks every shard against it before training.
                                                {"data.snapshot", run.snapshot()}};
    if (!warmFrom.empty()) settings["model.init"] = RunPaths::of(root_, warmFrom).model();
    TrainConfig c = loadTrainConfigFile(config_.trainConfig, settings);
    // A TorchScript file named relative to the training configuration, as the scheduler's own
    // paths are relative to its configuration: runs start in other directories.
    if (!c.modelPath.empty() && std::filesystem::path(c.modelPath).is_relative()) {
      c.modelPath = (std::filesystem::absolute(config_.trainConfig).parent_path() / c.modelPath).lexically_normal().string();
    }
    if (!c.modelPath.empty() && !fs::isFile(c.modelPath)) {
      throw ConfigError("model.path: " + c.modelPath + ": no such file");
    }
    return c.toIni();
  } catch (const ConfigError& e) {
    throw ConfigError(config_.source + ": train.config: " + e.what());
  }
}

AttemptSpec Scheduler::attemptSpec(const RunRecord& run) const {
  AttemptSpec s;
  s.runId = run.id;
  s.attempt = run.attempt;
  const RunPaths paths = RunPaths::of(root_, run.id);
  s.runDir = paths.dir();
  s.ranks = config_.ranks;
  s.nodes = config_.nodes;
  s.ranksPerNode = config_.ranksPerNode;
  s.trainArgs = {"train", "--config", paths.config(), "--run-dir", paths.train(), "--resume", "auto"};
  return s;
}

TickReport Scheduler::tick(bool scanIncoming) {
  const auto start = std::chrono::steady_clock::now();
  TickReport report;
  reapChildren();
  handleCancelRequests(report);
  if (scanIncoming) {
    // Each file's failure is its own (ingest.h); one that stops the whole pass (incoming/ cannot
    // be listed) must not stop runs, triggers and publishing: the next tick tries again.
    try {
      report.ingested = ingester_.ingestPending();
    } catch (const Error& e) {
      log::get("sched")->error("ingest pass failed, retried at the next tick: {}", e.what());
    }
  }
  followActiveRuns(report);
  if (gatekeeper_) {
    for (RunRecord run : cat_.runsInStates({RunState::kValidating})) validateRun(run, report);
  }
  evaluateTriggers(report);
  submitPending(report);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

void Scheduler::setState(RunRecord& run, RunState state, const std::string& message, TickReport& report,
                         json detail) {
  const double now = clock_.now();
  run.state = state;
  run.message = message;
  run.updatedAt = now;
  if (isTerminalState(state)) run.finishedAt = now;
  cat_.updateRun(run);
  detail["state"] = runStateName(state);
  detail["attempt"] = run.attempt;
  if (!message.empty()) detail["message"] = message;
  cat_.addEvent(now, "run", run.id, detail);
  report.transitions.emplace_back(run.id, state);
  logCommitted("run " + run.id + " -> " + runStateName(state) + (message.empty() ? "" : ": " + message));
}

void Scheduler::transaction(const std::function<void()>& body) {
  ++transactionDepth_;
  try {
    cat_.transaction(body);
  } catch (...) {
    if (--transactionDepth_ == 0) uncommittedLog_.clear();
    throw;
  }
  if (--transactionDepth_ > 0) return;
  std::vector<std::string> lines;
  lines.swap(uncommittedLog_);
  for (const auto& line : lines) log::get("sched")->info("{}", line);
}

void Scheduler::logCommitted(std::string line) {
  if (transactionDepth_ > 0) {
    uncommittedLog_.push_back(std::move(line));
  } else {
    log::get("sched")->info("{}", line);
  }
}

void Scheduler::handleCancelRequests(TickReport& report) {
  for (const auto& req : cat_.openRequests("cancel")) {
    std::optional<RunRecord> run = cat_.run(req.arg);
    transaction([&] {
      if (run && !isTerminalState(run->state) && !run->cancelRequested) {
        run->cancelRequested = true;
        if (run->state == RunState::kPending || run->state == RunState::kPreempted) {
          setState(*run, RunState::kCancelled, "cancelled before it was submitted", report);
        } else {
          cat_.updateRun(*run);
          cat_.addEvent(clock_.now(), "run", run->id, {{"cancel_requested", true}, {"state", runStateName(run->state)}});
        }
      } else {
        cat_.addEvent(clock_.now(), "request", req.arg,
                      {{"cancel", req.arg}, {"ignored", run ? "the run already ended" : "no such run"}});
      }
      cat_.closeRequest(req.id, clock_.now());
    });
  }
}

void Scheduler::followActiveRuns(TickReport& report) {
  for (RunRecord run : cat_.runsInStates({RunState::kSubmitted, RunState::kRunning})) {
    const AttemptSpec spec = attemptSpec(run);
    AttemptStatus st = exec_.poll(spec, run.execId);
    switch (st.state) {
      case AttemptState::kNotStarted:
        if (run.state == RunState::kSubmitted) {
          // Recorded as submitted, but the process never started (the scheduler died in
          // between): start it now; this is its first start.
          submitAttempt(run, report);
        } else {
          st.state = AttemptState::kLost;
          st.detail = "its attempt directory shows no process";
          finishAttempt(run, st, report);
        }
        break;
      case AttemptState::kRunning:
        if (run.state == RunState::kSubmitted || run.execId != st.execId) {
          transaction([&] {
            run.execId = st.execId;
            setState(run, RunState::kRunning, "", report, {{"exec_id", st.execId}});
          });
        }
        if (run.cancelRequested && !cancelSent_.count(run.id + "/" + std::to_string(run.attempt))) {
          exec_.cancel(spec, run.execId);
          cancelSent_.insert(run.id + "/" + std::to_string(run.attempt));
        }
        break;
      case AttemptState::kExited:
      case AttemptState::kLost:
        // An attempt found again after a restart, already ended: record whose end it was.
        if (run.execId.empty()) run.execId = st.execId;
        finishAttempt(run, st, report);
        break;
    }
  }
}

void Scheduler::finishAttempt(RunRecord& run, const AttemptStatus& st, TickReport& report) {
  const RunPaths paths = RunPaths::of(root_, run.id);
  const std::string log = paths.attemptLog(run.attempt);
  const bool exited = st.state == AttemptState::kExited;
  RunState outcome = RunState::kFailed;
  std::string message;
  bool retry = false;
  std::optional<TrainResult> result;
  if (run.cancelRequested) {
    outcome = RunState::kCancelled;
    message = "cancelled";
  } else if (exited && st.exitCode == 0 && fs::exists(paths.result())) {
    try {
      result = TrainResult::parse(fs::readFileIfPresent(paths.result()), paths.result());
      outcome = RunState::kSucceeded;
    } catch (const DataError& e) {
      // The trainer wrote something else than its contract: a bug, not a fault to retry.
      outcome = RunState::kFailed;
      message = std::string("exit 0 with a result that does not read: ") + e.what();
    }
  } else if (exited && st.exitCode == exit_code::kRequeue) {
    outcome = RunState::kPreempted;
    message = "the trainer checkpointed and stopped on a signal (exit 75)";
    retry = true;
  } else if (exited && st.exitCode == exit_code::kUsage) {
    outcome = RunState::kFailed;
    message = "configuration error (exit 2): " + tail(log, 1);
  } else {
    outcome = RunState::kFailed;
    message = exited ? "exit " + std::to_string(st.exitCode) + (st.detail.empty() ? "" : " (" + st.detail + ")")
                     : "lost: " + st.detail;
    const std::string last = tail(log, 3);
    if (!last.empty()) message += "; log: " + last;
    retry = true;
  }
  fault("attempt-ended");
  transaction([&] {
    if (exited) run.exitCode = st.exitCode;
    if (outcome == RunState::kSucceeded) {
      run.result = result;
      if (gatekeeper_) {
        setState(run, RunState::kValidating, "", report, {{"exit_code", st.exitCode}});
        return;
      }
      // Without a gate, a succeeded run becomes the champion.
      setState(run, outcome, "", report, {{"exit_code", st.exitCode}});
      cat_.setMeta("champion", run.id);
      cat_.addEvent(clock_.now(), "champion", run.id, {{"run", run.id}, {"snapshot", run.snapshotId}});
      return;
    }
    const bool again = retry && run.attempt < run.maxAttempts;
    // A retried run is not finished: record the attempt's outcome, then queue the next one.
    if (again) {
      setState(run, outcome, message, report, {{"exit_code", exited ? st.exitCode : -1}});
      run.finishedAt.reset();
      setState(run, RunState::kPending, "retrying with --resume auto (attempt " + std::to_string(run.attempt + 1) +
                                         " of " + std::to_string(run.maxAttempts) + ")", report);
    } else {
      if (outcome == RunState::kPreempted) outcome = RunState::kFailed;  // out of attempts
      setState(run, outcome, message + (retry ? " (no attempts left)" : ""), report,
               {{"exit_code", exited ? st.exitCode : -1}});
    }
  });
  fault("attempt-recorded");
  if (run.state == RunState::kValidating) validateRun(run, report);
}

json Scheduler::lineageOf(const RunRecord& run, const std::string& parentVersion) {
  const RunPaths paths = RunPaths::of(root_, run.id);
  json snapshot = json::parse(fs::readFileIfPresent(paths.snapshot()), nullptr, false);
  std::vector<std::string> shards;
  if (snapshot.is_object()) {
    for (const auto& s : snapshot["manifest"]) shards.push_back(s.value("sha256", ""));
  }
  // The newest committed checkpoint: its manifest records the file's SHA-256.
  std::string ckptSha, ckptFile;
  std::error_code ec;
  std::vector<std::string> manifests;
  for (const auto& e : stdfs::directory_iterator(paths.checkpoints(), ec)) {
    if (e.path().extension() == ".json") manifests.push_back(e.path().string());
  }
  std::sort(manifests.begin(), manifests.end());
  if (!manifests.empty()) {
    json m = json::parse(fs::readFileIfPresent(manifests.back()), nullptr, false);
    if (m.is_object()) {
      ckptSha = m.value("sha256", "");
      ckptFile = m.value("file", "");
    }
  }
  const std::optional<TrainResult>& result = run.result;
  json lineage{{"run_id", run.id},
               {"trigger", run.trigger},
               {"reason", run.reason},
               {"data_snapshot", run.snapshotId},
               {"shards", shards},
               {"parent_version", parentVersion.empty() ? json(nullptr) : json(parentVersion)},
               {"warm_start_run", run.warmStart},
               {"config", run.config},
               {"config_sha256", run.configSha256},
               {"code_version", result ? json(result->perennialVersion) : json(nullptr)},
               {"checkpoint", ckptFile},
               {"checkpoint_sha256", ckptSha},
               {"param_sha256", result ? json(result->paramSha256) : json(nullptr)},
               {"world_size", result ? json(result->worldSize) : json(nullptr)}};
  // One recipe (dataset/snapshot.h): the trainer's data_snapshot is the run's snapshot id, and
  // its shards were checked against snapshot.json. A trainer that read other data (a run from
  // before that check) is recorded, not hidden.
  if (result && !result->dataSnapshot.empty() && result->dataSnapshot != run.snapshotId) {
    lineage["trainer_data_snapshot"] = result->dataSnapshot;
    log::get("sched")->warn("run {}: the trainer's data snapshot {} differs from the run's {}", run.id,
                            result->dataSnapshot, run.snapshotId);
  }
  return lineage;
}

Scheduler::ChampionHealth Scheduler::checkChampion() {
  ChampionHealth h;
  const std::string name = config_.modelName;
  std::string key;
  try {
    const json aliases = registry_.aliases(name);
    if (!aliases.is_object()) {
      h.problems.push_back(registry_.dir() + "/" + name + "/aliases.json: not a JSON object");
    } else if (aliases.contains("champion")) {
      if (!aliases["champion"].is_string()) {
        h.problems.push_back(registry_.dir() + "/" + name + "/aliases.json: \"champion\" is not a version");
      } else {
        h.version = aliases["champion"].get<std::string>();
      }
    }
  } catch (const Error& e) {
    h.problems.push_back(e.what());
  }
  if (h.version && h.problems.empty()) {
    // The identities of the version's files: any write, replacement or chmod changes one.
    key = *h.version;
    std::error_code ec;
    try {
      std::vector<std::string> files;
      for (const auto& e : stdfs::directory_iterator(registry_.path(name, *h.version), ec)) {
        struct stat st {};
        if (::lstat(e.path().c_str(), &st) != 0) continue;
        files.push_back(e.path().filename().string() + ":" + std::to_string(st.st_ino) + ":" +
                        std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
                        std::to_string(st.st_mtim.tv_nsec) + ":" + std::to_string(st.st_ctim.tv_sec) + "." +
                        std::to_string(st.st_ctim.tv_nsec));
      }
      std::sort(files.begin(), files.end());
      for (const auto& f : files) key += "|" + f;
    } catch (const Error&) {
      key.clear();  // a name registry_.damage() explains
    }
    if (ec) key.clear();
    if (!key.empty() && key == championKey_) {
      h.problems = championProblems_;
    } else {
      h.problems = registry_.damage(name, *h.version);
      championKey_ = key;
      championProblems_ = h.problems;
    }
  }
  // The file's own bytes may appear in a parse error: escaped for the catalog, logs and terminals.
  for (auto& p : h.problems) p = printable(p);
  const std::string what = name + (h.version ? ":" + *h.version : "");
  const std::string now =
      h.problems.empty() ? "" : json{{"model", name}, {"version", h.version ? json(*h.version) : json(nullptr)},
                                     {"problems", h.problems}}.dump();
  const std::string before = cat_.meta("champion_damaged").value_or("");
  if (now != before) {
    transaction([&] {
      cat_.setMeta("champion_damaged", now);
      if (!h.problems.empty()) {
        cat_.addEvent(clock_.now(), "champion_damaged", what,
                      {{"model", name}, {"version", h.version ? json(*h.version) : json(nullptr)},
                       {"problems", h.problems},
                       {"rule", "nothing is published until the champion is repaired or replaced "
                                "(perennial registry rollback|promote); candidates wait in validating"}});
      } else {
        cat_.addEvent(clock_.now(), "champion_repaired", what,
                      {{"model", name}, {"version", h.version ? json(*h.version) : json(nullptr)},
                       {"was", json::parse(before, nullptr, false)}});
      }
    });
    if (!h.problems.empty()) {
      log::get("sched")->error("the champion {} cannot be read: {}; nothing is published until it is repaired or "
                               "replaced (perennial registry rollback {})", what, h.problems.front(), name);
    } else {
      log::get("sched")->info("the champion {} can be read; publishing resumes", what);
    }
  }
  return h;
}

void Scheduler::validateRun(RunRecord& run, TickReport& report) {
  const RunPaths paths = RunPaths::of(root_, run.id);
  const std::string name = config_.modelName;
  // NOTE [Damaged champion]: a champion that cannot be read holds every candidate, unjudged, in
  // validating (docs/scheduler.md, "A damaged champion"): no comparison is skipped and no
  // training is lost; the rest of the tick goes on.
  const ChampionHealth champion = checkChampion();
  if (!champion.problems.empty()) {
    const std::string msg = "held: the champion " + name + (champion.version ? ":" + *champion.version : "") +
                            " cannot be read (" + champion.problems.front() +
                            (champion.problems.size() > 1 ? "; and " + std::to_string(champion.problems.size() - 1) +
                                                                " more" : "") +
                            "); nothing is published until it is repaired or replaced (perennial registry rollback " +
                            name + ")";
    if (run.message != msg) {
      transaction([&] {
        setState(run, RunState::kValidating, msg, report,
                 {{"held", "champion damaged"}, {"champion", champion.version ? json(*champion.version) : json(nullptr)}});
      });
    }
    return;
  }
  const std::optional<std::string>& championVersion = champion.version;
  const std::string championModel =
      championVersion ? registry_.path(name, *championVersion) + "/model.h5" : std::string();
  std::vector<std::string> holdout{config_.holdout};
  if (config_.gate.newestShards > 0) {
    for (const auto& s : cat_.recentShards(config_.gate.newestShards)) holdout.push_back(root_ + "/" + s.file);
  }
  GateOutcome g = gatekeeper_->validate(paths.model(), championModel, holdout, paths.verdict());
  fault("validated-run");
  // A rejection is a verdict that says so; exit 1 without one is an error, not a judgement.
  const bool rejected = g.exitCode == exit_code::kGateReject && g.verdict && !g.verdict->passed;
  if (g.exitCode == exit_code::kGateReject && !rejected) {
    g.exitCode = exit_code::kGateNoVerdict;
    if (g.error.empty()) {
      const std::string seen = g.verdict ? "it passes the candidate" : g.verdictProblem;
      g.error = "exit 1 without a verdict that rejects the candidate (" + paths.verdict() + ": " + seen +
                "); log: " + tail(paths.validateLog(), 3);
    }
  }
  if (rejected) {
    const std::vector<std::string> failedChecks = g.verdict->failed();
    std::string failed;
    for (const auto& f : failedChecks) failed += (failed.empty() ? "" : ", ") + f;
    transaction([&] {
      setState(run, RunState::kRejected, "failed checks: " + failed, report,
               {{"failed", failedChecks}, {"champion", championVersion ? json(*championVersion) : json(nullptr)}});
    });
    return;
  }
  if (g.exitCode != exit_code::kGatePass || !g.verdict) {
    if (g.error.empty()) g.error = "exit 0 without a verdict (" + paths.verdict() + ": " + g.verdictProblem + ")";
    transaction([&] { setState(run, RunState::kFailed, "the validation gate could not judge it: " + g.error, report); });
    return;
  }
  PublishRequest req;
  req.name = name;
  req.weights = paths.model();
  req.runId = run.id;
  req.spec = {{"arch", run.result ? run.result->arch : ""},
              {"dataset", {{"name", config_.dataset.spec.name},
                           {"features", config_.dataset.spec.features},
                           {"labels", config_.dataset.spec.labels},
                           {"feature_dtype", dtypeName(config_.dataset.spec.featureType)},
                           {"target_dtype", dtypeName(config_.dataset.spec.targetType)},
                           {"feature_shape", config_.dataset.spec.featureShape},
                           {"num_classes", config_.dataset.spec.numClasses}}},
              {"config", run.config}};
  req.lineage = lineageOf(run, championVersion.value_or(""));
  const EvalMetrics& cand = g.verdict->candidate.metrics;
  std::vector<double> classAccuracy;
  for (size_t k = 0; k < cand.classTotal.size(); ++k) classAccuracy.push_back(cand.classAccuracy(k));
  req.metrics = {{"accuracy", cand.accuracy}, {"loss", cand.loss},
                 {"class_accuracy", classAccuracy},
                 {"holdout_samples", cand.samples},
                 {"holdout_id", g.verdict->holdoutId},
                 {"holdout_rows", g.verdict->holdoutRows},
                 {"train_test_accuracy", run.result ? run.result->test.accuracy : 0.0}};
  req.verdict = g.verdict->toJson();
  const std::string version = registry_.publish(req);
  fault("published");
  const auto old = registry_.promote(name, version, "run " + run.id + " passed the validation gate");
  fault("promoted");
  transaction([&] {
    cat_.setMeta("champion", run.id);
    cat_.setMeta("champion_version", version);
    setState(run, RunState::kPromoted, name + ":" + version, report,
             {{"version", version}, {"previous", old ? json(*old) : json(nullptr)}});
    cat_.addEvent(clock_.now(), "champion", run.id, {{"run", run.id}, {"model", name}, {"version", version},
                                                   {"previous", old ? json(*old) : json(nullptr)}});
  });
  if (!config_.onPromote.empty()) {
    const std::string log = paths.onPromoteLog();
    int rc = -1;
    std::string error;
    try {
      rc = runOnPromote(config_.onPromote, registry_.show(name, version), old.value_or(""), log, config_.onPromoteTimeoutS);
    } catch (const Error& e) {
      error = e.what();
    }
    json detail{{"command", config_.onPromote}, {"exit_code", rc}, {"version", version}, {"log", log}};
    if (!error.empty()) detail["error"] = error;
    transaction([&] { cat_.addEvent(clock_.now(), "on_promote", run.id, detail); });
    if (rc != 0) {
      log::get("sched")->warn("on_promote {} for {}:{} failed (exit {}{}); the promotion stands", config_.onPromote[0],
                              name, version, rc, error.empty() ? "" : ": " + error);
    }
  }
}

void Scheduler::submitPending(TickReport& report) {
  int64_t capacity = config_.maxConcurrent - cat_.activeRunCount();
  if (capacity <= 0) return;
  for (RunRecord run : cat_.runsInStates({RunState::kPending})) {
    if (capacity-- <= 0) break;
    materialize(run);
    fault("materialized");
    transaction([&] {
      ++run.attempt;
      run.execId.clear();
      run.exitCode.reset();
      setState(run, RunState::kSubmitted, "", report);
    });
    fault("submitted-recorded");
    submitAttempt(run, report);
  }
}

void Scheduler::submitAttempt(RunRecord& run, TickReport& report) {
  std::string execId;
  try {
    execId = exec_.submit(attemptSpec(run));
  } catch (const Error& e) {
    transaction([&] {
      const bool again = run.attempt < run.maxAttempts;
      setState(run, RunState::kFailed, std::string("could not start: ") + e.what(), report);
      if (again) {
        run.finishedAt.reset();
        setState(run, RunState::kPending, "retrying", report);
      }
    });
    return;
  }
  fault("spawned");
  transaction([&] {
    run.execId = execId;
    setState(run, RunState::kRunning, "", report, {{"exec_id", execId}, {"executor", exec_.name()}});
  });
}

void Scheduler::syncChampion() {
  // The registry's champion alias is the truth: `perennial registry promote|rollback` moves it
  // by hand, and the triggers must then compare with that model. One that cannot be read is
  // reported (checkChampion) and not followed until it can.
  const ChampionHealth champion = checkChampion();
  if (!champion.problems.empty()) return;
  const std::optional<std::string>& version = champion.version;
  if (!version || cat_.meta("champion_version").value_or("") == *version) return;
  std::string runId;
  try {
    runId = registry_.show(config_.modelName, *version).lineage.value("run_id", "");
  } catch (const Error& e) {
    log::get("sched")->warn("registry champion {}:{} is unreadable: {}", config_.modelName, *version, e.what());
    return;
  }
  if (runId.empty() || !cat_.run(runId)) return;  // not a model of this scheduler's runs
  transaction([&] {
    cat_.setMeta("champion", runId);
    cat_.setMeta("champion_version", *version);
    cat_.addEvent(clock_.now(), "champion", runId,
                  {{"run", runId}, {"model", config_.modelName}, {"version", *version}, {"by", "registry"}});
  });
  log::get("sched")->info("champion is now {}:{} (run {}), as the registry says", config_.modelName, *version, runId);
}

void Scheduler::evaluateTriggers(TickReport& report) {
  if (gatekeeper_) syncChampion();
  TriggerContext ctx;
  ctx.now = clock_.now();
  ctx.catalog = &cat_;
  ctx.root = root_;
  ctx.evaluator = evaluator_;
  if (auto id = cat_.meta("champion")) {
    ctx.champion = cat_.run(*id);
    if (ctx.champion) ctx.championSnapshot = cat_.snapshot(ctx.champion->snapshotId);
  }
  ctx.coveredSeq = cat_.coveredSeq(ctx.champion ? ctx.champion->snapshotId : "");
  ctx.newData = cat_.shardsAfter(ctx.coveredSeq);

  std::vector<TriggerDecision> decisions;
  std::vector<size_t> firing;
  for (size_t i = 0; i < triggers_.size(); ++i) {
    TriggerDecision d;
    try {
      d = triggers_[i]->evaluate(ctx);
    } catch (const Error& e) {
      d = TriggerDecision{};
      d.reason = std::string("could not evaluate: ") + e.what();
    }
    if (d.fire) firing.push_back(i);
    decisions.push_back(std::move(d));
  }
  std::string held;
  if (!firing.empty()) {
    const auto last = cat_.lastRunCreatedAt();
    const int64_t busy = cat_.activeRunCount() + static_cast<int64_t>(cat_.runsInStates({RunState::kPending}).size());
    if (cat_.maxShardSeq() == 0) {
      held = "no data ingested yet";
    } else if (busy >= config_.maxConcurrent) {
      held = "max_concurrent: " + std::to_string(busy) + " run(s) pending or active";
    } else if (last && ctx.now - *last < config_.cooldownS) {
      held = "cooldown: " + std::to_string(static_cast<int64_t>(config_.cooldownS - (ctx.now - *last))) + " s left";
    }
  }
  transaction([&] {
    std::string runId;
    if (!firing.empty() && held.empty()) {
      std::string reason;
      for (size_t i : firing) reason += (reason.empty() ? "" : "; ") + triggers_[i]->name() + ": " + decisions[i].reason;
      runId = createRun(triggers_[firing.front()]->name(), reason, ctx);
      for (size_t i : firing) triggers_[i]->onRunCreated(ctx, runId);
      report.created.push_back(runId);
    }
    for (size_t i = 0; i < triggers_.size(); ++i) {
      const std::string name = triggers_[i]->name();
      const TriggerDecision& d = decisions[i];
      json detail{{"reason", d.reason}, {"values", d.values}, {"thresholds", d.thresholds}};
      if (d.fire && !held.empty()) detail["held"] = held;
      if (d.fire && !runId.empty()) detail["run"] = runId;
      TriggerStateRecord rec{name, ctx.now, d.fire, dumpJson(detail), std::nullopt};
      if (d.fire && !runId.empty()) rec.lastFiredAt = ctx.now;
      cat_.saveTriggerState(rec);
      // Firings are events; so is a trigger starting to fire while held.
      if (d.fire && (!runId.empty() || !lastFired_[name])) cat_.addEvent(ctx.now, "trigger", name, detail);
      // Each new measurement (drift, decay) is an event too, so its history can be charted.
      const std::string key = d.values.is_object() ? d.values.value("key", "") : "";
      if (!key.empty() && key != lastKey_[name]) {
        cat_.addEvent(ctx.now, "measurement", name, {{"values", d.values}, {"thresholds", d.thresholds}, {"fired", d.fire}});
        lastKey_[name] = key;
      }
      report.decisions.emplace_back(name, d);
    }
    cat_.setMeta("last_tick_at", std::to_string(ctx.now));
  });
  for (size_t i = 0; i < triggers_.size(); ++i) lastFired_[triggers_[i]->name()] = decisions[i].fire;
  if (!report.created.empty()) fault("run-created");
}

SnapshotRecord Scheduler::buildSnapshot(int64_t maxSeq) {
  SnapshotRecord snap;
  snap.maxSeq = maxSeq;
  // The id hashes every shard's hash in ingest order (dataset/snapshot.h: the trainer computes
  // the same id from the shards it reads).
  data::SnapshotIdBuilder h;
  data::Profile profile;
  int64_t profiledUpTo = 0;
  if (auto prev = cat_.snapshotAtOrBefore(maxSeq)) {
    profile = data::Profile::fromJson(prev->profile, "snapshot " + prev->id);
    profiledUpTo = prev->maxSeq;
  }
  for (const auto& s : cat_.shards(0, maxSeq, false)) {
    h.add(s.hash);
    snap.rows += s.rows;
    ++snap.shards;
  }
  for (const auto& s : cat_.shards(profiledUpTo, maxSeq, true)) profile.merge(data::Profile::fromJson(s.profile, "shard " + s.hash));
  snap.id = h.finish();
  snap.profile = dumpJson(profile.toJson());
  return snap;
}

std::string Scheduler::createRun(const std::string& trigger, const std::string& reason, TriggerContext& ctx) {
  const int64_t maxSeq = cat_.maxShardSeq();
  SnapshotRecord snap = buildSnapshot(maxSeq);
  cat_.insertSnapshot(snap);
  RunRecord r;
  r.id = cat_.nextRunId();
  r.state = RunState::kPending;
  r.trigger = trigger;
  r.reason = reason;
  r.snapshotId = snap.id;
  r.warmStart = config_.warmStart == "champion" && ctx.champion ? ctx.champion->id : "";
  r.config = resolveTrainConfig(r.id, r.warmStart);
  r.configSha256 = toHex(sha256(r.config.data(), r.config.size()));
  r.maxAttempts = config_.maxAttempts;
  r.executor = exec_.name();
  r.createdAt = r.updatedAt = ctx.now;
  cat_.insertRun(r);
  cat_.addEvent(ctx.now, "run", r.id,
                {{"state", runStateName(r.state)}, {"trigger", trigger}, {"reason", reason}, {"snapshot", snap.id},
                 {"shards", snap.shards}, {"rows", snap.rows}, {"warm_start", r.warmStart},
                 {"config_sha256", r.configSha256}});
  logCommitted("run " + r.id + " created by " + trigger + " (" + reason + "): snapshot of " +
               std::to_string(snap.shards) + " shards, " + std::to_string(snap.rows) + " rows");
  return r.id;
}

void Scheduler::materialize(const RunRecord& run) {
  // Idempotent: a restart may materialize the same run again.
  const RunPaths paths = RunPaths::of(root_, run.id);
  const std::string& dir = paths.dir();
  std::optional<SnapshotRecord> snap = cat_.snapshot(run.snapshotId);
  PERENNIAL_CHECK(snap, "run " << run.id << " has no snapshot " << run.snapshotId);
  stdfs::create_directories(dir);
  if (fs::readFileIfPresent(paths.config()) != run.config) fs::writeFileAtomic(paths.config(), run.config);
  if (fs::exists(paths.data())) return;
  const std::string tmp = paths.data() + ".tmp";
  // The manifest is written as it is built (an nlohmann array of 100,000 objects took a fifth of
  // a second; BENCHMARKS.md, "Scheduler").
  std::string manifest;
  manifest.reserve(static_cast<size_t>(snap->shards) * 128 + 256);
  manifest += "{\"id\": \"" + snap->id + "\", \"shards\": " + std::to_string(snap->shards) +
              ", \"rows\": " + std::to_string(snap->rows) + ", \"manifest\": [";
  char name[64];
  bool first = true;
  std::vector<std::string> files, names;
  for (const auto& s : cat_.shards(0, snap->maxSeq, false)) {
    // Named so that the trainer's file-name order is the ingest order.
    std::snprintf(name, sizeof name, "%09lld-%.16s.h5", static_cast<long long>(s.seq), s.hash.c_str());
    files.push_back(root_ + "/" + s.file);
    names.push_back(name);
    manifest += std::string(first ? "\n" : ",\n") + " {\"seq\": " + std::to_string(s.seq) + ", \"sha256\": \"" + s.hash +
                "\", \"rows\": " + std::to_string(s.rows) + ", \"source\": " + dumpJson(json(s.source)) + "}";
    first = false;
  }
  manifest += "\n]}\n";
  data::linkShards(files, tmp, names);
  fs::writeFileAtomic(paths.snapshot(), manifest);
  fs::fsyncDir(tmp);
  stdfs::rename(tmp, paths.data());
  fs::fsyncDir(dir);
}

}  // namespace perennial::sched
