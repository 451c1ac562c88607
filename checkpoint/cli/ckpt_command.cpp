#include "checkpoint/cli/ckpt_command.h"
#include "common/text.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_store.h"
#include "checkpoint/tensor_file.h"
#include "common/command_line.h"
#include "common/error.h"
#include "common/half.h"
#include "common/sha256.h"

namespace perennial::cli {
namespace {

namespace po = boost::program_options;
using checkpoint::Document;
using json = nlohmann::json;

const char* kUsage =
    "usage: perennial ckpt inspect FILE [--json]   tree, shapes, dtypes and metadata\n"
    "       perennial ckpt verify FILE...          exit 0 only when every file verifies\n"
    "       perennial ckpt diff A B [--json]       which tensors and attributes differ, and by how much\n"
    "FILE is a training checkpoint (RUN/checkpoints/ckpt-*.h5) or a weights file (RUN/model.h5).\n"
    "diff exits 0 when A and B hold the same tensors and attributes, 1 when they differ.\n";

// A subcommand's command line: --help, and --json where ASJSON is given; between MIN and MAX
// FILE arguments (WHAT names them when too few). Returns the files, or nothing after --help.
struct Parsed {
  bool help = false;
  std::vector<std::string> files;
};
Parsed parse(const std::string& sub, const std::vector<std::string>& args, size_t min, size_t max,
             const std::string& what, bool* asJson) {
  po::options_description desc("perennial ckpt " + sub + " options");
  desc.add_options()("help,h", "print this help");
  if (asJson) desc.add_options()("json", po::bool_switch(asJson), "print JSON");
  po::variables_map vm;
  Parsed out;
  out.files = parseCommandLine(args, desc, vm);
  po::notify(vm);
  if (vm.count("help")) {
    std::cout << kUsage << "\n" << desc;
    out.help = true;
    return out;
  }
  expectArguments(out.files, min, max, what);
  return out;
}

// Reads either kind of Perennial file with full verification.
Document load(const std::string& path) {
  Document doc = checkpoint::readDocument(path);
  if (doc.format == checkpoint::kCheckpointFormat) return checkpoint::verifyCheckpoint(path);
  if (doc.format != checkpoint::kWeightsFormat) {
    throw DataError(path + ": format '" + doc.format + "' is neither a checkpoint nor a weights file");
  }
  return doc;
}

json describe(const std::string& path, const Document& doc) {
  json attrs = json::object();
  for (const auto& [k, v] : doc.strings) attrs[k] = v;
  for (const auto& [k, v] : doc.ints) attrs[k] = v;
  for (const auto& [k, v] : doc.floats) attrs[k] = v;
  json groups = json::array();
  int64_t total = 0;
  for (const auto& g : doc.groups) {
    json ts = json::array();
    for (const auto& t : g.tensors) {
      ts.push_back({{"name", t.name}, {"dtype", dtypeName(t.type)}, {"shape", t.shape}, {"bytes", t.byteSize()}});
      total += static_cast<int64_t>(t.byteSize());
    }
    groups.push_back({{"path", g.path}, {"tensors", ts}});
  }
  json j = {{"file", path}, {"format", doc.format}, {"format_version", doc.formatVersion},
            {"attributes", attrs}, {"groups", groups}, {"tensor_bytes", total},
            {"sha256", toHex(sha256File(path))}};
  const std::string manifest = path.size() > 3 ? path.substr(0, path.size() - 3) + ".json" : "";
  std::ifstream in(manifest);
  if (in) {
    try {
      j["manifest"] = json::parse(in);
    } catch (const json::exception&) {
      j["manifest"] = "unreadable";
    }
  }
  return j;
}

int inspect(const std::vector<std::string>& args) {
  bool asJson = false;
  const Parsed p = parse("inspect", args, 1, 1, "FILE", &asJson);
  if (p.help) return 0;
  const std::string& file = p.files[0];
  Document doc = load(file);
  json j = describe(file, doc);
  if (asJson) {
    std::cout << dumpJson(j, 2) << "\n";
    return 0;
  }
  std::cout << file << ": " << doc.format << " v" << doc.formatVersion << ", sha256 " << j["sha256"].get<std::string>()
            << "\n";
  for (const auto& [k, v] : j["attributes"].items()) {
    std::string text = v.is_string() ? v.get<std::string>() : dumpJson(v);
    if (text.find('\n') != std::string::npos) {
      std::cout << "  @" << k << ":\n";
      std::istringstream lines(text);
      std::string line;
      while (std::getline(lines, line)) std::cout << "      " << line << "\n";
    } else {
      std::cout << "  @" << k << " = " << text << "\n";
    }
  }
  for (const auto& g : doc.groups) {
    std::cout << "  /" << g.path << "\n";
    for (const auto& t : g.tensors) {
      std::cout << "      " << t.name << "  " << dtypeName(t.type) << " [";
      for (size_t i = 0; i < t.shape.size(); ++i) std::cout << (i ? ", " : "") << t.shape[i];
      std::cout << "]\n";
    }
  }
  std::cout << "  " << j["tensor_bytes"].get<int64_t>() << " bytes of tensors\n";
  return 0;
}

int verify(const std::vector<std::string>& args) {
  const Parsed p = parse("verify", args, 1, SIZE_MAX, "at least one FILE", nullptr);
  if (p.help) return 0;
  int bad = 0;
  for (const auto& path : p.files) {
    try {
      load(path);
      std::cout << "OK    " << path << "\n";
    } catch (const Error& e) {
      std::cout << "FAIL  " << e.what() << "\n";
      ++bad;
    }
  }
  return bad == 0 ? 0 : 1;
}

double asDouble(const checkpoint::Tensor& t, int64_t i) {
  const auto* p = static_cast<const uint8_t*>(t.data());
  switch (t.type) {
    case DType::kUInt8: return p[i];
    case DType::kInt32: { int32_t v; std::memcpy(&v, p + i * 4, 4); return v; }
    case DType::kInt64: { int64_t v; std::memcpy(&v, p + i * 8, 8); return static_cast<double>(v); }
    case DType::kFloat32: { float v; std::memcpy(&v, p + i * 4, 4); return v; }
    case DType::kFloat64: { double v; std::memcpy(&v, p + i * 8, 8); return v; }
    case DType::kBFloat16: { uint16_t v; std::memcpy(&v, p + i * 2, 2); return bf16ToFloat(v); }
    case DType::kFloat16: { uint16_t v; std::memcpy(&v, p + i * 2, 2); return halfToFloat(v); }
  }
  return 0;
}

int diff(const std::vector<std::string>& args) {
  bool asJson = false;
  const Parsed p = parse("diff", args, 2, 2, "two files A B", &asJson);
  if (p.help) return 0;
  const std::string &fileA = p.files[0], &fileB = p.files[1];
  Document a = load(fileA), b = load(fileB);
  json attrs = json::array(), tensors = json::array();
  auto describeAttrs = [](const Document& d) {
    std::map<std::string, std::string> m;
    for (const auto& [k, v] : d.strings) m[k] = v;
    for (const auto& [k, v] : d.ints) m[k] = std::to_string(v);
    for (const auto& [k, v] : d.floats) m[k] = dumpJson(json(v));
    return m;
  };
  auto am = describeAttrs(a), bm = describeAttrs(b);
  for (const auto& [k, v] : am) {
    auto it = bm.find(k);
    if (it == bm.end()) attrs.push_back({{"attribute", k}, {"only_in", "A"}});
    else if (it->second != v) attrs.push_back({{"attribute", k}, {"a", v}, {"b", it->second}});
  }
  for (const auto& [k, v] : bm) {
    if (!am.count(k)) attrs.push_back({{"attribute", k}, {"only_in", "B"}});
  }
  for (const auto& ga : a.groups) {
    const checkpoint::Group* gb = b.group(ga.path);
    for (const auto& ta : ga.tensors) {
      const std::string name = ga.path + "/" + ta.name;
      const checkpoint::Tensor* tb = gb ? gb->find(ta.name) : nullptr;
      if (!tb) {
        tensors.push_back({{"tensor", name}, {"only_in", "A"}});
        continue;
      }
      if (ta.shape != tb->shape || ta.type != tb->type) {
        tensors.push_back({{"tensor", name}, {"a_shape", ta.shape}, {"b_shape", tb->shape},
                           {"a_dtype", dtypeName(ta.type)}, {"b_dtype", dtypeName(tb->type)}});
        continue;
      }
      if (ta.byteSize() == tb->byteSize() && std::memcmp(ta.data(), tb->data(), ta.byteSize()) == 0) continue;
      int64_t differing = 0;
      double maxAbs = 0;
      for (int64_t i = 0; i < ta.elements(); ++i) {
        const double x = asDouble(ta, i), y = asDouble(*tb, i);
        if (x != y || std::memcmp(&x, &y, sizeof(double)) != 0) {
          ++differing;
          maxAbs = std::max(maxAbs, std::fabs(x - y));
        }
      }
      tensors.push_back({{"tensor", name}, {"elements", ta.elements()}, {"differing", differing}, {"max_abs_diff", maxAbs}});
    }
  }
  for (const auto& gb : b.groups) {
    const checkpoint::Group* ga = a.group(gb.path);
    for (const auto& tb : gb.tensors) {
      if (!ga || !ga->find(tb.name)) tensors.push_back({{"tensor", gb.path + "/" + tb.name}, {"only_in", "B"}});
    }
  }
  const bool same = attrs.empty() && tensors.empty();
  if (asJson) {
    std::cout << json{{"a", fileA}, {"b", fileB}, {"identical", same}, {"attributes", attrs}, {"tensors", tensors}}.dump(2)
              << "\n";
  } else if (same) {
    std::cout << "identical tensors and attributes\n";
  } else {
    for (const auto& d : attrs) {
      if (d.contains("only_in")) {
        std::cout << "attribute " << d["attribute"].get<std::string>() << ": only in " << d["only_in"].get<std::string>() << "\n";
      } else {
        std::string va = d["a"].get<std::string>(), vb = d["b"].get<std::string>();
        if (va.size() > 60 || va.find('\n') != std::string::npos) va = "(" + std::to_string(va.size()) + " chars)";
        if (vb.size() > 60 || vb.find('\n') != std::string::npos) vb = "(" + std::to_string(vb.size()) + " chars)";
        std::cout << "attribute " << d["attribute"].get<std::string>() << ": " << va << " -> " << vb << "\n";
      }
    }
    for (const auto& d : tensors) {
      std::cout << "tensor " << d["tensor"].get<std::string>() << ": ";
      if (d.contains("only_in")) std::cout << "only in " << d["only_in"].get<std::string>() << "\n";
      else if (d.contains("a_shape")) std::cout << "shape/dtype " << dumpJson(d["a_shape"]) << " " << d["a_dtype"].get<std::string>()
                                                << " vs " << dumpJson(d["b_shape"]) << " " << d["b_dtype"].get<std::string>() << "\n";
      else std::cout << d["differing"].get<int64_t>() << " of " << d["elements"].get<int64_t>() << " elements differ, max |a-b| "
                     << d["max_abs_diff"].get<double>() << "\n";
    }
  }
  return same ? 0 : 1;
}

}  // namespace

int ckptCommand(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << kUsage;
    return args.empty() ? 2 : 0;
  }
  std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "inspect") return inspect(rest);
  if (args[0] == "verify") return verify(rest);
  if (args[0] == "diff") return diff(rest);
  throw ConfigError("ckpt: unknown subcommand '" + args[0] + "'\n" + kUsage);
}

}  // namespace perennial::cli
