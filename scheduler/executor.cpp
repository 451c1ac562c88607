#include "scheduler/executor.h"
#include "common/text.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <iostream>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/read_file.h"
#include "common/fs_util.h"
#include "scheduler/process.h"
#include "scheduler/run_paths.h"

namespace perennial::sched {
namespace {
namespace stdfs = std::filesystem;
using nlohmann::json;

// True when some process holds PATH's lock. False when the file does not exist.
bool lockHeld(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool held = ::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  ::close(fd);  // releases the probe's own lock, if it got one
  return held;
}

volatile std::sig_atomic_t gStopSignal = 0;
void onStopSignal(int sig) { gStopSignal = sig; }

}  // namespace

const char* attemptStateName(AttemptState s) {
  switch (s) {
    case AttemptState::kNotStarted: return "not-started";
    case AttemptState::kRunning: return "running";
    case AttemptState::kExited: return "exited";
    case AttemptState::kLost: return "lost";
  }
  return "?";
}

LocalExecutor::LocalExecutor(LocalExecutorOptions options) : o_(std::move(options)) {
  if (o_.perennial.empty()) o_.perennial = selfExecutable();
}

std::string LocalExecutor::attemptDir(const AttemptSpec& spec) {
  return RunPaths(spec.runDir).attempt(spec.attempt);
}

std::string LocalExecutor::submit(const AttemptSpec& spec) {
  const std::string dir = attemptDir(spec);
  stdfs::create_directories(dir);
  const std::string lockPath = dir + "/lock";
  const int fd = ::open(lockPath.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw IoError(lockPath + ": cannot create: " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    throw IoError(dir + ": this attempt is already running (its lock is held); not starting it twice");
  }
  // A previous start that never got going may have left these behind.
  std::error_code ec;
  stdfs::remove(dir + "/pid", ec);
  stdfs::remove(dir + "/exit.json", ec);

  std::vector<std::string> argv{o_.perennial, "sched", "exec", "--dir", dir,
                                "--grace", std::to_string(o_.cancelGraceS), "--",
                                o_.mpirun, "-np", std::to_string(spec.ranks)};
  argv.insert(argv.end(), o_.mpirunArgs.begin(), o_.mpirunArgs.end());
  argv.push_back(o_.perennial);
  argv.insert(argv.end(), spec.trainArgs.begin(), spec.trainArgs.end());
  SpawnOptions so;
  so.logPath = dir + "/log";
  so.keepFd = fd;
  so.newSession = true;
  pid_t pid = -1;
  try {
    pid = spawnProcess(argv, so);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);  // the supervisor holds the lock now (same open file description)
  return std::to_string(pid);
}

AttemptStatus LocalExecutor::poll(const AttemptSpec& spec, const std::string& execId) {
  const std::string dir = attemptDir(spec);
  AttemptStatus s;
  s.execId = execId;
  if (stdfs::exists(dir + "/pid")) {
    try {
      s.execId = std::to_string(json::parse(fs::readFileIfPresent(dir + "/pid")).at("pid").get<int64_t>());
    } catch (const std::exception&) {
    }
  }
  if (lockHeld(dir + "/lock")) {
    s.state = AttemptState::kRunning;
    return s;
  }
  if (stdfs::exists(dir + "/exit.json")) {
    try {
      json j = json::parse(fs::readFileIfPresent(dir + "/exit.json"));
      s.state = AttemptState::kExited;
      s.exitCode = j.at("exit_code").get<int>();
      s.detail = j.value("detail", "");
      return s;
    } catch (const std::exception& e) {
      s.state = AttemptState::kLost;
      s.detail = dir + "/exit.json: unreadable: " + e.what();
      return s;
    }
  }
  if (stdfs::exists(dir + "/pid")) {
    s.state = AttemptState::kLost;
    s.detail = "its supervisor ended without recording an exit status (killed?)";
    return s;
  }
  s.state = AttemptState::kNotStarted;
  return s;
}

void LocalExecutor::cancel(const AttemptSpec& spec, const std::string&) {
  const std::string dir = attemptDir(spec);
  if (!lockHeld(dir + "/lock")) return;
  try {
    json j = json::parse(fs::readFileIfPresent(dir + "/pid"));
    const auto pgid = j.at("child_pgid").get<pid_t>();
    const auto pid = j.at("pid").get<pid_t>();
    if (pgid > 1) ::kill(-pgid, SIGTERM);
    if (pid > 1) ::kill(pid, SIGTERM);
  } catch (const std::exception& e) {
    throw IoError(dir + "/pid: cannot cancel the attempt: " + e.what());
  }
}

namespace {
const char* const kExecUsage = "usage: perennial sched exec --dir DIR [--grace S] -- COMMAND...";
}  // namespace

int execSupervisorMain(const std::vector<std::string>& args) {
  std::string dir;
  double grace = 30;
  size_t i = 0;
  for (; i < args.size(); ++i) {
    if (args[i] == "--") {
      ++i;
      break;
    }
    if (args[i] == "--help" || args[i] == "-h") {
      std::cout << kExecUsage << "\n  the supervisor the local executor starts for each attempt: it runs COMMAND in its own\n"
                   "  process group, holds DIR's attempt lock while it runs, forwards SIGTERM and gives it\n"
                   "  --grace seconds (default 30) before SIGKILL, and records its exit in DIR\n";
      return 0;
    }
    if (args[i] == "--dir" && i + 1 < args.size()) {
      dir = args[++i];
    } else if (args[i] == "--grace" && i + 1 < args.size()) {
      const std::string value = args[++i];
      char* end = nullptr;
      grace = std::strtod(value.c_str(), &end);
      if (value.empty() || *end != '\0' || !(grace >= 0)) {
        throw ConfigError("sched exec: --grace: seconds, at least 0 (got '" + value + "')");
      }
    } else {
      throw ConfigError("sched exec: unexpected argument '" + args[i] + "'");
    }
  }
  if (dir.empty() || i >= args.size()) throw ConfigError(kExecUsage);
  std::vector<std::string> command(args.begin() + static_cast<long>(i), args.end());

  struct sigaction sa {};
  sa.sa_handler = onStopSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGTERM, SIGINT, SIGHUP}) ::sigaction(sig, &sa, nullptr);

