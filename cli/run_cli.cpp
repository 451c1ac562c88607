// perennial::runCli (cli/run_cli.h): dispatches to the subcommand's component.
#include "cli/run_cli.h"

#include <csignal>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/exit_codes.h"
#include "common/log.h"
#include "perennial/build_config.h"
#include "checkpoint/cli/ckpt_command.h"
#include "cli/validate_command.h"
#include "scheduler/cli/sched_command.h"
#include "trainer/cli/commands.h"

namespace {

const char* kUsage =
    "usage: perennial <command> [options]\n\n"
    "commands:\n"
    "  train     train a model, data-parallel (launch with mpirun -np N or srun)\n"
    "  eval      evaluate a trained model.h5 on a shard directory (under mpirun too)\n"
    "  ckpt      inspect | verify | diff checkpoints and weights files\n"
    "  data      import-fashion-mnist | import-csv | info | add: datasets as HDF5 shard directories\n"
    "  sched     the continuous-retraining scheduler: run | tick | status | runs | shards | events |\n"
    "            trigger | cancel\n"
    "  validate  the validation gate: judge a candidate model against the champion on a holdout\n"
    "  registry  list | show | promote | rollback | verify | export: the model registry\n"
    "  report    an HTML page of what the scheduler did: champion, quality, curves, timeline, verdicts\n"
    "  version   print the version\n\n"
    "perennial <command> --help describes each command.\n\n"
    "global options (before the command):\n"
    "  --log-format text|json  logs as text (default) or JSON lines; also PERENNIAL_LOG_FORMAT\n";

// Before MPI is initialised the rank is only known from the launcher's environment; errors are
// printed once (by rank 0) instead of once per rank.
bool isLeadProcess() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (const char* v = std::getenv(var)) return std::string(v) == "0";
  }
  return true;
}

// Global options, before the command: --log-format=text|json (--log-format FMT), or the
// environment's PERENNIAL_LOG_FORMAT (which launchers pass to every rank); the option wins. The
// choice is exported, so the processes perennial starts (runs, evaluations) log the same way.
void applyGlobalOptions(std::vector<std::string>& args) {
  std::string format, from = "PERENNIAL_LOG_FORMAT";
  if (const char* env = std::getenv("PERENNIAL_LOG_FORMAT")) format = env;
  while (!args.empty()) {
    if (args[0] == "--log-format") {
      if (args.size() < 2) throw perennial::ConfigError("--log-format: a value is required (text or json)");
      format = args[1];
      args.erase(args.begin(), args.begin() + 2);
    } else if (args[0].rfind("--log-format=", 0) == 0) {
      format = args[0].substr(std::string("--log-format=").size());
      args.erase(args.begin());
    } else {
      break;
    }
    from = "--log-format";
  }
  if (format.empty()) return;
  if (format != "text" && format != "json") {
    throw perennial::ConfigError(from + ": unknown log format '" + format + "' (expected text or json)");
  }
  perennial::log::setDefaultFormat(format);
  ::setenv("PERENNIAL_LOG_FORMAT", format.c_str(), 1);
}

void printError(const std::string& command, const std::string& what) {
  auto logger = perennial::log::get("cli");
  if (perennial::log::defaultFormat() == "json" && logger->should_log(spdlog::level::err)) {
    logger->error("perennial {}: error: {}", command, what);
  } else {
    std::cerr << "perennial " << command << ": error: " << what << "\n";
  }
}

}  // namespace

namespace perennial {

int runCli(int argc, char** argv) {
  // A write past RLIMIT_FSIZE (`ulimit -f`, a batch system's file-size limit) would otherwise
  // kill the process with SIGXFSZ, the scheduler daemon included; ignored, the write fails with
  // EFBIG and is reported like a full disk: a tick that fails and is retried, a training attempt
  // that fails with the file named, never a half-written file committed.
  std::signal(SIGXFSZ, SIG_IGN);
  std::vector<std::string> args(argv + 1, argv + argc);
  try {
    applyGlobalOptions(args);
  } catch (const perennial::ConfigError& e) {
    std::cerr << "perennial: error: " << e.what() << "\n";
    return perennial::exit_code::kUsage;
  }
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::cout << kUsage;
    return args.empty() ? perennial::exit_code::kUsage : perennial::exit_code::kOk;
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
    if (command == "docs") return perennial::cli::docsCommand(rest);
    if (command == "report") return perennial::cli::reportCommand(rest);
    if (command == "version" || command == "--version") {
      if (!rest.empty() && (rest[0] == "--help" || rest[0] == "-h")) {
        std::cout << "usage: perennial version   the version, the LibTorch it was built with (and whether it has "
                     "CUDA), and whether the NCCL communicator is built\n";
        return 0;
      }
      if (!rest.empty()) throw perennial::ConfigError("command line: unexpected argument '" + rest[0] + "'");
      std::cout << "perennial " << PERENNIAL_VERSION << "\n"
                << "LibTorch " << PERENNIAL_TORCH_VERSION << " (CUDA: " << (PERENNIAL_TORCH_CUDA ? "yes" : "no")
                << "), NCCL communicator: " << PERENNIAL_NCCL_STATUS << "\n";
      return 0;
    }
    std::cerr << "perennial: unknown command '" << command << "'\n" << kUsage;
    return perennial::exit_code::kUsage;
  } catch (const perennial::ConfigError& e) {
    if (isLeadProcess()) printError(command, e.what());
    perennial::cli::abortJobOnError(perennial::exit_code::kUsage);
    return perennial::exit_code::kUsage;
  } catch (const std::exception& e) {
    printError(command, e.what());
    std::cerr.flush();
    // The gate's exit status is its verdict, and 1 means "rejected"; an error (an unreadable
    // champion, a full disk for the verdict) is no verdict: 2, as for bad input.
    const int code = command == "validate" ? perennial::exit_code::kGateNoVerdict : perennial::exit_code::kFailure;
    perennial::cli::abortJobOnError(code);
    return code;
  }
}

}  // namespace perennial
