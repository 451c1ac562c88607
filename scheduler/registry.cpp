#include "scheduler/registry.h"
#include "common/text.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/fault.h"
#include "common/exit_codes.h"
#include "common/read_file.h"
#include "common/fs_util.h"
#include "common/sha256.h"
#include "scheduler/process.h"

namespace perennial::sched {
namespace {
namespace stdfs = std::filesystem;
using nlohmann::json;

const char* const kFiles[] = {"model.h5", "spec.json", "lineage.json", "metrics.json", "verdict.json"};
// Published when the run wrote it: a TorchScript model (model.arch = torchscript) with its
// trained weights, which `perennial eval`/`validate` load beside model.h5.
const char* const kOptionalFiles[] = {"model.pt"};

// The files of a version: the required ones, then the optional ones files.json lists.
std::vector<std::string> versionFiles(const json& files) {
  std::vector<std::string> out(std::begin(kFiles), std::end(kFiles));
  for (const char* f : kOptionalFiles) {
    if (files.is_object() && files.contains(f)) out.emplace_back(f);
  }
  return out;
}

json readJson(const std::string& path) {
  try {
    return json::parse(fs::readFile(path));
  } catch (const json::exception& e) {
    throw DataError(path + ": not valid JSON: " + e.what());
  }
}

// Holds an exclusive lock on a model's directory while publishing or moving aliases.
class ModelLock {
 public:
  explicit ModelLock(const std::string& dir) {
    stdfs::create_directories(dir);
    const std::string path = dir + "/.lock";
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0) throw IoError(path + ": cannot lock: " + std::strerror(errno));
  }
  ~ModelLock() { ::close(fd_); }
  ModelLock(const ModelLock&) = delete;
  ModelLock& operator=(const ModelLock&) = delete;

 private:
  int fd_ = -1;
};

void writeReadOnly(const std::string& path, const std::string& content) {
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out.flush()) throw IoError(path + ": cannot write");
  }
  fs::fsyncFile(path);
  ::chmod(path.c_str(), 0444);
}

int64_t versionNumber(const std::string& v) {
  if (v.size() < 2 || v.size() > 10 || v[0] != 'v') return -1;  // v1 .. v999999999
  for (size_t i = 1; i < v.size(); ++i) {
    if (v[i] < '0' || v[i] > '9') return -1;
  }
  return std::stoll(v.substr(1));
}

}  // namespace

Registry::Registry(std::string dir) : dir_(std::move(dir)) {}

void Registry::checkName(const std::string& what, const std::string& name) {
  auto bad = [&](const std::string& why) { throw ConfigError(what + " '" + name + "': " + why); };
  if (name.empty()) bad("must not be empty");
  if (name.size() > 100) bad("longer than 100 bytes");
  if (name == "." || name == ".." || name.find("..") != std::string::npos) bad("must not contain '..'");
  if (name[0] == '.' || name[0] == '-') bad("must not start with '.' or '-'");
  for (unsigned char ch : name) {
    if (ch == '/' || ch == '\\') bad("must not contain a path separator");
    if (ch < 0x20 || ch == 0x7f) bad("must not contain control characters (newline, tab, ...)");
  }
}

std::string Registry::modelDir(const std::string& name) const {
  checkName("model name", name);
  return dir_ + "/" + name;
}

std::string Registry::versionDir(const std::string& name, const std::string& version) const {
  checkName("version", version);
  return modelDir(name) + "/versions/" + version;
}

std::vector<std::string> Registry::models() const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(dir_, ec)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n[0] != '.') out.push_back(n);
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::string> Registry::versions(const std::string& name) const {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(modelDir(name) + "/versions", ec)) {
    const std::string n = e.path().filename().string();
    if (versionNumber(n) >= 0) out.push_back(n);
  }
  std::sort(out.begin(), out.end(), [](const std::string& a, const std::string& b) { return versionNumber(a) < versionNumber(b); });
  return out;
}