  // The launcher inherits descriptor 3 (the lock): the attempt counts as running while any of
  // them lives.
  SpawnOptions so;
  so.newProcessGroup = true;
  so.keepFd = 3;
  const pid_t child = spawnProcess(command, so);
  fs::writeFileAtomic(dir + "/pid", dumpJson(json{{"pid", ::getpid()}, {"child_pid", child}, {"child_pgid", child}}) + "\n");

  int status = 0;
  bool forwarded = false;
  auto deadline = std::chrono::steady_clock::time_point::max();
  for (;;) {
    const pid_t r = ::waitpid(child, &status, WNOHANG);
    if (r == child) break;
    if (r < 0 && errno != EINTR) {
      status = 255 << 8;
      break;
    }
    if (gStopSignal && !forwarded) {
      forwarded = true;
      ::kill(-child, SIGTERM);
      deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(grace * 1000));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(-child, SIGKILL);
      deadline = std::chrono::steady_clock::time_point::max();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const int code = exitStatusOf(status);
  std::string detail = WIFSIGNALED(status) ? std::string("killed by signal ") + strsignal(WTERMSIG(status)) : "";
  if (forwarded) detail += std::string(detail.empty() ? "" : "; ") + "stopped by signal " + std::to_string(gStopSignal);
  fs::writeFileAtomic(dir + "/exit.json", dumpJson(json{{"exit_code", code}, {"detail", detail}}) + "\n");
  return code;
}

}  // namespace perennial::sched
