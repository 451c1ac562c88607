#pragma once
// The Slurm executor: one attempt is one batch job of slurm/train.sbatch, submitted with
// `sbatch --parsable` (every value passed as its own argument or in the environment, never
// through a shell), followed with squeue and `scontrol show job`, cancelled with scancel. The
// job's id is kept in RUN/attempt-<k>/job and its name is unique per attempt and root, so a
// restarted scheduler finds its jobs again. The batch script requeues itself after the trainer
// checkpointed on a signal, so preemptions and time limits within its restart budget are the
// job's own business; the scheduler sees the job's final state.
#include <string>
#include <vector>

#include "scheduler/executor.h"

namespace perennial::sched {

struct SlurmExecutorOptions {
  std::string perennial;  // the executable jobs run (default: this one)
  std::string script;     // slurm/train.sbatch
  std::string partition, account, time;  // --partition, --account, --time ("" : the cluster's default)
  int64_t cpusPerTask = 0;               // 0: not given
  std::string gpusPerNode;               // --gpus-per-node ("" : none)
  std::vector<std::string> sbatchArgs;   // more sbatch arguments
  std::string sbatch = "sbatch", squeue = "squeue", scontrol = "scontrol", scancel = "scancel";
  double commandTimeoutS = 60;
};

// Slurm's job states as the executor sees them: the attempt is running (pending, running,
// requeued, completing, suspended ...) or it ended with an exit status: COMPLETED/FAILED give
// the script's status; TIMEOUT and PREEMPTED count as checkpointed-for-requeue (75); CANCELLED,
// NODE_FAIL, BOOT_FAIL, OUT_OF_MEMORY, DEADLINE as failures named in the detail.
AttemptStatus attemptStatusFromSlurm(const std::string& state, const std::string& exitCode, const std::string& jobId);

class SlurmExecutor : public Executor {
 public:
  explicit SlurmExecutor(SlurmExecutorOptions options);
  std::string name() const override { return "slurm"; }
  std::string submit(const AttemptSpec& spec) override;
  AttemptStatus poll(const AttemptSpec& spec, const std::string& execId) override;
  void cancel(const AttemptSpec& spec, const std::string& execId) override;

  // The job name of an attempt: perennial-<run>-a<k>-<hash of the run directory>.
  static std::string jobName(const AttemptSpec& spec);

 private:
  std::string findJob(const AttemptSpec& spec, const std::string& execId);
  SlurmExecutorOptions o_;
};

}  // namespace perennial::sched
