#include "trainer/config/train_config.h"

#include <boost/program_options.hpp>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <limits>
#include <optional>
#include <sstream>

#include "common/error.h"

namespace po = boost::program_options;

namespace perennial {
namespace {

std::string fmt(double v) {
  std::ostringstream os;
  os << std::setprecision(17) << v;
  std::string s = os.str();
  // Shortest form that round-trips, for readable defaults (0.05, not 0.050000000000000003).
  // strtod, not std::stod: stod throws out_of_range for a subnormal value such as 1e-310.
  for (int p = 1; p <= 17; ++p) {
    std::ostringstream t;
    t << std::setprecision(p) << v;
    if (std::strtod(t.str().c_str(), nullptr) == v) return t.str();
  }
  return s;
}

std::string joinWords(const std::vector<std::string>& words, const std::string& separator) {
  std::string s;
  for (const auto& w : words) s += (s.empty() ? "" : separator) + w;
  return s;
}

std::string joinInts(const std::vector<int64_t>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

[[noreturn]] void bad(const std::string& key, const std::string& rule, const std::string& got) {
  throw ConfigError(key + ": " + rule + " (got " + got + ")");
}

void atLeast(const std::string& key, int64_t v, int64_t lo) {
  if (v < lo) bad(key, "must be at least " + std::to_string(lo), std::to_string(v));
}

void inRange(const std::string& key, double v, double lo, double hi, bool hiOpen) {
  if (!(v >= lo && (hiOpen ? v < hi : v <= hi))) {
    bad(key, "must be in [" + fmt(lo) + ", " + fmt(hi) + (hiOpen ? ")" : "]"), fmt(v));
  }
}

void positive(const std::string& key, double v) {
  if (!(v > 0)) bad(key, "must be positive", fmt(v));
}

void oneOf(const std::string& key, const std::string& v, const std::vector<std::string>& allowed) {
  for (const auto& a : allowed) {
    if (v == a) return;
  }
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : "|") + a;
  bad(key, "must be one of " + list, "'" + v + "'");
}

// "key=value, key=value" (keys are model names' characters; values have no ',' or '=').
std::map<std::string, std::string> parseModelOptions(const std::string& text) {
  std::map<std::string, std::string> out;
  std::stringstream ss(text);
  std::string item;
  auto trim = [](std::string v) {
    size_t b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
    return b == std::string::npos ? std::string() : v.substr(b, e - b + 1);
  };
  while (std::getline(ss, item, ',')) {
    if (trim(item).empty() && text.find_first_not_of(" \t") == std::string::npos) break;
    const size_t eq = item.find('=');
    const std::string key = trim(item.substr(0, eq == std::string::npos ? item.size() : eq));
    if (eq == std::string::npos || !isValidModelName(key) || item.find('=', eq + 1) != std::string::npos) {
      bad("model.options", "must be 'key=value' pairs separated by commas, keys of " + std::string(kModelNameRule),
          "'" + text + "'");
    }
    if (!out.emplace(key, trim(item.substr(eq + 1))).second) bad("model.options", "key '" + key + "' is given twice", "'" + text + "'");
  }
  return out;
}

// TEXT for an error message: control characters as \xHH.
std::string printableForMessage(const std::string& text) {
  std::string out;
  for (const char ch : text) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += ch;
    }
  }
  return out;
}

