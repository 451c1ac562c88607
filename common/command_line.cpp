#include "common/command_line.h"

#include <boost/program_options.hpp>

#include <map>

#include "common/error.h"

namespace po = boost::program_options;

namespace perennial {
namespace {

// Reaches the protected substitutions of a Boost.Program_options error (a pointer to a member
// named through a derived class may be applied to the base).
struct SubstitutionsOf : po::error_with_option_name {
  static std::map<std::string, std::string>& of(po::error_with_option_name& e) {
    return e.*(&SubstitutionsOf::m_substitutions);
  }
};

// The hidden option that collects the arguments that are not options.
constexpr const char* kArguments = "perennial-arguments";

}  // namespace

std::string programOptionsMessage(const po::error& e) {
  if (const auto* named = dynamic_cast<const po::error_with_option_name*>(&e)) {
    // The exception object is not const (it was thrown by value); only its message changes.
    auto& subs = SubstitutionsOf::of(const_cast<po::error_with_option_name&>(*named));
    // Every '%' of the substituted text: Boost's placeholders are not one fixed set
    // (%invalid_line% is another).
    for (auto& [key, value] : subs) {
      for (size_t at = value.find('%'); at != std::string::npos; at = value.find('%', at)) {
        value.replace(at, 1, "\xef\xbc\x85");  // U+FF05 FULLWIDTH PERCENT SIGN
      }
    }
  }
  return e.what();
}

std::vector<std::string> parseCommandLine(const std::vector<std::string>& args, const po::options_description& desc,
                                          po::variables_map& vm) {
  po::options_description all;
  all.add(desc);
  all.add_options()(kArguments, po::value<std::vector<std::string>>());
  po::positional_options_description positional;
  positional.add(kArguments, -1);
  const int style = po::command_line_style::default_style & ~po::command_line_style::allow_guessing;
  try {
    po::store(po::command_line_parser(args).options(all).positional(positional).style(style).run(), vm);
  } catch (const po::error& e) {
    throw ConfigError(std::string("command line: ") + programOptionsMessage(e));
  }
  std::vector<std::string> arguments;
  if (auto it = vm.find(kArguments); it != vm.end()) {
    arguments = it->second.as<std::vector<std::string>>();
    vm.erase(it);  // not an option of DESC
  }
  return arguments;
}

void storeCommandLine(const std::vector<std::string>& args, const po::options_description& desc,
                      po::variables_map& vm) {
  expectArguments(parseCommandLine(args, desc, vm), 0, 0, "");
}

void expectArguments(const std::vector<std::string>& arguments, size_t min, size_t max, const std::string& what) {
  if (arguments.size() > max) throw ConfigError("command line: unexpected argument '" + arguments[max] + "'");
  if (arguments.size() < min) throw ConfigError("command line: " + what + " required");
}

}  // namespace perennial
