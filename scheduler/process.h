#pragma once
// Child processes without a shell: argv vectors go to posix_spawn as they are, so no value (a
// run name, a path, a config value) is ever interpreted by a shell.
#include <sys/types.h>

#include <string>
#include <vector>

namespace perennial::sched {

// The running executable (/proc/self/exe), so children run the same `perennial`.
std::string selfExecutable();

struct SpawnOptions {
  std::string logPath;   // stdout and stderr are appended here ("" : inherit)
  int keepFd = -1;       // passed to the child as descriptor 3 (for example a held lock)
  bool newSession = false;  // setsid(): the child outlives and ignores the parent's terminal
  bool newProcessGroup = false;
  std::vector<std::string> env;  // "NAME=value" entries added to (or replacing in) the environment
};

// Starts ARGV[0] (searched in PATH when it has no slash). Throws IoError naming the program.
pid_t spawnProcess(const std::vector<std::string>& argv, const SpawnOptions& options);

// Runs ARGV to completion and returns its exit status (128 + signal when killed). With a
// TIMEOUT_S > 0 the child's process group is killed when it runs longer, and -1 returned.
int runProcess(const std::vector<std::string>& argv, const std::string& logPath, double timeoutS = 0,
               const std::vector<std::string>& env = {});

struct ProcessOutput {
  int status = 0;  // exit status, 128 + signal, or -1 after a timeout
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs ARGV to completion and returns its status and output (for sbatch, squeue, ...). With a
// TIMEOUT_S > 0 the child is killed when it runs longer. Throws IoError when it cannot start.
ProcessOutput captureProcess(const std::vector<std::string>& argv, double timeoutS = 60,
                             const std::vector<std::string>& env = {});

// Exit status of a waitpid() status word: the exit code, or 128 + signal.
int exitStatusOf(int waitStatus);

// Reaps finished children without blocking (the daemon's detached wrappers).
void reapChildren();

}  // namespace perennial::sched
