#include "trainer/config/train_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "tiny_dataset.h"

namespace perennial {
namespace {

std::vector<std::string> base() {
  return {"--run-dir", "/tmp/unused", "--data.train", "tr", "--data.test", "te"};
}

std::string errorOf(std::vector<std::string> args) {
  try {
    parseTrainArgs(args);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string writeConfig(const std::string& name, const std::string& text) {
  auto path = std::filesystem::temp_directory_path() / ("perennial-config-test-" + name + ".cfg");
  std::ofstream(path) << text;
  return path.string();
}

TEST(Config, DefaultsParse) {
  TrainArgs a = parseTrainArgs(base());
  EXPECT_EQ(a.config.arch, "mlp");
  EXPECT_EQ(a.config.hidden, (std::vector<int64_t>{256, 128, 100}));
  EXPECT_EQ(a.config.bucketCapMb, 25.0);
  EXPECT_EQ(a.runDir, "/tmp/unused");
}

TEST(Config, FileValuesAndCommandLineOverrides) {
  auto path = writeConfig("override", "[train]\nepochs = 7\nbatch_size = 32\n[model]\narch = cnn\n");
  auto args = base();
  args.insert(args.end(), {"--config", path, "--train.epochs=3"});
  TrainArgs a = parseTrainArgs(args);
  EXPECT_EQ(a.config.epochs, 3) << "the command line wins over the file";
  EXPECT_EQ(a.config.batchSize, 32);
  EXPECT_EQ(a.config.arch, "cnn");
}

TEST(Config, UnknownKeyInFileNamesFileAndKey) {
  auto path = writeConfig("unknown", "[train]\nepochz = 7\n");
  auto args = base();
  args.insert(args.end(), {"--config", path});
  std::string e = errorOf(args);
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("train.epochz"), std::string::npos) << e;
}

TEST(Config, UnknownKeyOnCommandLine) {
  auto args = base();
  args.push_back("--train.nope=1");
  std::string e = errorOf(args);
  EXPECT_NE(e.find("train.nope"), std::string::npos) << e;
}

TEST(Config, PrefixesAreNotGuessed) {
  auto args = base();
  args.push_back("--train.epoch=3");
  EXPECT_NE(errorOf(args).find("train.epoch"), std::string::npos);
}

TEST(Config, WrongTypeNamesKey) {
  auto args = base();
  args.push_back("--train.epochs=many");
  std::string e = errorOf(args);
  EXPECT_NE(e.find("train.epochs"), std::string::npos) << e;
}

TEST(Config, WrongTypeInFileNamesFileAndKey) {
  auto path = writeConfig("type", "[optim]\nlr = fast\n");
  auto args = base();
  args.insert(args.end(), {"--config", path});
  std::string e = errorOf(args);
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("optim.lr"), std::string::npos) << e;
}

struct RangeCase {
  std::string arg, key, rule;
};

class ConfigRange : public ::testing::TestWithParam<RangeCase> {};

TEST_P(ConfigRange, OutOfRangeNamesKeyAndRule) {
  auto args = base();
  args.push_back(GetParam().arg);
  std::string e = errorOf(args);
  EXPECT_NE(e.find(GetParam().key), std::string::npos) << e;
  EXPECT_NE(e.find(GetParam().rule), std::string::npos) << e;
}

INSTANTIATE_TEST_SUITE_P(
    Rules, ConfigRange,
    ::testing::Values(RangeCase{"--train.epochs=0", "train.epochs", "at least 1"},
                      RangeCase{"--train.batch_size=-3", "train.batch_size", "at least 1"},
                      RangeCase{"--optim.lr=0", "optim.lr", "positive"},
                      RangeCase{"--optim.momentum=1", "optim.momentum", "[0, 1)"},
                      RangeCase{"--model.dropout=1.5", "model.dropout", "[0, 1)"},
                      RangeCase{"--model.arch=../transformer", "model.arch", "must be a model name"},
                      RangeCase{"--model.hidden=256,x", "model.hidden", "positive integers"},
                      RangeCase{"--model.kernel_size=4", "model.kernel_size", "odd"},
                      RangeCase{"--optim.name=lbfgs", "optim.name", "sgd|adam"},
                      RangeCase{"--lr.schedule=linear", "lr.schedule", "constant|step|cosine"},
                      RangeCase{"--lr.gamma=0", "lr.gamma", "(0, 1]"},
                      RangeCase{"--comm.bucket_cap_mb=0", "comm.bucket_cap_mb", "positive"},
                      RangeCase{"--train.seed=-1", "train.seed", "at least 0"},
                      RangeCase{"--log.progress=fancy", "log.progress", "auto|bar|lines|none"},
                      RangeCase{"--data.prefetch=-1", "data.prefetch", "auto or an integer >= 0"},
                      RangeCase{"--data.prefetch=4x", "data.prefetch", "auto or an integer >= 0"},
                      RangeCase{"--data.prefetch=Auto", "data.prefetch", "auto or an integer >= 0"}));

// NOTE [Loader placement]: auto by default, or a count; both survive the resolved INI.
TEST(Config, PrefetchIsAutoOrACount) {
  EXPECT_EQ(parseTrainArgs(base()).config.prefetch, TrainConfig::kPrefetchAuto);
  for (const auto& [text, value] : std::vector<std::pair<std::string, int64_t>>{
           {"auto", TrainConfig::kPrefetchAuto}, {"0", 0}, {"4", 4}, {"16", 16}}) {
    auto args = base();
    args.push_back("--data.prefetch=" + text);
    TrainArgs a = parseTrainArgs(args);
    EXPECT_EQ(a.config.prefetch, value) << text;
    EXPECT_NE(a.config.toIni().find("\nprefetch = " + text + "\n"), std::string::npos) << a.config.toIni();
    TrainArgs b = parseTrainArgs({"--run-dir", "/tmp/unused", "--config", writeConfig("prefetch", a.config.toIni())});
    EXPECT_EQ(b.config.prefetch, value) << text;
  }
  const std::string e = errorOf({"--run-dir", "/tmp/unused", "--data.train", "tr", "--data.test", "te", "--config",
                                 writeConfig("prefetch-empty", "[data]\nprefetch =\n")});
  EXPECT_NE(e.find("data.prefetch: must be auto or an integer >= 0 (got '')"), std::string::npos) << e;
}

TEST(Config, MissingRequiredValues) {
  EXPECT_NE(errorOf({"--data.train", "a", "--data.test", "b"}).find("--run-dir"), std::string::npos);
  EXPECT_NE(errorOf({"--run-dir", "r", "--data.test", "b"}).find("data.train"), std::string::npos);
}

TEST(Config, MissingFileIsNamed) {
  auto args = base();
  args.insert(args.end(), {"--config", "/nonexistent/x.cfg"});
  EXPECT_NE(errorOf(args).find("/nonexistent/x.cfg"), std::string::npos);
}

TEST(Config, HelpListsEveryKeyWithDefault) {
  TrainArgs a = parseTrainArgs({"--help"});
  ASSERT_TRUE(a.help);
  for (const char* key : {"data.train", "model.arch", "model.hidden", "train.epochs", "train.grad_accum",
                          "train.max_steps", "optim.lr", "lr.schedule", "lr.warmup_steps",
                          "comm.bucket_cap_mb", "eval.batch_size", "log.progress"}) {
    EXPECT_NE(a.helpText.find(key), std::string::npos) << key;
  }
  EXPECT_NE(a.helpText.find("(=25)"), std::string::npos) << "bucket cap default shown";
}

TEST(Config, ResolvedIniParsesBackToTheSameConfig) {
  TrainArgs a = parseTrainArgs(base());
  auto path = writeConfig("roundtrip", a.config.toIni());
  TrainArgs b = parseTrainArgs({"--run-dir", "/tmp/unused", "--config", path});
  EXPECT_EQ(a.config.toIni(), b.config.toIni());
}

// Values that a bare INI value cannot hold (NOTE [INI quoting]): each survives toIni() and a
// parse of the file it wrote, in every free-text key.
TEST(Config, ResolvedIniRoundTripsCommentCharactersNewlinesAndSpaces) {
  const std::vector<std::string> values{
      "/data/r6#x;y/train", "semi;colon", "#", "ends#", " leading space", "trailing tab\t", "\"quoted\"",
      "\"", "back\\slash\\x23", "a\nb", "x\n[train]\nepochs = 99\n", "\r\x01\x7f", "plain/path", ""};
  for (const std::string& v : values) {
    SCOPED_TRACE(::testing::PrintToString(v));
    const bool optionOk = v.find_first_of(",=") == std::string::npos;  // model.options' own syntax
    std::vector<std::string> args{"--run-dir", "/tmp/unused", "--data.train", v, "--data.test", v + "/t",
                                  "--data.snapshot", v, "--model.path", v, "--model.init", v};
    if (optionOk) args.insert(args.end(), {"--model.options", "k=" + v + "x"});
    TrainArgs a = parseTrainArgs(args);
    const std::string ini = a.config.toIni();
    auto path = writeConfig("quoting", ini);
    TrainArgs b = parseTrainArgs({"--run-dir", "/tmp/unused", "--config", path});
    EXPECT_EQ(b.config.trainDir, v);
    EXPECT_EQ(b.config.testDir, v + "/t");
    EXPECT_EQ(b.config.snapshotFile, v);
    EXPECT_EQ(b.config.modelPath, v);
    EXPECT_EQ(b.config.initFrom, v);
    if (optionOk) {
      EXPECT_EQ(b.config.modelOptions.at("k"), a.config.modelOptions.at("k"));
    }
    EXPECT_EQ(b.config.epochs, 10) << "a value injected a key:\n" << ini;
    EXPECT_EQ(b.config.toIni(), ini);
    EXPECT_EQ(parseTrainConfigText(ini, "model.h5").trainDir, v);
  }
  // An ordinary configuration is written as it always was (its text is hashed into lineage).
  const std::string plain = parseTrainArgs(base()).config.toIni();
  EXPECT_NE(plain.find("\ntrain = tr\ntest = te\nsnapshot = \n"), std::string::npos) << plain;
  EXPECT_EQ(plain.find('"'), std::string::npos) << plain;
  EXPECT_EQ(quoteIniValue("/root/r6#x;y"), "\"/root/r6\\x23x;y\"");
}

TEST(Config, QuotedValuesInAFileAreDecodedAndBadOnesNameTheKeyAndRule) {
  auto args = [](const std::string& path) { return std::vector<std::string>{"--run-dir", "/tmp/unused", "--config", path}; };
  auto path = writeConfig("quoted", "[data]\ntrain = \"/a\\x23b; c \"  # a comment\ntest = C:\\dir\\x23\n");
  TrainArgs a = parseTrainArgs(args(path));
  EXPECT_EQ(a.config.trainDir, "/a#b; c ");
  EXPECT_EQ(a.config.testDir, "C:\\dir\\x23") << "a bare value is taken as it is";
  // The command line is never decoded.
  EXPECT_EQ(parseTrainArgs({"--run-dir", "r", "--data.train", "\"x\\x23\"", "--data.test", "t"}).config.trainDir, "\"x\\x23\"");
  struct Bad {
    std::string text, rule;
  };
  for (const Bad& bad : {Bad{"[data]\ntrain = \"/r6#x\"\ntest = t\n", "does not end with"},
                         Bad{"[data]\ntrain = \"/a\\qb\"\ntest = t\n", "unknown escape '\\q'"},
                         Bad{"[data]\ntrain = \"/a\"b\"\ntest = t\n", "unescaped"},
                         Bad{"[data]\ntrain = \"/a\\x2\"\ntest = t\n", "two hexadecimal digits"},
                         Bad{"[data]\ntrain = \"/a\\\"\ntest = t\n", "does not end with"}}) {
    SCOPED_TRACE(bad.text);
    path = writeConfig("badquote", bad.text);
    const std::string e = errorOf(args(path));
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_NE(e.find("data.train: "), std::string::npos) << e;
    EXPECT_NE(e.find(bad.rule), std::string::npos) << e;
    EXPECT_NE(e.find("\\x23"), std::string::npos) << "the rule says how to write a '#': " << e;
    EXPECT_THROW(parseTrainConfigText(bad.text, "model.h5"), ConfigError);
  }
}

TEST(Config, IntListParsing) {
  EXPECT_EQ(parseIntList("k", "1, 2 ,3"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_THROW(parseIntList("k", "1,,2"), ConfigError);
  EXPECT_THROW(parseIntList("k", "0"), ConfigError);
}

}  // namespace
}  // namespace perennial
