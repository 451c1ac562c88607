#pragma once
#include <string>
#include <vector>

namespace perennial::cli {

// `perennial sched run|tick|status|runs|shards|events|trigger|cancel|exec ...`
int schedCommand(const std::vector<std::string>& args);
// `perennial data add --root DIR FILE...`
int dataAddCommand(const std::vector<std::string>& args);

}  // namespace perennial::cli