bool iniSpace(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f'; }

// A configuration file's options, each value decoded (NOTE [INI quoting]). Boost's errors pass
// through; a bad quoted value is ConfigError "KEY: ...".
po::parsed_options parseIniFile(std::istream& in, const po::options_description& keys) {
  po::parsed_options parsed = po::parse_config_file(in, keys, /*allow_unregistered=*/false);
  for (auto& o : parsed.options) {
    for (auto& v : o.value) v = unquoteIniValue(o.string_key, v);
    // The original tokens are what Boost's messages quote: keep them decoded as well.
    for (auto& v : o.original_tokens) {
      if (!v.empty() && v.front() == '"') v = unquoteIniValue(o.string_key, v);
    }
  }
  return parsed;
}

// TEXT as a whole integer (std::stoll reading all of it); nullopt for anything else.
std::optional<long long> wholeInteger(const std::string& text) {
  size_t used = 0;
  try {
    const long long v = std::stoll(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

}  // namespace

std::string quoteIniValue(const std::string& value) {
  bool quote = !value.empty() && (iniSpace(value.front()) || iniSpace(value.back()) || value.front() == '"');
  for (const char ch : value) {
    const auto u = static_cast<unsigned char>(ch);
    if (ch == '#' || ch == ';' || u < 0x20 || u == 0x7f) quote = true;
  }
  if (!quote) return value;
  std::string out = "\"";
  for (const char ch : value) {
    const auto u = static_cast<unsigned char>(ch);
    switch (ch) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (ch == '#' || u < 0x20 || u == 0x7f) {
          static const char* hex = "0123456789abcdef";
          out += "\\x";
          out += hex[u >> 4];
          out += hex[u & 15];
        } else {
          out += ch;
        }
    }
  }
  return out + "\"";
}

std::string unquoteIniValue(const std::string& key, const std::string& text) {
  if (text.empty() || text.front() != '"') return text;
  const std::string rule =
      "a value that starts with '\"' is quoted: it ends with '\"', and inside it \\\\ \\\" \\n \\t \\r and \\xHH are the "
      "only escapes; a '#' (which begins a comment anywhere on the line) is written \\x23";
  auto refuse = [&](const std::string& what) -> std::string {
    throw ConfigError(key + ": " + what + " (" + rule + "; got " + printableForMessage(text) + ")");
  };
  if (text.size() < 2 || text.back() != '"') return refuse("a quoted value does not end with '\"'");
  std::string out;
  const size_t end = text.size() - 1;
  for (size_t i = 1; i < end; ++i) {
    const char ch = text[i];
    if (ch == '"') return refuse("an unescaped '\"' inside a quoted value");
    if (ch != '\\') {
      out += ch;
      continue;
    }
    if (i + 1 >= end) return refuse("a quoted value does not end with '\"' (its last one is escaped)");
    const char e = text[++i];
    switch (e) {
      case '\\': out += '\\'; break;
      case '"': out += '"'; break;
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case 'r': out += '\r'; break;
      case 'x': {
        auto digit = [](char c) {
          return std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                 : (c >= 'a' && c <= 'f')                    ? c - 'a' + 10
                 : (c >= 'A' && c <= 'F')                    ? c - 'A' + 10
                                                             : -1;
        };
        if (i + 2 >= end || digit(text[i + 1]) < 0 || digit(text[i + 2]) < 0) {
          return refuse("\\x must be followed by two hexadecimal digits");
        }
        out += static_cast<char>(digit(text[i + 1]) * 16 + digit(text[i + 2]));
        i += 2;
        break;
      }
      default:
        return refuse(std::string("unknown escape '\\") + e + "' in a quoted value");
    }
  }
  return out;
}

void checkDeviceSetting(const std::string& value, const std::string& key) {
  if (value != "auto" && value != "cpu" && value != "cuda") {
    throw ConfigError(key + ": must be auto, cpu or cuda (got '" + value + "')");
  }
}

bool isValidModelName(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  for (char ch : name) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-') return false;
  }
  return true;
}

std::string TrainConfig::option(const std::string& key, const std::string& fallback) const {
  optionsRead.insert(key);
  auto it = modelOptions.find(key);
  return it == modelOptions.end() ? fallback : it->second;
}

int64_t TrainConfig::optionInt(const std::string& key, int64_t fallback) const {
  optionsRead.insert(key);
  auto it = modelOptions.find(key);
  if (it == modelOptions.end()) return fallback;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (it->second.empty() || *end != '\0' || errno == ERANGE) bad("model.options", key + " must be an integer", "'" + it->second + "'");
  return v;
}

double TrainConfig::optionReal(const std::string& key, double fallback) const {
  optionsRead.insert(key);
  auto it = modelOptions.find(key);
  if (it == modelOptions.end()) return fallback;
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  if (it->second.empty() || *end != '\0' || !std::isfinite(v)) bad("model.options", key + " must be a finite number", "'" + it->second + "'");
  return v;
}

std::vector<int64_t> parseIntList(const std::string& key, const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b == std::string::npos) bad(key, "must be a comma-separated list of positive integers", "'" + text + "'");
    const std::optional<long long> v = wholeInteger(item.substr(b, e - b + 1));
    if (!v || *v <= 0) bad(key, "must be a comma-separated list of positive integers", "'" + text + "'");
    out.push_back(*v);
  }
  return out;
}

