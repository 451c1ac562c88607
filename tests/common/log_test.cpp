// Logging (common/log.h): the JSON-lines format and choosing a format.
#include "common/log.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"

namespace perennial {
namespace {

using nlohmann::json;

// The lines a logger with the JSON formatter writes for MESSAGES.
std::vector<std::string> jsonLines(const std::string& component, int rank, int worldSize,
                                   const std::vector<std::string>& messages,
                                   spdlog::level::level_enum level = spdlog::level::info) {
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  spdlog::logger logger(component, sink);
  logger.set_formatter(log::makeJsonFormatter(rank, worldSize));
  logger.set_level(spdlog::level::trace);
  for (const auto& m : messages) logger.log(level, "{}", m);
  std::vector<std::string> lines;
  std::istringstream in(out.str());
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  EXPECT_TRUE(out.str().empty() || out.str().back() == '\n');
  return lines;
}

TEST(JsonLog, OneObjectPerLineWithEveryKey) {
  const auto lines = jsonLines("sched", 3, 4, {"run r000001 -> promoted"});
  ASSERT_EQ(lines.size(), 1u);
  const json j = json::parse(lines[0]);
  EXPECT_EQ(j.size(), 6u) << lines[0];
  EXPECT_EQ(j.at("level"), "info");
  EXPECT_EQ(j.at("component"), "sched");
  EXPECT_EQ(j.at("rank"), 3);
  EXPECT_EQ(j.at("world_size"), 4);
  EXPECT_EQ(j.at("message"), "run r000001 -> promoted");
  EXPECT_TRUE(std::regex_match(
      j.at("time").get<std::string>(),
      std::regex("[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z")))
      << j.at("time");
  // The keys come in a fixed order, so lines are easy to read too.
  EXPECT_EQ(lines[0].rfind("{\"time\":\"", 0), 0u) << lines[0];
  EXPECT_NE(
      lines[0].find(
          "\",\"level\":\"info\",\"component\":\"sched\",\"rank\":3,\"world_size\":4,\"message\":"),
      std::string::npos)
      << lines[0];
}

TEST(JsonLog, TimeIsUtcWithMilliseconds) {
  auto fmt = log::makeJsonFormatter(0, 1);
  const auto t = std::chrono::system_clock::time_point(std::chrono::milliseconds(1700000000123LL));
  spdlog::details::log_msg msg(t, spdlog::source_loc{}, "data", spdlog::level::warn, "x");
  spdlog::memory_buf_t buf;
  fmt->format(msg, buf);
  const json j = json::parse(std::string(buf.data(), buf.size()));
  EXPECT_EQ(j.at("time"), "2023-11-14T22:13:20.123Z");
  EXPECT_EQ(j.at("level"), "warning");
  auto copy = fmt->clone();
  spdlog::memory_buf_t buf2;
  copy->format(msg, buf2);
  EXPECT_EQ(std::string(buf.data(), buf.size()), std::string(buf2.data(), buf2.size()));
}

TEST(JsonLog, MessagesAreEscapedAndStayOnOneLine) {
  const std::vector<std::string> messages{
      "quoted \"name\" and a back\\slash",
      "two\nlines\r\nand\ttab",
      std::string("control \x01\x1f\b\f and nul ") + std::string(1, '\0') + " inside",
      "UTF-8 stays: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
      "}{\"message\":\"forged\"}",
  };
  const auto lines = jsonLines("comp \"x\"\n", 0, 1, messages);
  ASSERT_EQ(lines.size(), messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    SCOPED_TRACE(lines[i]);
    const json j = json::parse(lines[i]);
    EXPECT_EQ(j.at("message"), messages[i]);
    EXPECT_EQ(j.at("component"), "comp \"x\"\n");
  }
  EXPECT_NE(lines[2].find("\\u0001\\u001f\\b\\f"), std::string::npos) << lines[2];
}

TEST(JsonLog, InvalidUtf8BecomesReplacementCharacters) {
  const std::vector<std::string> messages{
      "byte \xff here",          // never valid
      "cut \xe2\x82",            // truncated sequence at the end
      "overlong \xc0\xaf",       // overlong '/'
      "surrogate \xed\xa0\x80",  // UTF-16 surrogate
      "stray \x80 continuation",
  };
  const auto lines = jsonLines("x", 0, 1, messages);
  ASSERT_EQ(lines.size(), messages.size());
  const std::string r = "\xef\xbf\xbd";
  const std::vector<std::string> want{"byte " + r + " here", "cut " + r + r, "overlong " + r + r,
                                      "surrogate " + r + r + r, "stray " + r + " continuation"};
  for (size_t i = 0; i < lines.size(); ++i) {
    SCOPED_TRACE(lines[i]);
    EXPECT_EQ(json::parse(lines[i]).at("message"), want[i]);  // parses: valid UTF-8 throughout
  }
}

TEST(JsonLog, InitChoosesTheFormatAndTheThreeArgumentFormUsesTheDefault) {
  EXPECT_THROW(log::init(0, 1, "info", "xml"), ConfigError);
  EXPECT_THROW(log::setDefaultFormat("JSON"), ConfigError);

  log::init(1, 2, "info", "json");
  testing::internal::CaptureStderr();
  log::get("logtest")->info("hello \"world\"");
  std::string err = testing::internal::GetCapturedStderr();
  json j = json::parse(err);
  EXPECT_EQ(j.at("message"), "hello \"world\"");
  EXPECT_EQ(j.at("component"), "logtest");
  EXPECT_EQ(j.at("rank"), 1);
  EXPECT_EQ(j.at("world_size"), 2);

  // Text: rank-prefixed under MPI, as before.
  log::init(1, 2, "info", "text");
  testing::internal::CaptureStderr();
  log::get("logtest")->info("plain");
  err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(err, "[rank 1] info [logtest] plain\n");

  // The default set once (the CLI's --log-format) is what a later 3-argument init uses, and
  // applies to loggers that already exist and to new ones.
  log::setDefaultFormat("json");
  EXPECT_EQ(log::defaultFormat(), "json");
  log::init(0, 1, "info");
  testing::internal::CaptureStderr();
  log::get("logtest")->warn("w");
  log::get("logtest-new")->error("e");
  log::get("logtest-new")->debug("below the level");
  err = testing::internal::GetCapturedStderr();
  std::istringstream in(err);
  std::string line;
  std::vector<json> got;
  while (std::getline(in, line)) got.push_back(json::parse(line));
  ASSERT_EQ(got.size(), 2u) << err;
  EXPECT_EQ(got[0].at("level"), "warning");
  EXPECT_EQ(got[1].at("component"), "logtest-new");
  EXPECT_EQ(got[1].at("rank"), 0);

  log::setDefaultFormat("text");
  log::init(0, 1, "info");
  testing::internal::CaptureStderr();
  log::get("logtest")->info("back");
  EXPECT_EQ(testing::internal::GetCapturedStderr(), "info [logtest] back\n");
}

}  // namespace
}  // namespace perennial
