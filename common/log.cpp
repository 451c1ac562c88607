#include "common/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <string_view>

#include "common/error.h"
#include "common/text.h"

namespace perennial::log {
namespace {

std::mutex mu;
spdlog::level::level_enum level = spdlog::level::info;
std::string format = "text";  // the default format, and the one in use
int curRank = 0;
int curWorldSize = 1;

void checkFormat(const std::string& f) {
  if (f != "text" && f != "json") {
    throw ConfigError("log format: unknown format '" + f + "' (expected text or json)");
  }
}

// The length of the valid UTF-8 sequence at S[I] (a byte >= 0x80), or 0 when it is not one
// (stray continuation bytes, overlong forms, surrogates, code points past U+10FFFF, truncation).
size_t utf8SequenceAt(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char c = byte(i);
  size_t n = 0;
  uint32_t cp = 0;
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
    cp = c & 0x1Fu;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    cp = c & 0x0Fu;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    cp = c & 0x07u;
  } else {
    return 0;
  }
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((byte(i + k) & 0xC0u) != 0x80u) return 0;
    cp = (cp << 6) | (byte(i + k) & 0x3Fu);
  }
  if (n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
  if (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
  return n;
}

void append(spdlog::memory_buf_t& out, std::string_view s) {
  out.append(s.data(), s.data() + s.size());
}

// S as a JSON string (quotes included).
void appendJsonString(spdlog::memory_buf_t& out, std::string_view s) {
  out.push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x80) {
      const size_t n = utf8SequenceAt(s, i);
      if (n == 0) {
        append(out, "\xEF\xBF\xBD");  // U+FFFD for each byte that is not valid UTF-8
        ++i;
      } else {
        append(out, s.substr(i, n));
        i += n;
      }
      continue;
    }
    switch (c) {
      case '"':
        append(out, "\\\"");
        break;
      case '\\':
        append(out, "\\\\");
        break;
      case '\n':
        append(out, "\\n");
        break;
      case '\r':
        append(out, "\\r");
        break;
      case '\t':
        append(out, "\\t");
        break;
      case '\b':
        append(out, "\\b");
        break;
      case '\f':
        append(out, "\\f");
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned>(c));
          append(out, buf);
        } else {
          out.push_back(static_cast<char>(c));
        }
    }
    ++i;
  }
  out.push_back('"');
}

class JsonFormatter : public spdlog::formatter {
 public:
  JsonFormatter(int rank, int worldSize) : rank_(rank), worldSize_(worldSize) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    using namespace std::chrono;
    const int64_t ms = duration_cast<milliseconds>(msg.time.time_since_epoch()).count();
    const std::time_t secs = static_cast<std::time_t>(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    const int millis = static_cast<int>(ms - static_cast<int64_t>(secs) * 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char when[40];
    const size_t len = std::strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    std::snprintf(when + len, sizeof when - len, ".%03dZ", millis);
    append(dest, "{\"time\":\"");
    append(dest, when);
    append(dest, "\",\"level\":");
    const auto lvl = spdlog::level::to_string_view(msg.level);
    appendJsonString(dest, std::string_view(lvl.data(), lvl.size()));
    append(dest, ",\"component\":");
    appendJsonString(dest, std::string_view(msg.logger_name.data(), msg.logger_name.size()));
    append(dest, ",\"rank\":");
    append(dest, std::to_string(rank_));
    append(dest, ",\"world_size\":");
    append(dest, std::to_string(worldSize_));
    append(dest, ",\"message\":");
    appendJsonString(dest, std::string_view(msg.payload.data(), msg.payload.size()));
    append(dest, "}\n");
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>(rank_, worldSize_);
  }

 private:
  int rank_, worldSize_;
};

// Applies the current format and level to L (mu held).
void configure(spdlog::logger& l) {
  if (format == "json") {
    l.set_formatter(makeJsonFormatter(curRank, curWorldSize));
  } else {
    // Under MPI every line names its rank, so interleaved output stays readable.
    l.set_pattern(curWorldSize > 1 ? "[rank " + std::to_string(curRank) + "] %^%l%$ [%n] %v"
                                   : "%^%l%$ [%n] %v");
  }
  l.set_level(level);
}

}  // namespace

std::string shown(std::string_view text) {
  std::lock_guard<std::mutex> lock(mu);
  return format == "json" ? std::string(text) : printable(text);
}

std::unique_ptr<spdlog::formatter> makeJsonFormatter(int rank, int worldSize) {
  return std::make_unique<JsonFormatter>(rank, worldSize);
}

void init(int rank, int worldSize, const std::string& levelName) {
  std::string f;
  {
    std::lock_guard<std::mutex> lock(mu);
    f = format;
  }
  init(rank, worldSize, levelName, f);
}

void init(int rank, int worldSize, const std::string& levelName, const std::string& formatName) {
  auto lvl = spdlog::level::from_str(levelName);
  if (lvl == spdlog::level::off && levelName != "off") {
    throw ConfigError("log.level: unknown level '" + levelName +
                      "' (expected trace, debug, info, warn, error or off)");
  }
  checkFormat(formatName);
  std::lock_guard<std::mutex> lock(mu);
  level = lvl;
  format = formatName;
  curRank = rank;
  curWorldSize = worldSize;
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { configure(*l); });
}

void setDefaultFormat(const std::string& formatName) {
  checkFormat(formatName);
  std::lock_guard<std::mutex> lock(mu);
  format = formatName;
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { configure(*l); });
}

std::string defaultFormat() {
  std::lock_guard<std::mutex> lock(mu);
  return format;
}

std::shared_ptr<spdlog::logger> get(const std::string& component) {
  std::lock_guard<std::mutex> lock(mu);
  if (auto existing = spdlog::get(component)) return existing;
  auto logger = spdlog::stderr_logger_mt(component);
  configure(*logger);
  return logger;
}

}  // namespace perennial::log