void addTrainOptions(po::options_description& desc) {
  const TrainConfig d;
  auto s = [](const std::string& v) { return po::value<std::string>()->default_value(v); };
  auto i = [](int64_t v) { return po::value<int64_t>()->default_value(v); };
  auto f = [](double v) { return po::value<double>()->default_value(v, fmt(v)); };
  desc.add_options()
      ("data.train", po::value<std::string>(), "directory of training shards (required)")
      ("data.test", po::value<std::string>(), "directory of test shards (required)")
      ("data.snapshot", s(d.snapshotFile), "a snapshot.json (the scheduler writes one per run) listing every training shard's SHA-256 and rows in file-name order: each shard of data.train is checked against it before training, and a mismatch stops with exit 1 naming the shard (empty: no check)")
      ("data.prefetch", s("auto"), "auto | N: batches read ahead per rank on a loader thread (N >= 0; 0: each batch is made on the training thread when it is needed, no loader thread; auto: 0 when the training set is in memory (data.cache_mb) and the rank has no CPU beside its compute threads, else 4; the log says which)")
      ("data.cache_mb", i(d.cacheMb), "read the whole training set into memory at start (one read per shard) when it takes at most this many MiB per rank, and make batches from memory (0: never; batches are then read from the shards)")
      ("data.normalize", s(d.normalize), "auto | none | standard: standardise each feature by the training data's mean and standard deviation, stored with the weights and applied at evaluation (auto: standard for float32 features, none for uint8 images, which are scaled to [0, 1])")
      ("model.arch", s(d.arch), "mlp | cnn | torchscript | a name registered by your program (perennial::registerModel)")
      ("model.path", s(d.modelPath), "torchscript: the file saved by torch.jit.script(module).save(path)")
      ("model.options", s(""), "models of your own: settings as 'key=value, key=value', read with TrainConfig::option()")
      ("model.hidden", s(joinInts(d.hidden)), "mlp: hidden layer sizes, comma-separated (empty: a linear model)")
      ("model.conv_channels", s(joinInts(d.convChannels)), "cnn: output channels of each conv+pool block")
      ("model.kernel_size", i(d.kernelSize), "cnn: odd kernel size in [1, 11] ('same' padding)")
      ("model.fc_hidden", s(joinInts(d.fcHidden)), "cnn: fully connected sizes after the conv blocks (may be empty)")
      ("model.dropout", f(d.dropout), "dropout before each hidden fully connected layer's output, [0, 1)")
      ("model.init", s(d.initFrom), "start from these weights (a model.h5 or checkpoint of the same architecture) instead of random ones; ignored when resuming")
      ("train.epochs", i(d.epochs), "epochs (>= 1)")
      ("train.batch_size", i(d.batchSize), "samples per rank per micro-batch (>= 1)")
      ("train.grad_accum", i(d.gradAccum), "micro-batches per optimizer step (one all-reduce per step)")
      ("train.max_steps", i(d.maxSteps), "stop after this many optimizer steps (0: no limit)")
      ("train.seed", i(static_cast<int64_t>(d.seed)), "seed of initialisation, sampling and dropout (>= 0)")
      ("train.threads", i(d.threads), "intra-op (BLAS/OpenMP) threads per rank (>= 1)")
      ("train.log_every", i(d.logEvery), "steps between progress lines and metrics.jsonl records (>= 1)")
      ("train.device", s(d.device), "auto | cpu | cuda: where the model trains (auto: a GPU when this build's LibTorch has CUDA and one is visible, else the CPU; each rank takes the GPU of its local rank)")
      ("train.deterministic", po::value<bool>()->default_value(d.deterministic, "true"), "on a GPU: deterministic algorithms only (cuBLAS workspace, cuDNN, NCCL ring/simple), so a run can be repeated bit for bit; false: the fastest kernels")
      ("optim.name", s(d.optimizer), (joinWords(kOptimizers, " | ") + " (adamw: Adam with decoupled weight decay, as torch.optim.AdamW)").c_str())
      ("optim.lr", f(d.lr), "base learning rate (> 0)")
      ("optim.momentum", f(d.momentum), "sgd: momentum, [0, 1)")
      ("optim.nesterov", po::value<bool>()->default_value(d.nesterov, "false"), "sgd: Nesterov momentum")
      ("optim.weight_decay", f(d.weightDecay), "weight decay (>= 0): L2 added to the gradient (sgd, adam), or decoupled (adamw)")
      ("optim.fused", po::value<bool>()->default_value(d.fusedOptimizer, "true"), "one pass per gradient bucket over parameters, gradients and optimizer state kept in flat bucket-aligned buffers; the results are bitwise those of LibTorch's optimizers (false: LibTorch's per-parameter step)")
      ("optim.beta1", f(d.beta1), "adam, adamw: beta1, [0, 1)")
      ("optim.beta2", f(d.beta2), "adam, adamw: beta2, [0, 1)")
      ("optim.eps", f(d.eps), "adam, adamw: epsilon (> 0)")
      ("lr.schedule", s(d.schedule), "constant | step | cosine (each after the linear warm-up)")
      ("lr.warmup_steps", i(d.warmupSteps), "linear warm-up steps from 0 to optim.lr (>= 0)")
      ("lr.step_size", i(d.stepSize), "step: multiply by lr.gamma every this many steps (>= 1)")
      ("lr.gamma", f(d.gamma), "step: decay factor, (0, 1]")
      ("lr.min_lr", f(d.minLr), "cosine: final learning rate (>= 0)")
      ("comm.backend", s(d.backend), "auto | mpi | nccl: the communicator for the model's tensors (auto: NCCL for CUDA tensors when this build has it, MPI otherwise; mpi on a GPU stages each collective through host memory)")
      ("comm.bucket_cap_mb", f(d.bucketCapMb), "gradient bucket cap in MiB (> 0; PyTorch DDP uses 25)")
      ("comm.timeout_s", f(d.timeoutS), "seconds a collective may wait for the other ranks (> 0); then the ranks and hosts that did not join are named and the job ends with status 124")
      ("comm.compression", s(d.compression), "none | bf16 | fp16: send gradient buckets as bfloat16 or IEEE half and widen them in place after the all-reduce (half the bytes; each reduced element carries up to about 2 x world size - 1 roundings of the narrow type: relative unit 2^-8 for bf16, 2^-11 for fp16, whose range ends at 65504; docs/performance.md); deterministic; at world size 1 nothing is sent, so nothing changes")
      ("comm.overlap", po::value<bool>()->default_value(d.overlap, "false"), "all-reduce each gradient bucket on a communication thread as soon as backward has produced it, while backward goes on (bitwise the same result as reducing after backward); MPI (CPU tensors) only; it needs a core beside each rank's compute threads to gain anything")
      ("comm.shared_memory", s(d.sharedMemory), "auto | true | false: where every rank runs on one node, keep the CPU gradient buckets in memory the ranks share and sum them there (a two-shot all-reduce: each rank sums its share of every rank's bucket, in rank order), 1.5-3x as fast as Open MPI's path at gradient sizes; false: MPI_Allreduce. auto shares at world size 2, where the result is bitwise MPI's; true also beyond, where the sums are in rank order, deterministic but not MPI's order, so the weights then depend on whether the ranks share a node. /dev/shm needs room for world size x the buckets' bytes; where it has not, a bucket stays with MPI (docs/performance.md)")
      ("checkpoint.every_steps", i(d.ckptEverySteps), "save a checkpoint every this many optimizer steps (0: off)")
      ("checkpoint.every_epochs", i(d.ckptEveryEpochs), "save a checkpoint every this many epochs (0: off); one is always saved at the end")
      ("checkpoint.keep_last", i(d.ckptKeepLast), "keep the newest this many checkpoints (>= 1)")
      ("checkpoint.keep_best", s(d.ckptKeepBest), "also keep the best checkpoint by: auto | none | test_accuracy | test_loss | test_r2 (auto: test_accuracy for classification, test_loss for regression)")
      ("checkpoint.async", po::value<bool>()->default_value(d.ckptAsync, "false"), "write checkpoints on a background thread from a copy in memory")
      ("eval.batch_size", i(d.evalBatchSize), "evaluation batch size per rank (>= 1)")
      ("log.level", s(d.logLevel), "trace | debug | info | warn | error | off")
      ("log.progress", s(d.progress), "auto | bar | lines | none (auto: a bar on a terminal, lines otherwise)");
}

