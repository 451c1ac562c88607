#include "scheduler/process.h"

#include <fcntl.h>
#include <poll.h>
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

ProcessOutput captureProcess(const std::vector<std::string>& argv, double timeoutS,
                             const std::vector<std::string>& env) {
  int outPipe[2], errPipe[2];
  if (::pipe2(outPipe, O_CLOEXEC) != 0) throw IoError(std::string("pipe: ") + std::strerror(errno));
  if (::pipe2(errPipe, O_CLOEXEC) != 0) {
    ::close(outPipe[0]);
    ::close(outPipe[1]);
    throw IoError(std::string("pipe: ") + std::strerror(errno));
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> envStore;
  for (char** e = environ; *e; ++e) envStore.emplace_back(*e);
  envStore.insert(envStore.end(), env.begin(), env.end());
  std::vector<char*> envp;
  for (auto& kv : envStore) envp.push_back(kv.data());
  envp.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&fa, outPipe[1], 1);
  posix_spawn_file_actions_adddup2(&fa, errPipe[1], 2);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attr, 0);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &fa, &attr, args.data(), envp.data());
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(outPipe[1]);
  ::close(errPipe[1]);
  if (rc != 0) {
    ::close(outPipe[0]);
    ::close(errPipe[0]);
    throw IoError(argv[0] + ": cannot start: " + std::strerror(rc));
  }
  ProcessOutput out;
  const auto start = std::chrono::steady_clock::now();
  pollfd fds[2] = {{outPipe[0], POLLIN, 0}, {errPipe[0], POLLIN, 0}};
  int open = 2;
  bool timedOut = false;
  char buf[4096];
  while (open > 0) {
    const int r = ::poll(fds, 2, 100);
    if (r < 0 && errno != EINTR) break;
    for (auto& f : fds) {
      if (f.fd < 0 || !(f.revents & (POLLIN | POLLHUP | POLLERR))) continue;
      const ssize_t n = ::read(f.fd, buf, sizeof buf);
      if (n > 0) {
        (f.fd == outPipe[0] ? out.out : out.err).append(buf, static_cast<size_t>(n));
      } else {
        ::close(f.fd);
        f.fd = -1;
        --open;
      }
    }
    if (timeoutS > 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeoutS) {
      ::kill(-pid, SIGKILL);
      timedOut = true;
      break;
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) ::close(f.fd);
  }
  int st = 0;
  while (::waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  out.status = timedOut ? -1 : exitStatusOf(st);
  return out;
}

void reapChildren() {
  int st = 0;
  while (::waitpid(-1, &st, WNOHANG) > 0) {
  }
}

}  // namespace perennial::sched
