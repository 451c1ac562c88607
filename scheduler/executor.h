#pragma once
// Executors start, follow and cancel one attempt of a training run. The scheduler keeps the
// run's state in the catalog; an executor only knows how to reach the attempt's process (or
// job) again from its run directory and handle, also after the scheduler restarted.
#include <cstdint>
#include <string>
#include <vector>

namespace perennial::sched {

struct AttemptSpec {
  std::string runId;
  int64_t attempt = 1;
  std::string runDir;                  // absolute: ROOT/runs/<id>
  std::vector<std::string> trainArgs;  // arguments after `perennial`: train --config ... --resume auto
  int64_t ranks = 1;
  std::string nodes;         // "" : ranks on whatever nodes; else "N" or "A-B" nodes (train.nodes)
  int64_t ranksPerNode = 0;  // with nodes: ranks on each node
};

enum class AttemptState {
  kNotStarted,  // nothing of this attempt exists: submitting it now is its first submission
  kRunning,
  kExited,      // finished; exitCode is the trainer's exit status
  kLost,        // it started but ended without an exit status (killed with its supervisor)
};

struct AttemptStatus {
  AttemptState state = AttemptState::kNotStarted;
  int exitCode = 0;
  std::string execId;
  std::string detail;
};

const char* attemptStateName(AttemptState s);

class Executor {
 public:
  virtual ~Executor() = default;
  virtual std::string name() const = 0;
  // Starts the attempt; returns its handle. Throws IoError when it cannot start, or when the
  // attempt is already running (it is never started twice).
  virtual std::string submit(const AttemptSpec& spec) = 0;
  virtual AttemptStatus poll(const AttemptSpec& spec, const std::string& execId) = 0;
  // Asks the attempt to stop (it may checkpoint first); a no-op when it is not running.
  virtual void cancel(const AttemptSpec& spec, const std::string& execId) = 0;
};

struct LocalExecutorOptions {
  std::string perennial;  // the executable to run (default: this one)
  std::string mpirun = "mpirun";
  std::vector<std::string> mpirunArgs;
  double cancelGraceS = 30;
};

// Runs `mpirun -np N perennial train ...` on this machine under a small supervisor
// (`perennial sched exec`) in its own session, so the run outlives a scheduler restart. The
// attempt directory RUN/attempt-<k>/ holds:
//   lock       held (flock) by the supervisor and the launcher while they live
//   pid        the supervisor's pid and the launcher's process group
//   log        the launcher's and every rank's output
//   exit.json  the exit status, written when the launcher ended
class LocalExecutor : public Executor {
 public:
  explicit LocalExecutor(LocalExecutorOptions options);
  std::string name() const override { return "local"; }
  std::string submit(const AttemptSpec& spec) override;
  AttemptStatus poll(const AttemptSpec& spec, const std::string& execId) override;
  void cancel(const AttemptSpec& spec, const std::string& execId) override;

  static std::string attemptDir(const AttemptSpec& spec);

 private:
  LocalExecutorOptions o_;
};

// `perennial sched exec --dir DIR [--grace S] -- COMMAND...`: the supervisor. Expects the
// attempt's lock on descriptor 3.
int execSupervisorMain(const std::vector<std::string>& args);

}  // namespace perennial::sched
