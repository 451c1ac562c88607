#pragma once
// Logging: rank-prefixed, component-tagged lines through spdlog, on stderr.
// Call log::init once per process (the CLI does); loggers are created on first use.
#include <spdlog/spdlog.h>

#include <memory>
#include <string>

namespace perennial::log {

// level: trace|debug|info|warn|error|off. Throws ConfigError naming the value otherwise.
void init(int rank, int worldSize, const std::string& level);

// The logger of one component ("train", "data", "comm", ...).
std::shared_ptr<spdlog::logger> get(const std::string& component);

}  // namespace perennial::log
