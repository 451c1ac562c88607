#pragma once
// The Slurm executor: one attempt is one batch job of slurm/train.sbatch, submitted with
// `sbatch --parsable` (every value passed as its own argument or in the environment, never
// through a shell), followed with squeue and `scontrol show job`, cancelled with scancel. The
// batch script requeues itself after the trainer checkpointed on a signal, so preemptions and
// time limits within its restart budget are the job's own business; the scheduler sees the
// job's final state.
//
// NOTE [Slurm attempt identity] An attempt is submitted at most once, also across a crash of the
// scheduler at any point. RUN/attempt-<k>/ holds:
//   token         128 random bits, written and fsynced before sbatch runs; the job carries it as
//                 its --comment (squeue %k) and in PERENNIAL_JOB_TOKEN
//   job           the job id, written once sbatch answered
//   started.json  {"job_id", "token", ...}: written by train.sbatch when the job starts
//   exit.json     {"exit_code", "job_id", "token", ...}: written by train.sbatch when it ends
//   log           the job's output (--output, with '%' escaped as "%%": sbatch's file pattern)
// Without a `job` file but with a token (the scheduler died between sbatch and recording the id),
// the job is looked for with `squeue --me --states=all --name=NAME` and taken only when its user
// id is ours and its comment is the token; a job that already left Slurm's memory is recognised
// by a started.json or exit.json carrying the token. Only when neither exists is the attempt
// submitted (again, with the same token). A job of another user, or of an earlier root at the
// same path, is never adopted, whatever its name. When squeue cannot be asked, the lookup throws
// IoError instead of guessing.
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

// PATH as an sbatch filename pattern that names exactly PATH: every '%' doubled. Throws IoError
// for a path holding a backslash: Slurm removes every backslash from a pattern (and then expands
// nothing), so no pattern names such a path.
std::string slurmFilenamePattern(const std::string& path);

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
  // The attempt's job: EXECID, else the recorded id, else (with a token) the lookup of NOTE
  // [Slurm attempt identity], recording what it finds; "" when the attempt was never submitted.
  std::string findJob(const AttemptSpec& spec, const std::string& execId);
  std::string lookupJob(const AttemptSpec& spec, const std::string& token);
  SlurmExecutorOptions o_;
};

}  // namespace perennial::sched
