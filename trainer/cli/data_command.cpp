#include <boost/program_options.hpp>
#include <iostream>
#include <nlohmann/json.hpp>

#include "common/command_line.h"
#include "common/error.h"
#include "trainer/cli/commands.h"
#include "trainer/config/train_config.h"
#include "dataset/csv_import.h"
#include "dataset/fashion_mnist.h"
#include "dataset/shard_dataset.h"
#include "common/text.h"

namespace po = boost::program_options;

namespace perennial::cli {
namespace {

const char* kUsage =
    "usage: perennial data import-fashion-mnist --out DIR [--source DIR] [--shard-size N]\n"
    "       perennial data import-csv --schema SCHEMA.json --out DIR [--shard-size N] [--delimiter C] CSV...\n"
    "       perennial data info DIR [--json]\n"
    "       perennial data add --root DIR [--config FILE] FILE...\n";

int importCommand(const std::vector<std::string>& args) {
  po::options_description desc("perennial data import-fashion-mnist options");
  data::ImportOptions o;
  desc.add_options()("help,h", "print this help")
      ("out", po::value<std::string>(&o.outDir), "output directory: OUT/train and OUT/test are created")
      ("source", po::value<std::string>(&o.sourceDir)->default_value(o.sourceDir),
       "directory with the IDX files (plain or .gz), as Debian's dataset-fashion-mnist installs them")
      ("shard-size", po::value<int64_t>(&o.shardSize)->default_value(o.shardSize), "rows per shard (> 0)");
  po::variables_map vm;
  storeCommandLine(args, desc, vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << desc;
    return 0;
  }
  data::ImportSummary s = data::importFashionMnist(o);
  std::cout << "imported " << s.trainRows << " training rows into " << s.trainShards << " shard(s) under "
            << o.outDir << "/train and " << s.testRows << " test rows into " << s.testShards
            << " shard(s) under " << o.outDir << "/test\n";
  return 0;
}

int importCsvCommand(const std::vector<std::string>& args) {
  po::options_description desc("perennial data import-csv options");
  data::CsvImportOptions o;
  std::string delimiter = ",";
  desc.add_options()("help,h", "print this help")
      ("schema", po::value<std::string>(&o.schemaPath), "the table's schema (JSON: name, task, features, target, classes | num_classes, ignore; see docs/data.md)")
      ("out", po::value<std::string>(&o.outDir), "shard directory to create (must not exist)")
      ("shard-size", po::value<int64_t>(&o.shardSize)->default_value(o.shardSize), "rows per shard (> 0)")
      ("delimiter", po::value<std::string>(&delimiter)->default_value(","), "field delimiter: one character, or 'tab'")
      ("max-rows", po::value<int64_t>(&o.maxRows)->default_value(0), "refuse inputs with more rows than this in all (0: no limit)")
      ("csv", po::value<std::vector<std::string>>(&o.inputs), "CSV files with a header row (also as arguments)");
  po::variables_map vm;
  const std::vector<std::string> files = parseCommandLine(args, desc, vm);
  po::notify(vm);  // the --csv files first
  o.inputs.insert(o.inputs.end(), files.begin(), files.end());
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << desc;
    return 0;
  }
  if (o.schemaPath.empty()) throw ConfigError("--schema: required (a JSON file describing the table)");
  if (delimiter == "tab") delimiter = "\t";
  if (delimiter.size() != 1 || delimiter[0] == '"' || delimiter[0] == '\n' || delimiter[0] == '\r') {
    throw ConfigError("--delimiter: must be one character other than a quote or a line break, or 'tab' (got '" + delimiter + "')");
  }
  o.delimiter = delimiter[0];
  data::CsvImportSummary s = data::importCsv(o);
  std::cout << "imported " << s.rows << " rows (" << s.spec.featureShape[0] << " features, "
            << (s.spec.regression() ? std::string("regression") : std::to_string(s.spec.numClasses) + " classes")
            << ") into " << s.shards << " shard(s) under " << o.outDir << "\n";
  return 0;
}

int infoCommand(const std::vector<std::string>& args) {
  po::options_description desc("perennial data info options");
  bool asJson = false;
  desc.add_options()("help,h", "print this help")("json", po::bool_switch(&asJson), "print JSON");
  po::variables_map vm;
  const std::vector<std::string> dirs = parseCommandLine(args, desc, vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << desc;
    return 0;
  }
  expectArguments(dirs, 1, 1, "DIR (a directory of shards)");
  data::ShardedDataset ds(dirs[0]);
  nlohmann::json j = {{"dir", ds.dir()},
                      {"name", ds.spec().name},
                      {"rows", ds.size()},
                      {"shards", ds.shardPaths()},
                      {"feature_shape", ds.spec().featureShape},
                      {"feature_dtype", dtypeName(ds.spec().featureType)},
                      {"task", ds.spec().regression() ? "regression" : "classification"},
                      {"target_dtype", dtypeName(ds.spec().targetType)},
                      {"num_classes", ds.spec().numClasses}};
  if (asJson) {
    std::cout << dumpJson(j, 2) << "\n";
  } else {
    std::cout << ds.spec().name << ": " << ds.size() << " rows in " << ds.numShards() << " shard(s), features "
              << dumpJson(j["feature_shape"]) << " " << dtypeName(ds.spec().featureType) << ", "
              << (ds.spec().regression() ? std::string("regression (float32 targets)")
                                         : std::to_string(ds.spec().numClasses) + " classes")
              << "\n";
  }
  return 0;
}

}  // namespace

int dataCommand(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "import-fashion-mnist") return importCommand(rest);
  if (args[0] == "import-csv") return importCsvCommand(rest);
  if (args[0] == "info") return infoCommand(rest);
  throw ConfigError("data: unknown subcommand '" + args[0] + "'\n" + kUsage);
}

}  // namespace perennial::cli
