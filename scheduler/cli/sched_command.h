#pragma once
#include <string>
#include <vector>

namespace perennial::cli {

// `perennial sched run|tick|status|runs|shards|events|trigger|cancel|exec ...`
int schedCommand(const std::vector<std::string>& args);
// `perennial data add --root DIR FILE...`
int dataAddCommand(const std::vector<std::string>& args);
// `perennial docs config`: the configuration reference, generated from the option definitions.
int docsCommand(const std::vector<std::string>& args);
// `perennial registry list|show|promote|rollback|verify|export ...`
int registryCommand(const std::vector<std::string>& args);
// `perennial report --root DIR --out FILE.html`: an HTML page of what the scheduler did.
int reportCommand(const std::vector<std::string>& args);

}  // namespace perennial::cli
