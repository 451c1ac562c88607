#pragma once
// The scheduler: one tick ingests what arrived, follows the active runs, evaluates the
// triggers, creates at most one run and submits pending runs. All of its state is in the
// catalog; each state change is one transaction, so a scheduler killed anywhere and restarted
// submits no run twice, loses no run and ingests no shard twice (tests/sched/kill_test).
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/exit_codes.h"
#include "common/fault.h"
#include "scheduler/catalog.h"
#include "scheduler/clock.h"
#include "scheduler/executor.h"
#include "scheduler/gate.h"
#include "scheduler/ingest.h"
#include "scheduler/registry.h"
#include "scheduler/sched_config.h"
#include "scheduler/triggers.h"

namespace perennial::sched {

struct TickReport {
  std::vector<IngestOutcome> ingested;
  std::vector<std::string> created;                              // run ids
  std::vector<std::pair<std::string, RunState>> transitions;  // (run id, new state)
  std::vector<std::pair<std::string, TriggerDecision>> decisions;
  double seconds = 0;
};

// Runs the validation gate on a candidate (the CLI runs `perennial validate` in a child process).
struct GateOutcome {
  int exitCode = exit_code::kGateNoVerdict;  // kGatePass, kGateReject, other: could not judge
  std::optional<Verdict> verdict;            // verdict.json, when written and readable
  std::string verdictProblem;                // why there is none ("" when there is one)
  std::string error;
};
class Gatekeeper {
 public:
  virtual ~Gatekeeper() = default;
  // CHAMPION is "" for the first model. Writes the verdict to VERDICT_PATH.
  virtual GateOutcome validate(const std::string& candidate, const std::string& champion,
                               const std::vector<std::string>& holdout, const std::string& verdictPath) = 0;
};

// An exclusive lock on ROOT/scheduler.lock: one scheduler (daemon or tick) per root.
class RootLock {
 public:
  // With WAIT false, returns an unlocked object when another process holds it (see held()).
  RootLock(const std::string& root, bool wait);
  ~RootLock();
  RootLock(const RootLock&) = delete;
  RootLock& operator=(const RootLock&) = delete;
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

class Scheduler {
 public:
  // Throws ConfigError when the training configuration does not resolve.
  // With a GATEKEEPER, a run whose training succeeded is validated and, passing, published to
  // the registry and promoted; without one it becomes the champion directly.
  Scheduler(SchedConfig config, std::string root, Catalog& catalog, Executor& executor, Clock& clock,
            Evaluator* evaluator, Gatekeeper* gatekeeper = nullptr);

  // One pass. SCAN_INCOMING false skips listing incoming/ (the daemon scans on inotify events
  // and every ingest.rescan_s).
  TickReport tick(bool scanIncoming = true);

  // Processes open cancel requests (also used by `sched cancel` when no daemon runs).
  void handleCancelRequests(TickReport& report);

  Ingester& ingester() { return ingester_; }
  Registry& registry() { return registry_; }

  // The resolved training configuration of a run (INI text).
  std::string resolveTrainConfig(const std::string& runId, const std::string& warmFrom);
  AttemptSpec attemptSpec(const RunRecord& run) const;

 private:
  void followActiveRuns(TickReport& report);
  void validateRun(RunRecord& run, TickReport& report);
  // The registry's champion and why it cannot be used (empty: it can); a change is recorded
  // (catalog meta `champion_damaged`, a champion_damaged or champion_repaired event). Cached by
  // the version's files' identities, so a tick re-hashes nothing that did not change.
  struct ChampionHealth {
    std::optional<std::string> version;
    std::vector<std::string> problems;
  };
  ChampionHealth checkChampion();
  void syncChampion();
  nlohmann::json lineageOf(const RunRecord& run, const std::string& parentVersion);
  void evaluateTriggers(TickReport& report);
  void submitPending(TickReport& report);
  void submitAttempt(RunRecord& run, TickReport& report);
  void finishAttempt(RunRecord& run, const AttemptStatus& status, TickReport& report);
  void setState(RunRecord& run, RunState state, const std::string& message, TickReport& report,
                nlohmann::json detail = nlohmann::json::object());
  std::string createRun(const std::string& trigger, const std::string& reason, TriggerContext& ctx);
  SnapshotRecord buildSnapshot(int64_t maxSeq);
  void materialize(const RunRecord& run);
  // A fault point between the steps of run handling (NOTE [Fault points], common/fault.h).
  static void fault(const std::string& step) { perennial::fault::reached(step); }
  // One catalog transaction; the lines logged inside it (state changes, new runs) are written
  // once it has committed, so a pass that fails (a full disk) never logs a change it did not make.
  void transaction(const std::function<void()>& body);
  void logCommitted(std::string line);

  SchedConfig config_;
  std::string root_;
  Catalog& cat_;
  Executor& exec_;
  Clock& clock_;
  Evaluator* evaluator_;
  Gatekeeper* gatekeeper_;
  Registry registry_;
  Ingester ingester_;
  std::vector<std::unique_ptr<Trigger>> triggers_;
  std::map<std::string, bool> lastFired_;
  std::map<std::string, std::string> lastKey_;  // the data each trigger last measured
  std::set<std::string> cancelSent_;
  std::string championKey_;                     // what checkChampion last examined
  std::vector<std::string> championProblems_;  // and found
  int transactionDepth_ = 0;
  std::vector<std::string> uncommittedLog_;
};

}  // namespace perennial::sched
