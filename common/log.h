#pragma once
// Logging: component-tagged lines through spdlog, on stderr. Call log::init once per process
// (the CLI does); loggers are created on first use.
//
// Two formats: "text" (the default, for people: `info [sched] message`, prefixed with
// `[rank R]` under MPI) and "json" (for log collectors: one JSON object per line with "time"
// (ISO-8601 UTC, milliseconds), "level", "component", "rank", "world_size" and "message").
// The CLI sets the format from `--log-format` or PERENNIAL_LOG_FORMAT (setDefaultFormat).
#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <string_view>

namespace perennial::log {

// level: trace|debug|info|warn|error|off; format: text|json. Throws ConfigError naming the value
// otherwise. The first form uses the default format (setDefaultFormat; "text" unless set).
void init(int rank, int worldSize, const std::string& level);
void init(int rank, int worldSize, const std::string& level, const std::string& format);

// Sets the format in use: every later init without a format, and every logger, uses it; applies
// at once to the loggers that exist. Throws ConfigError for anything but text|json. (An init with
// a format sets it too.)
void setDefaultFormat(const std::string& format);
std::string defaultFormat();

// TEXT (a file name, someone else's bytes) for a log message: escaped by printable()
// (common/text.h) in the text format, so it can neither forge a line nor repaint a terminal;
// as it is in the JSON format, whose encoder escapes it and names it exactly.
std::string shown(std::string_view text);

// The JSON-lines formatter (exposed for tests): one object per message, newline-terminated;
// the message is JSON-escaped and invalid UTF-8 is replaced by U+FFFD.
std::unique_ptr<spdlog::formatter> makeJsonFormatter(int rank, int worldSize);

// The logger of one component ("train", "data", "comm", ...).
std::shared_ptr<spdlog::logger> get(const std::string& component);

}  // namespace perennial::log
