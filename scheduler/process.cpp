#include "scheduler/process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "common/error.h"

extern char** environ;

namespace perennial::sched {

std::string selfExecutable() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw IoError(std::string("/proc/self/exe: cannot read the executable's path: ") + std::strerror(errno));
  return std::string(buf, static_cast<size_t>(n));
}

pid_t spawnProcess(const std::vector<std::string>& argv, const SpawnOptions& o) {
  if (argv.empty()) throw InternalError("spawnProcess: empty argv");
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (!o.logPath.empty()) {
    posix_spawn_file_actions_addopen(&fa, 1, o.logPath.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  if (o.keepFd >= 0) posix_spawn_file_actions_adddup2(&fa, o.keepFd, 3);
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if (o.newSession) flags |= POSIX_SPAWN_SETSID;
  if (o.newProcessGroup) {
    flags |= POSIX_SPAWN_SETPGROUP;
    posix_spawnattr_setpgroup(&attr, 0);
  }
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, flags);

  std::vector<std::string> envStore;
  for (char** e = environ; *e; ++e) {
    const std::string kv(*e);
    const std::string key = kv.substr(0, kv.find('='));
    bool replaced = false;
    for (const auto& extra : o.env) replaced = replaced || extra.substr(0, extra.find('=')) == key;
    if (!replaced) envStore.push_back(kv);
  }
  envStore.insert(envStore.end(), o.env.begin(), o.env.end());
  std::vector<char*> envp;
  for (auto& kv : envStore) envp.push_back(kv.data());
  envp.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &fa, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw IoError(argv[0] + ": cannot start: " + std::strerror(rc));
  return pid;
}

int exitStatusOf(int st) {
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 255;
}

int runProcess(const std::vector<std::string>& argv, const std::string& logPath, double timeoutS,
               const std::vector<std::string>& env) {
  SpawnOptions o;
  o.logPath = logPath;
  o.env = env;
  o.newProcessGroup = true;
  const pid_t pid = spawnProcess(argv, o);
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid, &st, timeoutS > 0 ? WNOHANG : 0);
    if (r == pid) return exitStatusOf(st);
    if (r < 0 && errno != EINTR) throw IoError(argv[0] + ": waitpid failed: " + std::strerror(errno));
    if (timeoutS > 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeoutS) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &st, 0);
      return -1;
    }
    if (timeoutS > 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void reapChildren() {
  int st = 0;
  while (::waitpid(-1, &st, WNOHANG) > 0) {
  }
}

}  // namespace perennial::sched
