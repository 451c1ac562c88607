// `perennial registry`: the model registry (list, show, promote, rollback, verify, export).
#include <boost/program_options.hpp>

#include <stdlib.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <iostream>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/command_line.h"
#include "common/error.h"
#include "common/exit_codes.h"
#include "common/fs_util.h"
#include "common/text.h"
#include "scheduler/cli/sched_command.h"
#include "dataset/snapshot.h"
#include "scheduler/registry.h"
#include "scheduler/subprocess_gate.h"

namespace perennial::cli {
namespace po = boost::program_options;
namespace stdfs = std::filesystem;
using nlohmann::json;
using namespace perennial::sched;

int registryCommand(const std::vector<std::string>& args) {
  const char* usage =
      "usage: perennial registry <command> (--registry DIR | --root ROOT) ...\n\n"
      "  list                       [--json]  models, versions, aliases; each version's accuracy and the\n"
      "                             holdout it was measured on (its id and rows)\n"
      "  list --holdout DIR         [--device D] [--timeout-s S] [--json]  also measures every version\n"
      "                             on DIR, one holdout for all, so that they can be compared; each\n"
      "                             measurement may run S seconds (default 3600)\n"
      "  show NAME[:VERSION|ALIAS]  [--json]  one version (default: the champion)\n"
      "  promote NAME VERSION       [--reason TEXT]\n"
      "  rollback NAME              [--reason TEXT]  the previous champion becomes champion again\n"
      "  verify NAME[:VERSION]      the version's files against files.json\n"
      "  export NAME[:VERSION] --out DIR\n";
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << usage;
    return args.empty() ? 2 : 0;
  }
  const std::string sub = args[0];
  po::options_description desc;
  std::string registry, root, reason, out, holdout, device;
  double timeoutS = 3600;
  bool asJson = false;
  std::vector<std::string> pos;
  desc.add_options()("help,h", "print this help")("registry", po::value<std::string>(&registry))(
      "root", po::value<std::string>(&root))(
      "reason", po::value<std::string>(&reason)->default_value("by hand"))("out", po::value<std::string>(&out))(
      "json", po::bool_switch(&asJson))("holdout", po::value<std::string>(&holdout))(
      "device", po::value<std::string>(&device)->default_value("auto"))(
      "timeout-s", po::value<double>(&timeoutS)->default_value(3600))("positional", po::value<std::vector<std::string>>(&pos));
  po::positional_options_description p;
  p.add("positional", -1);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(std::vector<std::string>(args.begin() + 1, args.end()))
                  .options(desc).positional(p)
                  .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing).run(),
              vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw ConfigError(std::string("command line: ") + programOptionsMessage(e));
  }
  if (vm.count("help")) {
    std::cout << usage;
    return 0;
  }
  if ((!holdout.empty() || !vm["device"].defaulted()) && sub != "list") {
    throw ConfigError("command line: --holdout and --device go with `registry list` only");
  }
  if (!vm["timeout-s"].defaulted() && (sub != "list" || holdout.empty())) {
    throw ConfigError("command line: --timeout-s goes with `registry list --holdout DIR` only");
  }
  if (!(timeoutS > 0)) throw ConfigError("command line: --timeout-s: must be a number of seconds > 0");
  Registry reg(registryDirFrom(registry, root));
  auto need = [&](size_t n, const char* what) {
    if (pos.size() != n) throw ConfigError(std::string("usage: perennial registry ") + sub + " " + what);
  };
  if (sub == "list") {
    need(0, "");
    // --holdout DIR: every version measured again on one holdout, in child processes
    // (`perennial eval`), as the scheduler's decay trigger does.
    std::optional<data::ShardSetIdentity> common;
    std::vector<std::string> holdoutShards;  // listed once for every version
    std::unique_ptr<SubprocessEvaluator> evaluator;
    std::string scratch;
    if (!holdout.empty()) {
      try {
        common = data::identifyShards(holdout);
        holdoutShards = fs::listFiles(holdout, ".h5");
      } catch (const Error& e) {
        throw ConfigError(std::string("--holdout: ") + e.what());
      }
      const char* tmpdir = std::getenv("TMPDIR");
      const std::string base = tmpdir && *tmpdir ? tmpdir : "/tmp";
      std::string tmpl = base + "/perennial-registry-XXXXXX";
      const char* made = ::mkdtemp(tmpl.data());
      if (!made) throw IoError("cannot create a scratch folder in " + base + ": " + std::strerror(errno));
      scratch = made;
      evaluator = std::make_unique<SubprocessEvaluator>(scratch, device, timeoutS, "--timeout-s");
    }
    struct Cleanup {
      std::string dir;
      ~Cleanup() {
        std::error_code ec;
        if (!dir.empty()) stdfs::remove_all(dir, ec);
      }
    } cleanup{scratch};
    json j = json::array();
    for (const auto& m : reg.models()) {
      json versions = json::array();
      for (const auto& v : reg.versions(m)) {
        VersionInfo info = reg.show(m, v);
        json row{{"version", v}, {"aliases", info.aliases}, {"metrics", info.metrics},
                 {"run_id", info.lineage.value("run_id", "")}};
        if (common) {
          json again{{"holdout", holdout}, {"holdout_id", common->id}, {"holdout_rows", common->rows}};
          try {
            again["accuracy"] = evaluator->accuracy(info.dir + "/model.h5", holdoutShards);
          } catch (const Error& e) {
            again["error"] = e.what();
          }
          row["remeasured"] = again;
        }
        versions.push_back(row);
      }
      j.push_back({{"model", m}, {"aliases", reg.aliases(m)}, {"versions", versions}});
    }
    if (asJson) {
      std::cout << dumpJson(j, 2) << "\n";
      return 0;
    }
    auto shortId = [](const std::string& id) { return id.empty() ? std::string("(not recorded)") : id.substr(0, 12); };
    for (const auto& m : j) {
      std::set<std::string> holdouts;
      for (const auto& v : m["versions"]) {
        const json& metrics = v["metrics"];
        const std::string id = metrics.is_object() ? metrics.value("holdout_id", "") : "";
        holdouts.insert(id);
        std::string aliases;
        for (const auto& a : v["aliases"]) aliases += (aliases.empty() ? "" : ",") + a.get<std::string>();
        std::cout << m["model"].get<std::string>() << "  " << v["version"].get<std::string>() << "  accuracy "
                  << (metrics.is_object() ? metrics.value("accuracy", 0.0) : 0.0) << " on holdout " << shortId(id);
        if (metrics.is_object() && metrics.value("holdout_rows", int64_t{0}) > 0) {
          std::cout << " (" << metrics.value("holdout_rows", int64_t{0}) << " rows)";
        }
        std::cout << "  run " << v["run_id"].get<std::string>() << (aliases.empty() ? "" : "  [" + aliases + "]") << "\n";
        if (v.contains("remeasured")) {
          const json& a = v["remeasured"];
          if (a.contains("accuracy")) {
            std::cout << "    on " << holdout << ": accuracy " << a["accuracy"].get<double>() << " (holdout "
                      << shortId(common->id) << ", " << common->rows << " rows)\n";
          } else {
            std::cout << "    on " << holdout << ": not measured: " << printable(a.value("error", "")) << "\n";
          }
        }
      }
      if (holdouts.size() > 1 && !common) {
        std::cout << "note: the versions of " << m["model"].get<std::string>() << " were measured on " << holdouts.size()
                  << " different holdouts: their accuracies are not comparable; `perennial registry list --holdout DIR` "
                     "measures them all on one\n";
      }
    }
    return 0;
  }
  if (sub == "show") {
    need(1, "NAME[:VERSION]");
    auto [name, version] = splitModelRef(pos[0], "champion");
    VersionInfo v = reg.show(name, version);
    json j{{"model", v.name}, {"version", v.version}, {"dir", v.dir}, {"aliases", v.aliases}, {"spec", v.spec},
           {"lineage", v.lineage}, {"metrics", v.metrics}, {"verdict", v.verdict}};
    std::cout << dumpJson(j, 2) << "\n";
    return 0;
  }
  if (sub == "promote") {
    need(2, "NAME VERSION");
    Registry::checkName("model name", pos[0]);
    auto old = reg.promote(pos[0], reg.resolve(pos[0], pos[1]), reason);
    std::cout << pos[0] << ": champion " << (old ? *old : std::string("(none)")) << " -> " << pos[1] << "\n";
    return 0;
  }
  if (sub == "rollback") {
    need(1, "NAME");
    const std::string from = reg.alias(pos[0], "champion").value_or("(none)");
    const std::string to = reg.rollback(pos[0], reason);
    std::cout << pos[0] << ": champion " << from << " -> " << to << "\n";
    return 0;
  }
  if (sub == "verify") {
    need(1, "NAME[:VERSION]");
    auto [name, version] = splitModelRef(pos[0], "champion");
    auto problems = reg.verify(name, version);
    for (const auto& pr : problems) std::cerr << pr << "\n";
    if (!problems.empty()) throw DataError(name + ":" + version + ": " + std::to_string(problems.size()) + " problem(s)");
    std::cout << name << ":" << reg.resolve(name, version) << ": ok\n";
    return 0;
  }
  if (sub == "export") {
    need(1, "NAME[:VERSION] --out DIR");
    if (out.empty()) throw ConfigError("--out: required");
    auto [name, version] = splitModelRef(pos[0], "champion");
    reg.exportTo(name, version, out);
    std::cout << "exported " << name << ":" << reg.resolve(name, version) << " to " << out << "\n";
    return 0;
  }
  std::cerr << "perennial registry: unknown command '" << sub << "'\n" << usage;
  return 2;
}

}  // namespace perennial::cli
