// perennial: the one CLI (cli/run_cli.h). Each subcommand lives in the component that owns it.
#include "cli/run_cli.h"

int main(int argc, char** argv) { return perennial::runCli(argc, argv); }