std::string Registry::publish(const PublishRequest& r) {
  const std::string mdir = modelDir(r.name);
  ModelLock lock(mdir);
  const std::string vroot = mdir + "/versions";
  stdfs::create_directories(vroot);
  // Idempotent per run: a scheduler that died after publishing finds the version again.
  // A version whose lineage cannot be read (damaged) is not taken for this run's, and does not
  // stop publishing.
  for (const auto& v : versions(r.name)) {
    if (r.runId.empty()) break;
    json lineage;
    try {
      lineage = readJson(vroot + "/" + v + "/lineage.json");
    } catch (const Error&) {
      continue;
    }
    if (lineage.is_object() && lineage.value("run_id", json()) == json(r.runId)) return v;
  }
  // Leftovers of a publish that died: never visible as versions; removed now.
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(vroot, ec)) {
    if (e.path().filename().string().rfind(".tmp-", 0) == 0) {
      stdfs::permissions(e.path(), stdfs::perms::owner_all, stdfs::perm_options::add, ec);
      stdfs::remove_all(e.path(), ec);
    }
  }
  const auto existing = versions(r.name);
  const std::string version = "v" + std::to_string(existing.empty() ? 1 : versionNumber(existing.back()) + 1);
  const std::string tmp = vroot + "/.tmp-" + version + "-" + std::to_string(::getpid());
  stdfs::create_directories(tmp);
  json lineage = r.lineage;
  lineage["run_id"] = r.runId;
  lineage["model"] = r.name;
  lineage["version"] = version;
  std::error_code copyError;
  stdfs::copy_file(r.weights, tmp + "/model.h5", stdfs::copy_options::overwrite_existing, copyError);
  if (copyError) throw IoError(r.weights + ": cannot copy into the registry (" + tmp + "): " + copyError.message());
  fs::fsyncFile(tmp + "/model.h5");
  ::chmod((tmp + "/model.h5").c_str(), 0444);
  const std::string script = (stdfs::path(r.weights).parent_path() / "model.pt").string();
  const bool hasScript = fs::isFile(script);
  if (hasScript) {
    stdfs::copy_file(script, tmp + "/model.pt", stdfs::copy_options::overwrite_existing);
    fs::fsyncFile(tmp + "/model.pt");
    ::chmod((tmp + "/model.pt").c_str(), 0444);
  }
  writeReadOnly(tmp + "/spec.json", dumpJson(r.spec, 2) + "\n");
  writeReadOnly(tmp + "/lineage.json", dumpJson(lineage, 2) + "\n");
  writeReadOnly(tmp + "/metrics.json", dumpJson(r.metrics, 2) + "\n");
  writeReadOnly(tmp + "/verdict.json", dumpJson(r.verdict, 2) + "\n");
  json files = json::object();
  for (const char* f : kFiles) files[f] = toHex(sha256File(tmp + "/" + f));
  if (hasScript) files["model.pt"] = toHex(sha256File(tmp + "/model.pt"));
  writeReadOnly(tmp + "/files.json", dumpJson(files, 2) + "\n");
  fs::fsyncDir(tmp);
  fault::reached("publish-files-written");
  if (::rename(tmp.c_str(), (vroot + "/" + version).c_str()) != 0) {
    throw IoError(vroot + "/" + version + ": cannot publish: " + std::strerror(errno));
  }
  fs::fsyncDir(vroot);
  fault::reached("publish-renamed");
  return version;
}

json Registry::aliases(const std::string& name) const {
  const std::string path = modelDir(name) + "/aliases.json";
  if (!fs::exists(path)) return json::object();
  return readJson(path);
}

std::optional<std::string> Registry::alias(const std::string& name, const std::string& a) const {
  json j = aliases(name);
  if (!j.contains(a) || !j[a].is_string()) return std::nullopt;
  return j[a].get<std::string>();
}

std::string Registry::resolve(const std::string& name, const std::string& v) const {
  if (versionNumber(v) >= 0) {
    if (!fs::isDirectory(versionDir(name, v))) throw ConfigError("model '" + name + "' has no version " + v);
    return v;
  }
  checkName("alias", v);
  auto a = alias(name, v);
  if (!a) throw ConfigError("model '" + name + "' has no '" + v + "' (versions are v1, v2, ...; aliases champion, previous)");
  return *a;
}

void Registry::writeAliases(const std::string& name, const json& aliases, const json& entry) {
  const std::string mdir = modelDir(name);
  // The history first: an alias never moves without its entry, and a failed append (a full
  // disk) leaves neither a torn line nor a moved alias.
  fs::appendLine(mdir + "/history.jsonl", dumpJson(entry));
  fs::writeFileAtomic(mdir + "/aliases.json", dumpJson(aliases, 2) + "\n");
}

std::optional<std::string> Registry::promote(const std::string& name, const std::string& version,
                                             const std::string& reason) {
  ModelLock lock(modelDir(name));
  resolve(name, version);
  json a = aliases(name);
  std::optional<std::string> old;
  if (a.contains("champion")) old = a["champion"].get<std::string>();
  if (old && *old == version) return old;
  if (old) a["previous"] = *old;
  a["champion"] = version;
  writeAliases(name, a, {{"action", "promote"}, {"from", old ? json(*old) : json(nullptr)}, {"to", version},
                         {"reason", reason}, {"at", static_cast<double>(::time(nullptr))}});
  return old;
}

std::string Registry::rollback(const std::string& name, const std::string& reason) {
  ModelLock lock(modelDir(name));
  json a = aliases(name);
  if (!a.contains("previous")) throw ConfigError("model '" + name + "': no previous champion to roll back to");
  const std::string from = a.value("champion", "");
  const std::string to = a["previous"].get<std::string>();
  // The new `previous` is the champion that `to` replaced when it was promoted, if any.
  std::optional<std::string> before;
  for (const HistoryEntry& e : history(name)) {
    if (e.to == to && !e.from.empty()) before = e.from;
  }
  a["champion"] = to;
  if (before && *before != to && *before != from) {
    a["previous"] = *before;
  } else {
    a.erase("previous");
  }
  writeAliases(name, a, {{"action", "rollback"}, {"from", from}, {"to", to}, {"reason", reason},
                         {"at", static_cast<double>(::time(nullptr))}});
  return to;
}

