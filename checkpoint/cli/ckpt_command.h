#pragma once
#include <string>
#include <vector>

namespace perennial::cli {

// perennial ckpt inspect FILE [--json] | verify FILE... | diff A B [--json]
int ckptCommand(const std::vector<std::string>& args);

}  // namespace perennial::cli
