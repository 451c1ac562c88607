#pragma once
// The trainer's configuration: INI files (Boost.Program_options syntax) with [section] key=value,
// every key overridable on the command line as --section.key=value (the command line wins).
// Validation errors are ConfigError naming the source (file or command line), the key and the
// rule; the CLI turns them into exit status 2.
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

// storeCommandLine, programOptionsMessage; declares boost::program_options' error,
// options_description and variables_map
#include "common/command_line.h"

namespace perennial {

// The optimizers (optim.name). Each has its state in checkpoints (trainer/checkpointing.cpp) and
// an exact-resume test, which takes this list from `perennial train --help`
// (tests/cli/equivalence_test.sh).
inline const std::vector<std::string> kOptimizers{"sgd", "adam", "adamw"};

struct TrainConfig {
  // [data]
  std::string trainDir, testDir;
  std::string snapshotFile;  // data.snapshot: a snapshot.json the training shards must match ("": no check)
  // data.prefetch: batches made ahead on a loader thread; kPrefetchAuto lets the trainer choose
  // (NOTE [Loader placement] in trainer/trainer.cpp).
  static constexpr int64_t kPrefetchAuto = -1;
  static constexpr int64_t kPrefetchAhead = 4;  // what auto reads ahead when it keeps the loader thread
  int64_t prefetch = kPrefetchAuto;
  int64_t cacheMb = 1024;  // data.cache_mb: NOTE [Row cache] in dataset/shard_dataset.h
  std::string normalize = "auto";  // auto | none | standard
  // [model]
  std::string arch = "mlp";  // a built-in (mlp, cnn, torchscript) or registered name
  std::string modelPath;     // torchscript: the scripted module's file
  std::map<std::string, std::string> modelOptions;  // model.options: "key=value, ..."
  std::vector<int64_t> hidden{256, 128, 100};
  std::vector<int64_t> convChannels{32, 64};
  int64_t kernelSize = 5;
  std::vector<int64_t> fcHidden{128};
  double dropout = 0.0;
  std::string initFrom;  // weights to start from (warm start); empty: random initialisation
  // [train]
  int64_t epochs = 10;
  int64_t batchSize = 64;  // per rank, per micro-batch
  int64_t gradAccum = 1;
  int64_t maxSteps = 0;  // 0: no limit
  uint64_t seed = 42;
  int64_t threads = 1;
  int64_t logEvery = 100;
  std::string device = "auto";  // auto | cpu | cuda (trainer/device.h)
  bool deterministic = true;    // NOTE [GPU determinism] in trainer/device.h
  // [optim]
  std::string optimizer = "sgd";
  double lr = 0.05, momentum = 0.9, weightDecay = 0.0, beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  bool nesterov = false;
  bool fusedOptimizer = true;  // optim.fused: NOTE [Flat parameters] in trainer/optim/fused_optimizer.h
  // [lr]
  std::string schedule = "constant";
  int64_t warmupSteps = 0;
  int64_t stepSize = 1000;
  double gamma = 0.1, minLr = 0.0;
  // [comm]
  std::string backend = "auto";  // auto | mpi | nccl
  double bucketCapMb = 25.0;
  std::string compression = "none";  // none | bf16 | fp16: NOTE [Gradient compression] in gradient_reducer.cpp
  bool overlap = false;              // NOTE [Overlap] in gradient_reducer.cpp
  std::string sharedMemory = "auto";  // auto | true | false: NOTE [Shared-memory all-reduce] in mpi_communicator.cpp
  double timeoutS = 600.0;
  // [checkpoint]
  int64_t ckptEverySteps = 0;   // 0: off
  int64_t ckptEveryEpochs = 1;  // 0: off
  int64_t ckptKeepLast = 3;
  std::string ckptKeepBest = "auto";  // auto | none | test_accuracy | test_loss | test_r2
  bool ckptAsync = false;
  // [eval]
  int64_t evalBatchSize = 1000;
  // [log]
  std::string logLevel = "info";
  std::string progress = "auto";

