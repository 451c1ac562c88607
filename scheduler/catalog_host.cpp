#include "scheduler/catalog_host.h"

#include <limits.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs_util.h"
#include "common/text.h"

namespace perennial::sched {
namespace {

using nlohmann::json;

constexpr size_t kMaxRecordBytes = 4096;

std::string recordText(const HostIdentity& me) {
  return dumpJson(json{{"host", me.host}, {"boot_id", me.bootId}, {"recorded_at", static_cast<int64_t>(std::time(nullptr))}},
                  2) +
         "\n";
}

// Whether this process may create files beside PATH.
bool mayWrite(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  return ::access(dir.empty() ? "." : dir.c_str(), W_OK) == 0;
}

// Creates PATH with ME's record unless it exists: written under a private name, then linked to
// PATH, which fails if another process (on any host) made PATH first. False when PATH existed;
// also false, leaving no record, when this process may not write the folder.
bool createRecord(const std::string& path, const HostIdentity& me) {
  if (!mayWrite(path)) return false;
  const std::string tmp = path + ".new." + fs::randomHex();
  fs::writeFileAtomic(tmp, recordText(me));
  const int rc = ::link(tmp.c_str(), path.c_str());
  const int err = errno;
  ::unlink(tmp.c_str());
  if (rc != 0 && err == EEXIST) return false;
  if (rc != 0) throw IoError(path + ": cannot create the catalog's host record: " + std::strerror(err));
  fs::fsyncDir(std::filesystem::path(path).parent_path().string());
  return true;
}

// The record at PATH; nullopt when there is none.
std::optional<HostIdentity> readRecord(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (errno == ENOENT) return std::nullopt;
    throw IoError(path + ": cannot read the catalog's host record: " + std::strerror(errno));
  }
  std::string text(kMaxRecordBytes + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<size_t>(in.gcount()));
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (text.size() > kMaxRecordBytes || !j.is_object() || !j.contains("host") || !j["host"].is_string() ||
      j["host"].get<std::string>().empty() || (j.contains("boot_id") && !j["boot_id"].is_string())) {
    throw IoError(path + ": not a catalog host record (a JSON object with a non-empty string \"host\"); "
                  "delete it on the host that runs the scheduler, and the next scheduler command records that host");
  }
  return HostIdentity{j["host"].get<std::string>(), j.value("boot_id", "")};
}

}  // namespace

HostIdentity thisHost() {
  HostIdentity me;
  char name[HOST_NAME_MAX + 1] = {};
  if (::gethostname(name, sizeof name - 1) == 0) me.host = name;
  if (me.host.empty()) me.host = "localhost";
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::getline(boot, me.bootId);
  return me;
}

std::string catalogHostFile(const std::string& dbPath) { return dbPath + ".host"; }

void claimCatalogHost(const std::string& dbPath, const HostIdentity& me) {
  const std::string path = catalogHostFile(dbPath);
  // Twice at most: a record that appears between the read and the create is read again.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const std::optional<HostIdentity> owner = readRecord(path);
    if (!owner) {
      if (createRecord(path, me) || attempt == 1) return;
      continue;
    }
    if (owner->host != me.host) {
      throw ConfigError(dbPath + ": the catalog belongs to host '" + printable(owner->host) + "' (recorded in " + path +
                        "), this is '" + printable(me.host) +
                        "': SQLite's WAL mode is not safe from two hosts, so run this command on '" +
                        printable(owner->host) +
                        "'. If the scheduler has moved to this host for good, stop it on the old one and delete " +
                        path + "; see docs/operations.md, \"Where the root may live\"");
    }
    if (owner->bootId != me.bootId && !me.bootId.empty()) {
      // The same host after a reboot (nothing from the previous boot holds the catalog open).
      if (mayWrite(path)) fs::writeFileAtomic(path, recordText(me));
    }
    return;
  }
}

}  // namespace perennial::sched