TrainConfig trainConfigFrom(const po::variables_map& vm) {
  // Each reader names its key once, for both the lookup and the message.
  auto str = [&](const char* k) { return vm[k].as<std::string>(); };
  auto intAtLeast = [&](const char* k, int64_t lo) {
    const int64_t v = vm[k].as<int64_t>();
    atLeast(k, v, lo);
    return v;
  };
  auto realIn = [&](const char* k, double lo, double hi, bool hiOpen) {
    const double v = vm[k].as<double>();
    inRange(k, v, lo, hi, hiOpen);
    return v;
  };
  auto realPositive = [&](const char* k) {
    const double v = vm[k].as<double>();
    positive(k, v);
    return v;
  };
  auto realAtLeastZero = [&](const char* k) {
    const double v = vm[k].as<double>();
    if (!(v >= 0)) bad(k, "must be >= 0", fmt(v));
    return v;
  };
  auto choice = [&](const char* k, const std::vector<std::string>& allowed) {
    const std::string v = str(k);
    oneOf(k, v, allowed);
    return v;
  };
  auto intList = [&](const char* k) { return str(k).empty() ? std::vector<int64_t>{} : parseIntList(k, str(k)); };

  TrainConfig c;
  if (!vm.count("data.train")) throw ConfigError("data.train: required (a directory of training shards)");
  if (!vm.count("data.test")) throw ConfigError("data.test: required (a directory of test shards)");
  c.trainDir = str("data.train");
  c.testDir = str("data.test");
  c.snapshotFile = str("data.snapshot");
  c.prefetch = [&] {
    const std::string v = str("data.prefetch");
    if (v == "auto") return TrainConfig::kPrefetchAuto;
    const std::optional<long long> n = wholeInteger(v);
    if (!n || *n < 0) bad("data.prefetch", "must be auto or an integer >= 0", "'" + v + "'");
    return static_cast<int64_t>(*n);
  }();
  c.cacheMb = intAtLeast("data.cache_mb", 0);
  c.normalize = choice("data.normalize", {"auto", "none", "standard"});

  c.arch = str("model.arch");
  if (!isValidModelName(c.arch)) bad("model.arch", std::string("must be a model name: ") + kModelNameRule, "'" + c.arch + "'");
  c.modelPath = str("model.path");
  if (c.arch == "torchscript" && c.modelPath.empty()) {
    bad("model.path", "required with model.arch = torchscript (a file saved by torch.jit.script(module).save(path))", "''");
  }
  c.modelOptions = parseModelOptions(str("model.options"));
  c.hidden = intList("model.hidden");
  c.convChannels = parseIntList("model.conv_channels", str("model.conv_channels"));
  c.fcHidden = intList("model.fc_hidden");
  if (c.arch == "cnn" && c.convChannels.empty()) bad("model.conv_channels", "cnn needs at least one conv block", "''");
  c.kernelSize = vm["model.kernel_size"].as<int64_t>();
  if (c.kernelSize < 1 || c.kernelSize > 11 || c.kernelSize % 2 == 0) {
    bad("model.kernel_size", "must be odd and in [1, 11]", std::to_string(c.kernelSize));
  }
  c.dropout = realIn("model.dropout", 0.0, 1.0, true);
  c.initFrom = str("model.init");

  c.epochs = intAtLeast("train.epochs", 1);
  c.batchSize = intAtLeast("train.batch_size", 1);
  c.gradAccum = intAtLeast("train.grad_accum", 1);
  c.maxSteps = intAtLeast("train.max_steps", 0);
  c.seed = static_cast<uint64_t>(intAtLeast("train.seed", 0));
  c.threads = intAtLeast("train.threads", 1);
  c.logEvery = intAtLeast("train.log_every", 1);
  c.device = choice("train.device", {"auto", "cpu", "cuda"});
  c.deterministic = vm["train.deterministic"].as<bool>();

  c.optimizer = choice("optim.name", kOptimizers);
  c.lr = realPositive("optim.lr");
  c.momentum = realIn("optim.momentum", 0.0, 1.0, true);
  c.nesterov = vm["optim.nesterov"].as<bool>();
  if (c.nesterov && c.momentum == 0.0) bad("optim.nesterov", "needs optim.momentum > 0", "true");
  c.weightDecay = realAtLeastZero("optim.weight_decay");
  c.fusedOptimizer = vm["optim.fused"].as<bool>();
  c.beta1 = realIn("optim.beta1", 0.0, 1.0, true);
  c.beta2 = realIn("optim.beta2", 0.0, 1.0, true);
  c.eps = realPositive("optim.eps");

  c.schedule = choice("lr.schedule", {"constant", "step", "cosine"});
  c.warmupSteps = intAtLeast("lr.warmup_steps", 0);
  c.stepSize = intAtLeast("lr.step_size", 1);
  c.gamma = vm["lr.gamma"].as<double>();
  if (!(c.gamma > 0 && c.gamma <= 1)) bad("lr.gamma", "must be in (0, 1]", fmt(c.gamma));
  c.minLr = realAtLeastZero("lr.min_lr");

  c.backend = choice("comm.backend", {"auto", "mpi", "nccl"});
  c.bucketCapMb = realPositive("comm.bucket_cap_mb");
  c.timeoutS = realPositive("comm.timeout_s");
  c.compression = choice("comm.compression", {"none", "bf16", "fp16"});
  c.overlap = vm["comm.overlap"].as<bool>();
  c.sharedMemory = choice("comm.shared_memory", {"auto", "true", "false"});

  c.ckptEverySteps = intAtLeast("checkpoint.every_steps", 0);
  c.ckptEveryEpochs = intAtLeast("checkpoint.every_epochs", 0);
  c.ckptKeepLast = intAtLeast("checkpoint.keep_last", 1);
  c.ckptKeepBest = choice("checkpoint.keep_best", {"auto", "none", "test_accuracy", "test_loss", "test_r2"});
  c.ckptAsync = vm["checkpoint.async"].as<bool>();

  c.evalBatchSize = intAtLeast("eval.batch_size", 1);
  c.logLevel = choice("log.level", {"trace", "debug", "info", "warn", "error", "off"});
  c.progress = choice("log.progress", {"auto", "bar", "lines", "none"});
  return c;
}