  // model.options values for models of your own (registerModel): OPTION returns FALLBACK when
  // KEY is not set; the typed ones throw ConfigError naming model.options and KEY on a bad value.
  // Each records KEY in optionsRead: makeModel() refuses a model.options key that the model's
  // builder never read, so a misspelt key is an error instead of a silently ignored setting.
  std::string option(const std::string& key, const std::string& fallback) const;
  int64_t optionInt(const std::string& key, int64_t fallback) const;
  double optionReal(const std::string& key, double fallback) const;
  mutable std::set<std::string> optionsRead;  // not configuration: see option()

  // The resolved configuration as INI text (every key, in a fixed order): written to the run
  // directory and hashed, so a run can be reproduced from its own record.
  std::string toIni() const;
};

// The device settings (train.device, gate.device, --device): throws ConfigError
// "KEY: must be auto, cpu or cuda (got 'VALUE')" for any other value.
void checkDeviceSetting(const std::string& value, const std::string& key);

// Model names (model.arch, registerModel): 1 to 64 of [A-Za-z0-9_-].
inline constexpr const char* kModelNameRule = "1 to 64 letters, digits, '_' or '-'";
bool isValidModelName(const std::string& name);
// Throws makeModel()'s ConfigError when no model is registered under NAME (listing the known
// ones). The commands call it before they start MPI or open data, so that a misspelt model.arch
// is the error reported. Defined with the registry (trainer/models/model_factory.cpp).
void requireRegisteredModel(const std::string& name);

// Declares every [section] key with its default (used for --help and parsing).
void addTrainOptions(boost::program_options::options_description& desc);

// Fills a TrainConfig from parsed values and checks every rule. SOURCE names where values
// came from for messages.
TrainConfig trainConfigFrom(const boost::program_options::variables_map& vm);

// Parses ARGS (command line after the subcommand) with an optional --config FILE. Throws
// ConfigError on unknown keys, wrong types and out-of-range values.
struct TrainArgs {
  TrainConfig config;
  std::string configFile;
  std::string runDir;
  std::string resume = "none";  // none | auto | PATH
  bool logSamples = false;      // --log-samples (NOTE [Sample log], trainer/run_logs.h)
  bool help = false;
  std::string helpText;
};
TrainArgs parseTrainArgs(const std::vector<std::string>& args);

// Parses a whole configuration from INI TEXT (for example the one stored in model.h5); SOURCE
// names it in errors.
TrainConfig parseTrainConfigText(const std::string& text, const std::string& source);
// The configuration in the INI file FILE with SETTINGS ("section.key" -> value, as the file
// would write them) taking precedence, every rule checked: what `perennial train --config FILE
// --section.key=value ...` resolves, for programs that start training runs (the scheduler sets
// the run's data and warm start this way). ConfigError naming FILE and the key.
TrainConfig loadTrainConfigFile(const std::string& file, const std::map<std::string, std::string>& settings = {});

// NOTE [INI quoting] Boost.Program_options' INI parser ends a value at the first '#' (the rest of
// the line is a comment, even inside quotes), trims white space around it and never removes
// quotes, so a path such as ".../r6#x;y/data" written as it is would be read as ".../r6". Our own
// layer adds quoting: a value in a configuration FILE whose first character is '"' is a quoted
// value. It must end with '"', and between the quotes \\ is a backslash, \" a quote, \n \t
// \r a newline, tab and carriage return and \xHH the byte HH (so a '#' is written \x23); any
// other backslash or an unescaped '"' is an error naming the key. Every other value is taken as
// it is (a backslash in it is an ordinary character). Values given on the command line are never
// decoded. TrainConfig::toIni() quotes a value that holds '#', ';', '"' first, a control
// character or white space at either end, so each value round-trips; others are written bare
// (the text of an ordinary configuration, and its hash, are unchanged).
//
// quoteIniValue: VALUE as toIni() writes it. unquoteIniValue: the value a file's text TEXT
// stands for; throws ConfigError "KEY: ..." naming the rule.
std::string quoteIniValue(const std::string& value);
std::string unquoteIniValue(const std::string& key, const std::string& text);

// "256,128" -> {256, 128}; throws ConfigError naming KEY on a malformed list.
std::vector<int64_t> parseIntList(const std::string& key, const std::string& text);

}  // namespace perennial
