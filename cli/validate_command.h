#pragma once
#include <string>
#include <vector>

namespace perennial::cli {

// `perennial validate --candidate ... --holdout ...`: exit 0 pass, 1 reject, 2 bad input
// (common/exit_codes.h).
int validateCommand(const std::vector<std::string>& args);

}  // namespace perennial::cli
