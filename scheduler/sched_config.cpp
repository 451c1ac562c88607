#include "scheduler/sched_config.h"

#include <boost/program_options.hpp>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "common/error.h"
#include "common/fs_util.h"
#include "scheduler/registry.h"
#include "trainer/config/train_config.h"

namespace po = boost::program_options;

namespace perennial::sched {
namespace {
namespace stdfs = std::filesystem;

po::options_description schedOptions() {
  po::options_description d("Scheduler configuration keys ([section] key = value, or --section.key=value)");
  d.add_options()
      ("dataset.name", po::value<std::string>()->default_value("fashion-mnist"), "dataset name every shard's spec.name must match")
      ("dataset.features", po::value<std::string>()->default_value("images"), "features dataset in each shard")
      ("dataset.labels", po::value<std::string>()->default_value("labels"), "targets dataset in each shard: int64 class labels, or float32 values (dataset.target_dtype)")
      ("dataset.feature_dtype", po::value<std::string>()->default_value("uint8"), "uint8 | float32")
      ("dataset.feature_shape", po::value<std::string>()->default_value("28,28"), "shape of one row's features")
      ("dataset.target_dtype", po::value<std::string>()->default_value("int64"), "int64 (class labels: classification) | float32 (values: regression)")
      ("dataset.num_classes", po::value<int64_t>()->default_value(10), "labels lie in [0, num_classes) (at least 2); 0 with dataset.target_dtype = float32")
      ("dataset.value_range", po::value<std::string>()->default_value(""), "lo,hi of feature values for the drift histograms (default 0,256 for uint8, 0,1 for float32)")
      ("dataset.max_shard_bytes", po::value<int64_t>()->default_value(int64_t{1} << 30), "larger files are quarantined")
      ("dataset.max_shard_rows", po::value<int64_t>()->default_value(1000000), "shards with more rows are quarantined")
      ("ingest.rescan_s", po::value<double>()->default_value(10), "seconds between full rescans of incoming/ (inotify wakes the daemon sooner)")
      ("ingest.settle_s", po::value<double>()->default_value(0), "ignore files modified less than this many seconds ago")
      ("train.config", po::value<std::string>()->default_value(""), "the trainer's configuration file (required)")
      ("train.holdout", po::value<std::string>()->default_value(""), "shard directory every run evaluates on (required)")
      ("train.ranks", po::value<int64_t>()->default_value(2), "ranks per training run (or give train.nodes and train.ranks_per_node)")
      ("train.nodes", po::value<std::string>()->default_value(""), "nodes of each run with executor.kind = slurm: a count N, or a range A-B (the run takes as many free nodes as it can, and a run requeued after losing a node resumes on the nodes that are up); with train.ranks_per_node, instead of train.ranks")
      ("train.ranks_per_node", po::value<int64_t>()->default_value(0), "ranks on each node with train.nodes (required with it)")
      ("train.warm_start", po::value<std::string>()->default_value("scratch"), "scratch | champion: start from the champion's weights")
      ("train.max_attempts", po::value<int64_t>()->default_value(3), "attempts per run (failed or preempted attempts are retried with --resume auto)")
      ("triggers.on_demand", po::value<bool>()->default_value(true), "`perennial sched trigger` starts a run")
      ("triggers.interval_s", po::value<double>()->default_value(0), "start a run every this many seconds (0: off)")
      ("triggers.new_data_rows", po::value<int64_t>()->default_value(0), "start a run when this many new rows arrived (0: off)")
      ("triggers.drift_psi", po::value<double>()->default_value(0), "start a run when new data's PSI against the champion's training data reaches this (0: off; 0.2 is usual)")
      ("triggers.drift_min_rows", po::value<int64_t>()->default_value(1000), "new rows needed before drift is measured")
      ("triggers.decay_margin", po::value<double>()->default_value(0), "start a run when the champion's accuracy on new labelled data is this far below its validation accuracy (0: off)")
      ("triggers.decay_min_rows", po::value<int64_t>()->default_value(1000), "new rows needed before decay is measured")
      ("triggers.cooldown_s", po::value<double>()->default_value(0), "seconds after a run is created before another may be")
      ("triggers.max_concurrent", po::value<int64_t>()->default_value(1), "runs pending or active at once")
      ("executor.kind", po::value<std::string>()->default_value("local"), "local (mpirun on this machine) | slurm (sbatch slurm.script)")
      ("executor.mpirun", po::value<std::string>()->default_value("mpirun"), "the MPI launcher")
      ("executor.mpirun_args", po::value<std::string>()->default_value(""), "extra launcher arguments, separated by spaces (never passed through a shell)")
      ("executor.cancel_grace_s", po::value<double>()->default_value(30), "seconds a cancelled run gets to stop before it is killed")
      ("slurm.script", po::value<std::string>()->default_value(""), "the batch script of each run (slurm/train.sbatch of the sources; required with executor.kind = slurm)")
      ("slurm.partition", po::value<std::string>()->default_value(""), "sbatch --partition")
      ("slurm.account", po::value<std::string>()->default_value(""), "sbatch --account")
      ("slurm.time", po::value<std::string>()->default_value(""), "sbatch --time (the script asks for SIGUSR1 90 s before it)")
      ("slurm.cpus_per_task", po::value<int64_t>()->default_value(0), "sbatch --cpus-per-task (0: not given)")
      ("slurm.gpus_per_node", po::value<std::string>()->default_value(""), "sbatch --gpus-per-node")
      ("slurm.sbatch_args", po::value<std::string>()->default_value(""), "more sbatch arguments, separated by spaces (never through a shell)")
      ("sched.tick_s", po::value<double>()->default_value(2), "seconds between the daemon's passes")
      ("registry.dir", po::value<std::string>()->default_value(""), "the model registry (default ROOT/registry)")
      ("registry.model", po::value<std::string>()->default_value(""), "the model's name in the registry (default dataset.name)")
      ("registry.on_promote", po::value<std::string>()->default_value(""), "command run after each promotion, arguments separated by spaces (no shell); gets PERENNIAL_MODEL, PERENNIAL_VERSION, PERENNIAL_VERSION_DIR, PERENNIAL_WEIGHTS, ... in its environment")
      ("registry.on_promote_timeout_s", po::value<double>()->default_value(600), "seconds the on_promote command may run");
  return d;
}

[[noreturn]] void bad(const std::string& file, const std::string& key, const std::string& rule) {
  throw ConfigError(file + ": " + key + ": " + rule);
}

std::string absoluteFrom(const std::string& base, const std::string& p) {
  if (p.empty()) return p;
  stdfs::path path(p);
  if (path.is_relative()) path = stdfs::path(base) / path;
  return path.lexically_normal().string();
}

// The largest node count of "N" or "A-B" (1 <= A <= B), or 0 when SPEC is neither.
int64_t nodeRangeMax(const std::string& spec) {
  static const std::regex form("([1-9][0-9]{0,5})(-([1-9][0-9]{0,5}))?");
  std::smatch m;
  if (!std::regex_match(spec, m, form)) return 0;
  const int64_t lo = std::stoll(m[1].str());
  const int64_t hi = m[3].matched ? std::stoll(m[3].str()) : lo;
  return hi >= lo ? hi : 0;
}

std::vector<std::string> splitSpaces(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

}  // namespace

SchedConfig loadSchedConfig(const std::string& file, const std::vector<std::string>& overrides) {
  po::options_description desc = schedOptions();
  po::variables_map vm;
  storeCommandLine(overrides, desc, vm);
  std::ifstream in(file);
  if (!in) throw ConfigError(file + ": cannot open the scheduler configuration");
  try {
    // [gate] keys are read by loadGateConfig; any other unknown key is an error.
    auto parsed = po::parse_config_file(in, desc, /*allow_unregistered=*/true);
    for (const auto& o : parsed.options) {
      if (o.unregistered && o.string_key.rfind("gate.", 0) != 0) {
        throw ConfigError(file + ": unrecognised option '" + o.string_key + "' (perennial sched --help lists every key)");
      }
    }
    po::store(parsed, vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw ConfigError(file + ": " + programOptionsMessage(e) + " (perennial sched --help lists every key)");
  }
  const std::string base = stdfs::absolute(file).parent_path().string();
  auto str = [&](const char* k) { return vm[k].as<std::string>(); };
  auto i64 = [&](const char* k) { return vm[k].as<int64_t>(); };
  auto dbl = [&](const char* k) { return vm[k].as<double>(); };
  auto atLeast = [&](const char* k, double v, double lo) {
    if (!(v >= lo)) bad(file, k, "must be at least " + std::to_string(lo) + " (got " + std::to_string(v) + ")");
  };

  SchedConfig c;
  c.source = file;
  data::DatasetRules& d = c.dataset;
  data::DatasetSpec& spec = d.spec;
  spec.name = str("dataset.name");
  spec.features = str("dataset.features");
  spec.labels = str("dataset.labels");
  if (spec.name.empty()) bad(file, "dataset.name", "must not be empty");
  if (spec.features.empty() || spec.labels.empty() || spec.features == spec.labels) {
    bad(file, "dataset.features", "features and labels must be two different, non-empty dataset names");
  }
  const std::string dt = str("dataset.feature_dtype");
  if (dt == "uint8") {
    spec.featureType = DType::kUInt8;
  } else if (dt == "float32") {
    spec.featureType = DType::kFloat32;
  } else {
    bad(file, "dataset.feature_dtype", "must be uint8 or float32 (got '" + dt + "')");
  }
  try {
    spec.featureShape = parseIntList("dataset.feature_shape", str("dataset.feature_shape"));
  } catch (const ConfigError& e) {
    throw ConfigError(file + ": " + e.what());
  }
  for (int64_t v : spec.featureShape) {
    if (v < 1) bad(file, "dataset.feature_shape", "every dimension must be at least 1");
  }
  const std::string tt = str("dataset.target_dtype");
  if (tt == "int64") {
    spec.targetType = DType::kInt64;
  } else if (tt == "float32") {
    spec.targetType = DType::kFloat32;
  } else {
    bad(file, "dataset.target_dtype", "must be int64 (class labels) or float32 (regression values) (got '" + tt + "')");
  }
  spec.numClasses = i64("dataset.num_classes");
  if (spec.regression()) {
    // The default of 10 is for the class labels of Fashion-MNIST: regression has none.
    if (vm["dataset.num_classes"].defaulted()) spec.numClasses = 0;
    if (spec.numClasses != 0) bad(file, "dataset.num_classes", "must be 0 with dataset.target_dtype = float32 (regression has no classes)");
  } else {
    atLeast("dataset.num_classes", static_cast<double>(spec.numClasses), 2);
  }
  const std::string range = str("dataset.value_range");
  if (range.empty()) {
    d.valueMin = 0;
    d.valueMax = spec.featureType == DType::kUInt8 ? 256 : 1;
  } else {
    const auto comma = range.find(',');
    try {
      if (comma == std::string::npos) throw std::invalid_argument("no comma");
      d.valueMin = std::stod(range.substr(0, comma));
      d.valueMax = std::stod(range.substr(comma + 1));
    } catch (const std::exception&) {
      bad(file, "dataset.value_range", "must be 'lo,hi' (got '" + range + "')");
    }
    if (!(d.valueMax > d.valueMin)) bad(file, "dataset.value_range", "hi must be greater than lo");
  }
  d.maxShardBytes = i64("dataset.max_shard_bytes");
  d.maxShardRows = i64("dataset.max_shard_rows");
  atLeast("dataset.max_shard_bytes", static_cast<double>(d.maxShardBytes), 1);
  atLeast("dataset.max_shard_rows", static_cast<double>(d.maxShardRows), 1);

  c.rescanS = dbl("ingest.rescan_s");
  c.settleS = dbl("ingest.settle_s");
  atLeast("ingest.rescan_s", c.rescanS, 0.1);
  atLeast("ingest.settle_s", c.settleS, 0);

  c.trainConfig = absoluteFrom(base, str("train.config"));
  c.holdout = absoluteFrom(base, str("train.holdout"));
  if (c.trainConfig.empty()) bad(file, "train.config", "required: the trainer's configuration file");
  if (c.holdout.empty()) bad(file, "train.holdout", "required: a shard directory to evaluate every run on");
  if (!fs::isFile(c.trainConfig)) bad(file, "train.config", "no such file: " + c.trainConfig);
  if (!fs::isDirectory(c.holdout)) bad(file, "train.holdout", "no such directory: " + c.holdout);
  c.ranks = i64("train.ranks");
  atLeast("train.ranks", static_cast<double>(c.ranks), 1);
  c.nodes = str("train.nodes");
  c.ranksPerNode = i64("train.ranks_per_node");
  if (c.nodes.empty()) {
    if (c.ranksPerNode != 0) bad(file, "train.ranks_per_node", "needs train.nodes (the nodes whose ranks it counts)");
  } else {
    const int64_t maxNodes = nodeRangeMax(c.nodes);
    if (maxNodes == 0) {
      bad(file, "train.nodes", "must be a node count N or a range A-B with 1 <= A <= B (got '" + c.nodes + "')");
    }
    if (c.ranksPerNode < 1) bad(file, "train.ranks_per_node", "required with train.nodes: at least 1 (got " + std::to_string(c.ranksPerNode) + ")");
    if (!vm["train.ranks"].defaulted()) {
      bad(file, "train.ranks", "give either train.ranks or train.nodes with train.ranks_per_node, not both");
    }
    c.ranks = maxNodes * c.ranksPerNode;
  }
  c.warmStart = str("train.warm_start");
  if (c.warmStart != "scratch" && c.warmStart != "champion") {
    bad(file, "train.warm_start", "must be scratch or champion (got '" + c.warmStart + "')");
  }
  c.maxAttempts = i64("train.max_attempts");
  atLeast("train.max_attempts", static_cast<double>(c.maxAttempts), 1);

  c.onDemand = vm["triggers.on_demand"].as<bool>();
  c.intervalS = dbl("triggers.interval_s");
  c.newDataRows = i64("triggers.new_data_rows");
  c.driftPsi = dbl("triggers.drift_psi");
  c.driftMinRows = i64("triggers.drift_min_rows");
  c.decayMargin = dbl("triggers.decay_margin");
  c.decayMinRows = i64("triggers.decay_min_rows");
  c.cooldownS = dbl("triggers.cooldown_s");
  c.maxConcurrent = i64("triggers.max_concurrent");
  atLeast("triggers.interval_s", c.intervalS, 0);
  atLeast("triggers.new_data_rows", static_cast<double>(c.newDataRows), 0);
  atLeast("triggers.drift_psi", c.driftPsi, 0);
  atLeast("triggers.drift_min_rows", static_cast<double>(c.driftMinRows), 1);
  if (!(c.decayMargin >= 0 && c.decayMargin < 1)) bad(file, "triggers.decay_margin", "must be in [0, 1) (an accuracy difference)");
  atLeast("triggers.decay_min_rows", static_cast<double>(c.decayMinRows), 1);
  atLeast("triggers.cooldown_s", c.cooldownS, 0);
  atLeast("triggers.max_concurrent", static_cast<double>(c.maxConcurrent), 1);

  c.executor = str("executor.kind");
  if (c.executor != "local" && c.executor != "slurm") bad(file, "executor.kind", "must be local or slurm (got '" + c.executor + "')");
  if (c.executor == "local" && !c.nodes.empty() && nodeRangeMax(c.nodes) > 1) {
    bad(file, "train.nodes", "runs on several nodes need executor.kind = slurm (the local executor runs mpirun on this machine)");
  }
  c.slurm.script = absoluteFrom(base, str("slurm.script"));
  if (c.executor == "slurm" && (c.slurm.script.empty() || !fs::isFile(c.slurm.script))) {
    bad(file, "slurm.script", c.slurm.script.empty() ? "required with executor.kind = slurm (slurm/train.sbatch)"
                                                    : "no such file: " + c.slurm.script);
  }
  c.slurm.partition = str("slurm.partition");
  c.slurm.account = str("slurm.account");
  c.slurm.time = str("slurm.time");
  c.slurm.gpusPerNode = str("slurm.gpus_per_node");
  c.slurm.cpusPerTask = i64("slurm.cpus_per_task");
  atLeast("slurm.cpus_per_task", static_cast<double>(c.slurm.cpusPerTask), 0);
  c.slurm.sbatchArgs = splitSpaces(str("slurm.sbatch_args"));
  c.local.mpirun = str("executor.mpirun");
  if (c.local.mpirun.empty()) bad(file, "executor.mpirun", "must not be empty");
  c.local.mpirunArgs = splitSpaces(str("executor.mpirun_args"));
  c.local.cancelGraceS = dbl("executor.cancel_grace_s");
  atLeast("executor.cancel_grace_s", c.local.cancelGraceS, 0);
  c.tickS = dbl("sched.tick_s");
  atLeast("sched.tick_s", c.tickS, 0.05);
  c.gate = loadGateConfig(file);
  c.registryDir = absoluteFrom(base, str("registry.dir"));
  c.modelName = str("registry.model").empty() ? d.spec.name : str("registry.model");
  try {
    Registry::checkName("registry.model", c.modelName);
  } catch (const ConfigError& e) {
    throw ConfigError(file + ": " + e.what());
  }
  c.onPromote = splitSpaces(str("registry.on_promote"));
  c.onPromoteTimeoutS = dbl("registry.on_promote_timeout_s");
  atLeast("registry.on_promote_timeout_s", c.onPromoteTimeoutS, 1);
  return c;
}

po::options_description schedConfigOptions() { return schedOptions(); }

std::string schedConfigHelp() {
  std::ostringstream os;
  os << schedOptions() << "\n" << gateConfigHelp();
  return os.str();
}

}  // namespace perennial::sched