std::string TrainConfig::toIni() const {
  std::ostringstream os;
  std::string options;
  for (const auto& [k, v] : modelOptions) options += (options.empty() ? "" : ", ") + k + "=" + v;
  // Free-text values are quoted where a bare one would not read back the same (NOTE [INI quoting]).
  const auto q = [](const std::string& v) { return quoteIniValue(v); };
  os << "[data]\ntrain = " << q(trainDir) << "\ntest = " << q(testDir) << "\nsnapshot = " << q(snapshotFile)
     << "\nprefetch = " << (prefetch == kPrefetchAuto ? std::string("auto") : std::to_string(prefetch))
     << "\ncache_mb = " << cacheMb
     << "\nnormalize = " << normalize
     << "\n\n[model]\narch = " << arch << "\npath = " << q(modelPath) << "\noptions = " << q(options)
     << "\nhidden = " << joinInts(hidden)
     << "\nconv_channels = " << joinInts(convChannels) << "\nkernel_size = " << kernelSize
     << "\nfc_hidden = " << joinInts(fcHidden) << "\ndropout = " << fmt(dropout)
     << "\ninit = " << q(initFrom)
     << "\n\n[train]\nepochs = " << epochs << "\nbatch_size = " << batchSize
     << "\ngrad_accum = " << gradAccum << "\nmax_steps = " << maxSteps << "\nseed = " << seed
     << "\nthreads = " << threads << "\nlog_every = " << logEvery << "\ndevice = " << device
     << "\ndeterministic = " << (deterministic ? "true" : "false")
     << "\n\n[optim]\nname = " << optimizer << "\nlr = " << fmt(lr) << "\nmomentum = " << fmt(momentum)
     << "\nnesterov = " << (nesterov ? "true" : "false") << "\nweight_decay = " << fmt(weightDecay)
     << "\nbeta1 = " << fmt(beta1) << "\nbeta2 = " << fmt(beta2) << "\neps = " << fmt(eps)
     << "\nfused = " << (fusedOptimizer ? "true" : "false")
     << "\n\n[lr]\nschedule = " << schedule << "\nwarmup_steps = " << warmupSteps
     << "\nstep_size = " << stepSize << "\ngamma = " << fmt(gamma) << "\nmin_lr = " << fmt(minLr)
     << "\n\n[comm]\nbackend = " << backend << "\nbucket_cap_mb = " << fmt(bucketCapMb)
     << "\ntimeout_s = " << fmt(timeoutS) << "\ncompression = " << compression
     << "\noverlap = " << (overlap ? "true" : "false") << "\nshared_memory = " << sharedMemory
     << "\n\n[checkpoint]\nevery_steps = " << ckptEverySteps << "\nevery_epochs = " << ckptEveryEpochs
     << "\nkeep_last = " << ckptKeepLast << "\nkeep_best = " << ckptKeepBest
     << "\nasync = " << (ckptAsync ? "true" : "false")
     << "\n\n[eval]\nbatch_size = " << evalBatchSize
     << "\n\n[log]\nlevel = " << logLevel << "\nprogress = " << progress << "\n";
  return os.str();
}

