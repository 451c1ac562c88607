// `perennial report`: an HTML page of what the scheduler did (scheduler/report/report.h).
#include <boost/program_options.hpp>

#include <iostream>

#include "common/error.h"
#include "scheduler/cli/sched_command.h"
#include "scheduler/report/report.h"
#include "trainer/config/train_config.h"

namespace perennial::cli {

int reportCommand(const std::vector<std::string>& args) {
  namespace po = boost::program_options;
  po::options_description desc("perennial report options");
  std::string root, out, registry;
  desc.add_options()("help,h", "print this help")
      ("root", po::value<std::string>(&root), "the scheduler's root directory (required)")
      ("out", po::value<std::string>(&out), "the HTML file to write (required)")
      ("registry", po::value<std::string>(&registry), "the model registry (default: ROOT/registry)");
  po::variables_map vm;
  storeCommandLine(args, desc, vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << "usage: perennial report --root DIR --out FILE.html [--registry DIR]\n\n"
              << "Writes one self-contained HTML page (inline CSS and SVG, nothing loaded from the network) of what\n"
              << "the scheduler did: the champion and counts, model quality over time, training curves of the newest\n"
              << "runs, a timeline of arrivals, quarantines, trigger firings, runs and drift, the champion's lineage,\n"
              << "the validation gate's verdicts, and tables of runs and quarantined files. It only reads the root\n"
              << "and the registry, so it may run while the scheduler does.\n\n"
              << desc << "\nExit status: 0 written, 1 an error reading the root, 2 bad command line.\n";
    return 0;
  }
  if (root.empty()) throw ConfigError("--root: required (the scheduler's root directory)");
  if (out.empty()) throw ConfigError("--out: required (the HTML file to write)");
  sched::writeReport(root, registry, out);
  std::cout << "report: " << out << "\n";
  return 0;
}

}  // namespace perennial::cli
