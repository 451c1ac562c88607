#pragma once
// Command lines of the subcommands, all parsed the same way (Boost.Program_options): option
// names are never abbreviated (--train.epoch must not silently mean --train.epochs); options and
// arguments may come in any order; every error is ConfigError("command line: ..."), which the CLI
// turns into exit status 2 (bad usage).
#include <cstddef>
#include <string>
#include <vector>

namespace boost::program_options {
class error;
class options_description;
class variables_map;
}  // namespace boost::program_options

namespace perennial {

// Parses ARGS into VM by DESC (po::store: the caller calls po::notify) and returns the arguments
// that are not options, in order.
std::vector<std::string> parseCommandLine(const std::vector<std::string>& args,
                                          const boost::program_options::options_description& desc,
                                          boost::program_options::variables_map& vm);

// parseCommandLine for a command that takes no arguments besides its options: refuses the first
// one ("command line: unexpected argument 'X'").
void storeCommandLine(const std::vector<std::string>& args,
                      const boost::program_options::options_description& desc,
                      boost::program_options::variables_map& vm);

// Checks that there are between MIN and MAX arguments: ConfigError "command line: unexpected
// argument 'X'" for the first one too many, "command line: WHAT required" when there are too few.
void expectArguments(const std::vector<std::string>& arguments, size_t min, size_t max, const std::string& what);

// The message of a Boost.Program_options error, for every catch of one. Boost 1.74's what()
// replaces each placeholder (%value%, %option%, ...) until none is left, so a value or option name
// that itself contains one (a configuration with "x = %value%") made it loop forever: every '%'
// of the user's text in the message is shown as a fullwidth percent sign instead.
std::string programOptionsMessage(const boost::program_options::error& e);

}  // namespace perennial