TrainConfig parseTrainConfigText(const std::string& text, const std::string& source) {
  po::options_description keys;
  addTrainOptions(keys);
  po::variables_map vm;
  std::istringstream in(text);
  try {
    po::store(parseIniFile(in, keys), vm);
    po::notify(vm);
    return trainConfigFrom(vm);
  } catch (const po::error& e) {
    throw ConfigError(source + ": " + programOptionsMessage(e));
  } catch (const ConfigError& e) {
    throw ConfigError(source + ": " + e.what());
  }
}

TrainConfig loadTrainConfigFile(const std::string& file, const std::map<std::string, std::string>& settings) {
  po::options_description keys;
  addTrainOptions(keys);
  po::variables_map vm;
  try {
    // Stored first, so that they win over the file's values.
    po::parsed_options given(&keys);
    for (const auto& [key, value] : settings) {
      if (!keys.find_nothrow(key, false)) throw ConfigError(key + ": unknown key");
      given.options.emplace_back(key, std::vector<std::string>{value});
    }
    po::store(given, vm);
  } catch (const po::error& e) {
    throw ConfigError(programOptionsMessage(e));
  }
  std::ifstream in(file);
  if (!in) throw ConfigError(file + ": cannot open configuration file");
  try {
    po::store(parseIniFile(in, keys), vm);
    po::notify(vm);
    return trainConfigFrom(vm);
  } catch (const po::error& e) {
    throw ConfigError(file + ": " + programOptionsMessage(e));
  } catch (const ConfigError& e) {
    throw ConfigError(file + ": " + e.what());
  }
}