VersionInfo Registry::show(const std::string& name, const std::string& version) const {
  VersionInfo v;
  v.name = name;
  v.version = resolve(name, version);
  v.dir = versionDir(name, v.version);
  v.spec = readJson(v.dir + "/spec.json");
  v.lineage = readJson(v.dir + "/lineage.json");
  v.metrics = readJson(v.dir + "/metrics.json");
  v.verdict = readJson(v.dir + "/verdict.json");
  json a = aliases(name);
  for (auto it = a.begin(); it != a.end(); ++it) {
    if (it.value() == v.version) v.aliases.push_back(it.key());
  }
  return v;
}

std::vector<HistoryEntry> Registry::history(const std::string& name) const {
  std::vector<HistoryEntry> out;
  std::ifstream in(modelDir(name) + "/history.jsonl");
  auto str = [](const json& e, const char* key) {
    auto it = e.find(key);
    return it != e.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  for (std::string line; std::getline(in, line);) {
    const json e = json::parse(line, nullptr, false);
    if (!e.is_object()) continue;
    HistoryEntry entry{str(e, "action"), str(e, "from"), str(e, "to"), str(e, "reason"), std::nullopt};
    auto at = e.find("at");
    if (at != e.end() && at->is_number() && std::isfinite(at->get<double>())) entry.at = at->get<double>();
    out.push_back(std::move(entry));
  }
  return out;
}

std::vector<std::string> Registry::verify(const std::string& name, const std::string& version) const {
  return checkFiles(versionDir(name, resolve(name, version)), /*modes=*/true);
}

std::vector<std::string> Registry::damage(const std::string& name, const std::string& version) const {
  std::string d;
  try {
    d = versionDir(name, resolve(name, version));
  } catch (const Error& e) {
    return {e.what()};
  }
  std::vector<std::string> problems = checkFiles(d, /*modes=*/false);
  if (!problems.empty()) return problems;
  // Intact as published; parse what the scheduler reads (files.json could have been rewritten
  // to match altered files).
  for (const char* f : {"spec.json", "lineage.json", "metrics.json", "verdict.json"}) {
    try {
      readJson(d + "/" + f);
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
  }
  return problems;
}

std::vector<std::string> Registry::checkFiles(const std::string& d, bool modes) const {
  std::vector<std::string> problems;
  json files;
  try {
    files = readJson(d + "/files.json");
  } catch (const Error& e) {
    return {e.what()};
  }
  for (const std::string& f : versionFiles(files)) {
    const std::string p = d + "/" + f;
    if (!files.contains(f)) {
      problems.push_back(p + ": not listed in files.json");
      continue;
    }
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) {
      problems.push_back(p + ": missing");
      continue;
    }
    if (modes && (st.st_mode & 0222)) problems.push_back(p + ": writable (published files are read-only)");
    if (!files[f].is_string()) {
      problems.push_back(d + "/files.json: the entry for " + f + " is not a SHA-256");
      continue;
    }
    try {
      const std::string h = toHex(sha256File(p));
      if (h != files[f].get<std::string>()) problems.push_back(p + ": SHA-256 " + h + " differs from files.json");
    } catch (const Error& e) {
      problems.push_back(e.what());
    }
  }
  return problems;
}

void Registry::exportTo(const std::string& name, const std::string& version, const std::string& out) const {
  const std::string d = versionDir(name, resolve(name, version));
  if (fs::exists(out)) throw ConfigError("--out: " + out + " already exists");
  stdfs::create_directories(out);
  const json files = readJson(d + "/files.json");
  for (const std::string& f : versionFiles(files)) stdfs::copy_file(d + "/" + f, out + "/" + f);
  stdfs::copy_file(d + "/files.json", out + "/files.json");
}

int runOnPromote(const std::vector<std::string>& argv, const VersionInfo& v, const std::string& previous,
                 const std::string& log, double timeoutS) {
  std::vector<std::string> env{"PERENNIAL_MODEL=" + v.name, "PERENNIAL_VERSION=" + v.version,
                               "PERENNIAL_VERSION_DIR=" + v.dir, "PERENNIAL_WEIGHTS=" + v.dir + "/model.h5",
                               "PERENNIAL_PREVIOUS=" + previous,
                               "PERENNIAL_RUN=" + (v.lineage.is_object() ? v.lineage.value("run_id", "") : "")};
  if (v.metrics.is_object() && v.metrics.contains("accuracy")) {
    env.push_back("PERENNIAL_ACCURACY=" + dumpJson(v.metrics["accuracy"]));
  }
  const int rc = runProcess(argv, log, timeoutS, env);
  return rc == -1 ? exit_code::kTimeout : rc;
}

std::string registryDirFrom(const std::string& registry, const std::string& root) {
  if (!registry.empty()) return registry;
  if (!root.empty()) return root + "/registry";
  throw ConfigError("--registry DIR or --root DIR: required");
}

std::pair<std::string, std::string> splitModelRef(const std::string& ref, const std::string& defaultVersion) {
  const auto colon = ref.find(':');
  if (colon == std::string::npos) return {ref, defaultVersion};
  return {ref.substr(0, colon), ref.substr(colon + 1)};
}

}  // namespace perennial::sched
