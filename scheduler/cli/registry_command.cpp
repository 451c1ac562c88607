// `perennial registry`: the model registry (list, show, promote, rollback, verify, export).
#include <boost/program_options.hpp>

#include <filesystem>
#include <iostream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "common/command_line.h"
#include "common/error.h"
#include "common/exit_codes.h"
#include "common/fs_util.h"
#include "common/text.h"
#include "scheduler/cli/sched_command.h"
#include "scheduler/registry.h"

namespace perennial::cli {
namespace po = boost::program_options;
namespace stdfs = std::filesystem;
using nlohmann::json;
using namespace perennial::sched;

int registryCommand(const std::vector<std::string>& args) {
  const char* usage =
      "usage: perennial registry <command> (--registry DIR | --root ROOT) ...\n\n"
      "  list                       [--json]  models, versions, aliases\n"
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
  std::string registry, root, reason, out;
  bool asJson = false;
  std::vector<std::string> pos;
  desc.add_options()("help,h", "print this help")("registry", po::value<std::string>(&registry))(
      "root", po::value<std::string>(&root))(
      "reason", po::value<std::string>(&reason)->default_value("by hand"))("out", po::value<std::string>(&out))(
      "json", po::bool_switch(&asJson))("positional", po::value<std::vector<std::string>>(&pos));
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
  Registry reg(registryDirFrom(registry, root));
  auto need = [&](size_t n, const char* what) {
    if (pos.size() != n) throw ConfigError(std::string("usage: perennial registry ") + sub + " " + what);
  };
  if (sub == "list") {
    need(0, "");
    json j = json::array();
    for (const auto& m : reg.models()) {
      json versions = json::array();
      for (const auto& v : reg.versions(m)) {
        VersionInfo info = reg.show(m, v);
        versions.push_back({{"version", v}, {"aliases", info.aliases}, {"metrics", info.metrics},
                            {"run_id", info.lineage.value("run_id", "")}});
      }
      j.push_back({{"model", m}, {"aliases", reg.aliases(m)}, {"versions", versions}});
    }
    if (asJson) {
      std::cout << dumpJson(j, 2) << "\n";
    } else {
      for (const auto& m : j) {
        for (const auto& v : m["versions"]) {
          std::string aliases;
          for (const auto& a : v["aliases"]) aliases += (aliases.empty() ? "" : ",") + a.get<std::string>();
          std::cout << m["model"].get<std::string>() << "  " << v["version"].get<std::string>() << "  accuracy "
                    << v["metrics"].value("accuracy", 0.0) << "  run " << v["run_id"].get<std::string>()
                    << (aliases.empty() ? "" : "  [" + aliases + "]") << "\n";
        }
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
