// perennial: the one CLI. Each subcommand lives in the component that owns it.
//
// Exit codes: 0 success; 1 failure (bad data, I/O, communication, internal error);
// 2 bad usage or configuration (unknown key, wrong type, out-of-range value);
// 75 (train) a signal made the run checkpoint and stop: requeue it with --resume auto.
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "common/error.h"
#include "perennial/build_config.h"
#include "checkpoint/cli/ckpt_command.h"
#include "scheduler/cli/sched_command.h"
#include "trainer/cli/commands.h"

namespace {

const char* kUsage =
    "usage: perennial <command> [options]\n\n"
    "commands:\n"
    "  train     train a model, data-parallel (launch with mpirun -np N or srun)\n"
    "  eval      evaluate a trained model.h5 on a shard directory (under mpirun too)\n"
    "  ckpt      inspect | verify | diff checkpoints and weights files\n"
    "  data      import-fashion-mnist | info | add: datasets as HDF5 shard directories\n"
    "  sched     the continuous-retraining scheduler: run | tick | status | runs | shards | events |\n"
    "            trigger | cancel\n"
    "  validate  the validation gate: judge a candidate model against the champion on a holdout\n"
    "  registry  list | show | promote | rollback | verify | export: the model registry\n"
    "  version   print the version\n\n"
    "perennial <command> --help describes each command.\n";

// Before MPI is initialised the rank is only known from the launcher's environment; errors are
// printed once (by rank 0) instead of once per rank.
bool isLeadProcess() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (const char* v = std::getenv(var)) return std::string(v) == "0";
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  std::vector<std::string> rest(args.begin() + 1, args.end());
  try {
    if (command == "train") return perennial::cli::trainCommand(rest);
    if (command == "ckpt") return perennial::cli::ckptCommand(rest);
    if (command == "eval") return perennial::cli::evalCommand(rest);
    if (command == "data" && !rest.empty() && rest[0] == "add") {
      return perennial::cli::dataAddCommand({rest.begin() + 1, rest.end()});
    }
    if (command == "data") return perennial::cli::dataCommand(rest);
    if (command == "sched") return perennial::cli::schedCommand(rest);
    if (command == "validate") return perennial::cli::validateCommand(rest);
    if (command == "registry") return perennial::cli::registryCommand(rest);
    if (command == "version" || command == "--version") {
      std::cout << "perennial " << PERENNIAL_VERSION << "\n";
      return 0;
    }
    std::cerr << "perennial: unknown command '" << command << "'\n" << kUsage;
    return 2;
  } catch (const perennial::ConfigError& e) {
    if (isLeadProcess()) std::cerr << "perennial " << command << ": error: " << e.what() << "\n";
    perennial::cli::abortJobOnError(2);
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "perennial " << command << ": error: " << e.what() << "\n";
    std::cerr.flush();
    perennial::cli::abortJobOnError(1);
    return 1;
  }
}