TrainArgs parseTrainArgs(const std::vector<std::string>& args) {
  po::options_description general("perennial train options");
  general.add_options()
      ("help,h", "print this help, with every option and its default")
      ("config", po::value<std::string>(), "INI configuration file ([section] key = value)")
      ("run-dir", po::value<std::string>(), "run directory (created if missing): result.json, metrics.jsonl, model.h5, checkpoints/")
      ("resume", po::value<std::string>()->default_value("none"),
       "none | auto (the newest checkpoint in RUN/checkpoints that verifies) | PATH of a checkpoint")
      ("log-samples", po::bool_switch(),
       "also write the dataset rows each rank trains, step by step, to RUN/samples/rank-R.jsonl (an audit of the "
       "data order, kept across resumes)");
  po::options_description keys("Configuration keys (in the file as [section] key = value, on the command line as --section.key=value)");
  addTrainOptions(keys);
  po::options_description all;
  all.add(general).add(keys);

  TrainArgs out;
  po::variables_map vm;
  storeCommandLine(args, all, vm);
  if (vm.count("help")) {
    std::ostringstream os;
    os << "usage: [mpirun -np N] perennial train --config FILE --run-dir DIR [--section.key=value ...]\n\n"
       << general << "\n" << keys;
    out.help = true;
    out.helpText = os.str();
    return out;
  }
  if (vm.count("config")) {
    out.configFile = vm["config"].as<std::string>();
    std::ifstream in(out.configFile);
    if (!in) throw ConfigError(out.configFile + ": cannot open configuration file");
    try {
      // Values already stored from the command line take precedence over the file's.
      po::store(parseIniFile(in, keys), vm);
    } catch (const po::error& e) {
      throw ConfigError(out.configFile + ": " + programOptionsMessage(e) + " (perennial train --help lists every key)");
    } catch (const ConfigError& e) {
      throw ConfigError(out.configFile + ": " + e.what());
    }
  }
  po::notify(vm);
  if (!vm.count("run-dir")) throw ConfigError("--run-dir: required (the run directory)");
  out.runDir = vm["run-dir"].as<std::string>();
  out.resume = vm["resume"].as<std::string>();
  if (out.resume.empty()) throw ConfigError("--resume: must be none, auto or a checkpoint path");
  out.logSamples = vm["log-samples"].as<bool>();
  try {
    out.config = trainConfigFrom(vm);
  } catch (const ConfigError& e) {
    throw ConfigError((out.configFile.empty() ? std::string("command line") : out.configFile + " or command line") +
                      ": " + e.what());
  }
  return out;
}

}  // namespace perennial
