#pragma once
// Subcommands owned by the trainer component. Each takes the arguments after its name and
// returns the process exit status; errors propagate as perennial::Error (see cli/run_cli.cpp).
#include <string>
#include <vector>

namespace perennial::cli {

int trainCommand(const std::vector<std::string>& args);
int evalCommand(const std::vector<std::string>& args);
int dataCommand(const std::vector<std::string>& args);

// Called by runCli() after printing an error: under MPI with several ranks, ends the whole job
// with CODE so that no rank is left waiting in a collective.
void abortJobOnError(int code);

}  // namespace perennial::cli
