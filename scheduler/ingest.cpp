#include "scheduler/ingest.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/fs_util.h"
#include "common/log.h"
#include "common/sha256.h"

namespace perennial::sched {
namespace {
namespace stdfs = std::filesystem;
using nlohmann::json;

bool ignoredName(const std::string& name) {
  auto endsWith = [&](const char* s) {
    const size_t n = std::strlen(s);
    return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
  };
  return name.empty() || name[0] == '.' || endsWith(".tmp") || endsWith(".part");
}

}  // namespace

void ensureRootLayout(const std::string& root) {
  for (const char* d : {"incoming", "data", "quarantine", "runs", "tmp"}) {
    std::error_code ec;
    const stdfs::path p = stdfs::path(root) / d;
    if (stdfs::create_directories(p, ec) && !ec) {
      // New folders: no write access for others (incoming/ stays group-writable, so a data
      // producer's group can deliver shards).
      stdfs::permissions(p, std::string(d) == "incoming" ? stdfs::perms(0770) : stdfs::perms(0750),
                         stdfs::perm_options::replace, ec);
    }
    if (ec) throw IoError(root + "/" + d + ": cannot create: " + ec.message());
  }
}

Ingester::Ingester(Catalog& catalog, std::string root, DatasetRules rules, double settleS, Clock& clock)
    : cat_(catalog), root_(std::move(root)), rules_(std::move(rules)), settleS_(settleS), clock_(clock) {}

std::vector<std::string> Ingester::pending() {
  std::vector<std::string> out;
  std::error_code ec;
  const double now = clock_.now();
  for (const auto& e : stdfs::directory_iterator(root_ + "/incoming", ec)) {
    const std::string name = e.path().filename().string();
    if (ignoredName(name)) continue;
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    if (settleS_ > 0 && static_cast<double>(st.st_mtime) > now - settleS_) continue;
    out.push_back(name);
  }
  if (ec) throw IoError(root_ + "/incoming: cannot list: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<IngestOutcome> Ingester::ingestPending() {
  std::vector<IngestOutcome> out;
  for (const auto& name : pending()) out.push_back(ingest(name));
  return out;
}

IngestOutcome Ingester::ingest(const std::string& name) {
  auto log = log::get("ingest");
  const std::string path = root_ + "/incoming/" + name;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw IoError(path + ": cannot stat: " + std::strerror(errno));
  std::string hash;
  try {
    hash = toHex(sha256File(path));
  } catch (const Error& e) {
    return quarantine(name, "", "hdf5", e.what());
  }
  ShardSummary summary;
  try {
    summary = validateShard(path, rules_);
  } catch (const ShardRejected& e) {
    return quarantine(name, hash, e.rule(), e.what());
  }
  fault("validated");
  const std::string rel = "data/" + hash + ".h5";
  const std::string dest = root_ + "/" + rel;
  struct stat dst {};
  const bool destExists = ::stat(dest.c_str(), &dst) == 0;
  const bool sameInode = destExists && dst.st_ino == st.st_ino && dst.st_dev == st.st_dev;
  if (auto existing = cat_.shardByHash(hash)) {
    if (sameInode) {
      // Our own ingest of this very file was interrupted after the catalog insert.
      ::unlink(path.c_str());
      fs::fsyncDir(root_ + "/incoming");
      IngestOutcome o{name, true, hash, existing->rows, "", ""};
      return o;
    }
    return quarantine(name, hash, "duplicate",
                      path + ": same content (sha256 " + hash + ") as shard " + std::to_string(existing->seq) +
                          " (arrived as '" + existing->source + "')");
  }
  if (!destExists) {
    if (::link(path.c_str(), dest.c_str()) != 0) throw IoError(dest + ": cannot link: " + std::strerror(errno));
  }
  // (An existing data file without a catalog row has the same bytes: its name is their hash.)
  ::chmod(dest.c_str(), 0444);
  fs::fsyncDir(root_ + "/data");
  fault("linked");
  ShardRecord rec;
  rec.hash = hash;
  rec.file = rel;
  rec.source = name;
  rec.rows = summary.rows;
  rec.bytes = summary.bytes;
  rec.profile = summary.profile.toJson().dump();
  rec.ingestedAt = clock_.now();
  cat_.transaction([&] {
    cat_.insertShard(rec);
    cat_.addEvent(rec.ingestedAt, "ingest", hash,
                  {{"source", name}, {"seq", rec.seq}, {"rows", rec.rows}, {"bytes", rec.bytes}});
  });
  fault("recorded");
  ::unlink(path.c_str());
  fs::fsyncDir(root_ + "/incoming");
  log->info("ingested {} as shard {} ({} rows, sha256 {})", name, rec.seq, rec.rows, hash.substr(0, 16));
  return {name, true, hash, rec.rows, "", ""};
}

IngestOutcome Ingester::quarantine(const std::string& name, const std::string& hash, const std::string& rule,
                                   const std::string& reason) {
  auto log = log::get("ingest");
  // The same file always gets the same quarantine name, so a retry after a crash is idempotent.
  struct stat st {};
  ::stat((root_ + "/incoming/" + name).c_str(), &st);
  const std::string qname =
      name + "." + (hash.empty() ? "unreadable-" + std::to_string(st.st_ino) : hash.substr(0, 16));
  const std::string rel = "quarantine/" + qname;
  const double now = clock_.now();
  cat_.transaction([&] {
    cat_.insertQuarantine({0, rel, name, rule, reason, now});
    if (cat_.db().changes() > 0) {
      cat_.addEvent(now, "quarantine", hash, {{"source", name}, {"file", rel}, {"rule", rule}, {"reason", reason}});
    }
  });
  fault("quarantine-recorded");
  json why{{"source", name}, {"sha256", hash}, {"rule", rule}, {"reason", reason}, {"at", now}};
  fs::writeFileAtomic(root_ + "/" + rel + ".reason.json", why.dump(2) + "\n");
  const std::string from = root_ + "/incoming/" + name;
  if (::rename(from.c_str(), (root_ + "/" + rel).c_str()) != 0) {
    throw IoError(from + ": cannot move to " + rel + ": " + std::strerror(errno));
  }
  fs::fsyncDir(root_ + "/quarantine");
  fs::fsyncDir(root_ + "/incoming");
  fault("quarantine-moved");
  log->warn("quarantined {} ({}): {}", name, rule, reason);
  return {name, false, hash, 0, rule, reason};
}

std::vector<std::string> stageFiles(const std::string& root, const std::vector<std::string>& files) {
  std::vector<std::string> names;
  for (const auto& f : files) {
    const std::string name = stdfs::path(f).filename().string();
    if (ignoredName(name)) throw DataError(f + ": names starting with '.' or ending in .tmp/.part are never ingested");
    if (!stdfs::is_regular_file(f)) throw DataError(f + ": not a regular file");
    const std::string tmp = root + "/incoming/." + name + ".tmp";
    const std::string dest = root + "/incoming/" + name;
    if (stdfs::exists(dest)) throw DataError(dest + ": a file of that name is already waiting in incoming/");
    std::error_code ec;
    stdfs::copy_file(f, tmp, stdfs::copy_options::overwrite_existing, ec);
    if (ec) throw DataError(f + ": cannot copy into " + root + "/incoming: " + ec.message());
    fs::fsyncFile(tmp);
    fs::publish(tmp, dest);
    names.push_back(name);
  }
  return names;
}

}  // namespace perennial::sched
