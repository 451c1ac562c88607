#pragma once
// The scheduler's configuration (INI, Boost.Program_options syntax like the trainer's):
//   [dataset]   the dataset spec every shard is validated against, and ingest limits
//   [ingest]    rescan interval and settle time of incoming/
//   [train]     the training config, holdout set, ranks, warm start, attempts
//   [triggers]  which triggers are on and their thresholds; cool-down; concurrency
//   [executor]  local (mpirun) settings
//   [sched]     the daemon's tick interval
// Relative paths in the file are relative to the file's directory. Errors are ConfigError
// naming the file, the key and the rule.
#include <cstdint>
#include <string>
#include <vector>

#include "dataset/shard_validator.h"
#include "scheduler/executor.h"
#include "scheduler/gate.h"
#include "scheduler/slurm_executor.h"

namespace boost::program_options {
class options_description;
}  // namespace boost::program_options

namespace perennial::sched {

struct SchedConfig {
  std::string source;  // the file it came from
  data::DatasetRules dataset;
  // [ingest]
  double rescanS = 10;
  double settleS = 0;
  // [train]
  std::string trainConfig;  // absolute path of the trainer's INI file
  std::string holdout;      // absolute path of the evaluation shard directory
  int64_t ranks = 2;         // ranks of a run (with nodes: the largest, maxNodes() x ranksPerNode)
  std::string nodes;         // "" (ranks as above), "N" or a range "A-B": nodes of each run (Slurm)
  int64_t ranksPerNode = 0;  // with nodes: ranks on each node
  std::string warmStart = "scratch";  // scratch | champion
  int64_t maxAttempts = 3;
  // [triggers]
  bool onDemand = true;
  double intervalS = 0;       // 0: off
  int64_t newDataRows = 0;    // 0: off
  double driftPsi = 0;        // 0: off
  int64_t driftMinRows = 1000;
  double decayMargin = 0;     // 0: off
  int64_t decayMinRows = 1000;
  double cooldownS = 0;
  int64_t maxConcurrent = 1;
  // [executor]
  std::string executor = "local";
  LocalExecutorOptions local;  // mpirun, mpirun_args, cancel_grace_s
  // [slurm] (executor.kind = slurm): script (absolute path of slurm/train.sbatch), partition,
  // account, time, cpus_per_task, gpus_per_node, sbatch_args
  SlurmExecutorOptions slurm;
  // [sched]
  double tickS = 2;
  // [gate] (gate.h)
  GateConfig gate;
  // [registry]
  std::string registryDir;  // "" : ROOT/registry
  std::string modelName;    // "" : dataset.name
  std::vector<std::string> onPromote;  // command run after each promotion (no shell)
  double onPromoteTimeoutS = 600;
};

// Reads FILE; OVERRIDES are "--section.key=value" arguments that win over the file.
SchedConfig loadSchedConfig(const std::string& file, const std::vector<std::string>& overrides = {});

// Every key with its default and meaning, for --help and the docs.
std::string schedConfigHelp();
// The option definitions themselves (the configuration reference is generated from them).
boost::program_options::options_description schedConfigOptions();

}  // namespace perennial::sched
