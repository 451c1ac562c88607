#include "scheduler/daemon.h"

#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "common/error.h"
#include "common/log.h"
#include "scheduler/ingest.h"
#include "scheduler/slurm_executor.h"

namespace perennial::sched {
namespace stdfs = std::filesystem;

std::unique_ptr<Executor> makeExecutor(const SchedConfig& c) {
  if (c.executor == "slurm") return std::make_unique<SlurmExecutor>(c.slurm);
  return std::make_unique<LocalExecutor>(c.local);
}

SchedulerService::SchedulerService(const std::string& root, const std::string& configFile,
                                   const std::vector<std::string>& overrides)
    : root_(stdfs::absolute(root).string()) {
  if (configFile.empty()) throw ConfigError("--config: required (the scheduler configuration file)");
  config_ = loadSchedConfig(configFile, overrides);
  stdfs::create_directories(root_);
  ensureRootLayout(root_);
  catalog_ = std::make_unique<Catalog>(catalogPath(root_));
  executor_ = makeExecutor(config_);
  evaluator_ = std::make_unique<SubprocessEvaluator>(root_, config_.gate.device, config_.gate.timeoutS);
  gatekeeper_ = std::make_unique<SubprocessGatekeeper>(stdfs::absolute(configFile).string(), config_.gate.timeoutS);
  scheduler_ = std::make_unique<Scheduler>(config_, root_, *catalog_, *executor_, clock_, evaluator_.get(),
                                           gatekeeper_.get());
}

TickReport SchedulerService::tickOnce() {
  RootLock lock(root_, false);
  if (!lock.held()) throw IoError(root_ + ": another scheduler holds " + root_ + "/scheduler.lock");
  return scheduler_->tick(true);
}

void SchedulerService::runDaemon(const std::atomic<bool>& stop, int metricsPort) {
  if (metricsPort < 0 || metricsPort > 65535) {
    throw ConfigError("--metrics-port: " + std::to_string(metricsPort) + " is not a port (1 to 65535; 0: off)");
  }
  RootLock lock(root_, false);
  if (!lock.held()) throw IoError(root_ + ": another scheduler holds " + root_ + "/scheduler.lock");
  auto log = log::get("sched");
  // The metrics endpoint reads the catalog through connections of its own (metrics.h).
  TickStats ticks;
  MetricsServer metrics(catalogPath(root_), &ticks, {scheduler_->registry().dir(), config_.modelName});
  if (metricsPort > 0) {
    metrics.start(metricsPort);
    log->info("metrics on http://127.0.0.1:{}/metrics", metricsPort);
  }
  const std::string incoming = root_ + "/incoming";
  const int ino = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (ino < 0 || ::inotify_add_watch(ino, incoming.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO) < 0) {
    log->warn("inotify unavailable for {}; rescanning every {} s", incoming, config_.rescanS);
  }
  log->info("scheduler running on {} (tick {} s, rescan {} s); stop with SIGTERM", root_, config_.tickS,
            config_.rescanS);
  auto lastScan = std::chrono::steady_clock::time_point{};
  bool scan = true;
  while (!stop.load()) {
    try {
      const auto now = std::chrono::steady_clock::now();
      if (std::chrono::duration<double>(now - lastScan).count() >= config_.rescanS) scan = true;
      if (scan) lastScan = now;
      const TickReport report = scheduler_->tick(scan);
      ticks.recordTick(report.seconds, clock_.now());
    } catch (const ConfigError&) {
      if (ino >= 0) ::close(ino);
      throw;
    } catch (const std::exception& e) {
      // One bad pass (a full disk, an unreadable file) must not end the daemon; that includes
      // the std::filesystem errors of the library calls a pass makes.
      ticks.failures.fetch_add(1);
      log->error("tick failed: {}", e.what());
    }
    scan = false;
    if (stop.load()) break;
    pollfd p{ino, POLLIN, 0};
    const int r = ::poll(&p, ino >= 0 ? 1 : 0, static_cast<int>(config_.tickS * 1000));
    if (r > 0) {
      char buf[4096];
      while (::read(ino, buf, sizeof buf) > 0) {
      }
      scan = true;
    }
  }
  if (ino >= 0) ::close(ino);
  metrics.stop();
  log->info("scheduler stopped; runs in progress go on and are followed again at the next start");
}

}  // namespace perennial::sched
