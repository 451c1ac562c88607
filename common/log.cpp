#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>

#include "common/error.h"

namespace perennial::log {
namespace {

std::mutex mu;
std::string pattern = "%^%l%$ [%n] %v";
spdlog::level::level_enum level = spdlog::level::info;

}  // namespace

void init(int rank, int worldSize, const std::string& levelName) {
  auto lvl = spdlog::level::from_str(levelName);
  if (lvl == spdlog::level::off && levelName != "off") {
    throw ConfigError("log.level: unknown level '" + levelName +
                      "' (expected trace, debug, info, warn, error or off)");
  }
  std::lock_guard<std::mutex> lock(mu);
  level = lvl;
  // Under MPI every line names its rank, so interleaved output stays readable.
  pattern = worldSize > 1 ? "[rank " + std::to_string(rank) + "] %^%l%$ [%n] %v" : "%^%l%$ [%n] %v";
  spdlog::apply_all([&](std::shared_ptr<spdlog::logger> l) {
    l->set_pattern(pattern);
    l->set_level(level);
  });
}

std::shared_ptr<spdlog::logger> get(const std::string& component) {
  std::lock_guard<std::mutex> lock(mu);
  if (auto existing = spdlog::get(component)) return existing;
  auto logger = spdlog::stderr_logger_mt(component);
  logger->set_pattern(pattern);
  logger->set_level(level);
  return logger;
}

}  // namespace perennial::log
