#pragma once
// The scheduler as a service on one root: its parts opened from a configuration (the catalog, the
// executor the configuration names, the subprocess evaluator and gatekeeper, the Scheduler), one
// pass, and the daemon loop. `perennial sched run|tick|cancel` and `data add` only parse their
// command lines, call these and print.
#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "scheduler/catalog.h"
#include "scheduler/clock.h"
#include "scheduler/executor.h"
#include "scheduler/metrics.h"
#include "scheduler/scheduler.h"
#include "scheduler/subprocess_gate.h"

namespace perennial::sched {

// The executor that CONFIG's executor.kind names, with its settings.
std::unique_ptr<Executor> makeExecutor(const SchedConfig& config);

class SchedulerService {
 public:
  // Reads CONFIG_FILE (OVERRIDES, "--section.key=value", win over it), then creates ROOT's
  // layout and opens its catalog: ConfigError for a bad configuration before anything is
  // created. (The kill tests stop it at a fault point with PERENNIAL_FAULT_AT: common/fault.h.)
  SchedulerService(const std::string& root, const std::string& configFile, const std::vector<std::string>& overrides);

  const SchedConfig& config() const { return config_; }
  Catalog& catalog() { return *catalog_; }
  Executor& executor() { return *executor_; }
  Scheduler& scheduler() { return *scheduler_; }

  // One pass under ROOT/scheduler.lock; IoError when another scheduler holds it.
  TickReport tickOnce();

  // The daemon: holds ROOT/scheduler.lock (IoError when another scheduler does), serves metrics
  // on 127.0.0.1:METRICS_PORT (0: none), and ticks every sched.tick_s until STOP is set, listing
  // incoming/ on inotify events and every ingest.rescan_s. A pass that fails is logged, counted
  // and retried at the next tick; only a ConfigError ends the loop (rethrown). STOP may be set
  // from a signal handler; a signal also cuts the wait between ticks short.
  void runDaemon(const std::atomic<bool>& stop, int metricsPort);

 private:
  std::string root_;
  SchedConfig config_;
  SystemClock clock_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Executor> executor_;
  std::unique_ptr<SubprocessEvaluator> evaluator_;
  std::unique_ptr<SubprocessGatekeeper> gatekeeper_;
  std::unique_ptr<Scheduler> scheduler_;
};

}  // namespace perennial::sched
