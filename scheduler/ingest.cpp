#include "scheduler/ingest.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "common/fs_util.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/text.h"

namespace perennial::sched {
namespace {
namespace stdfs = std::filesystem;
using nlohmann::json;

constexpr size_t kCopyBlock = 1 << 20;
constexpr const char* kTmpPrefix = "ingest-";

bool ignoredName(const std::string& name) {
  auto endsWith = [&](const char* s) {
    const size_t n = std::strlen(s);
    return name.size() >= n && name.compare(name.size() - n, n, s) == 0;
  };
  return name.empty() || name[0] == '.' || endsWith(".tmp") || endsWith(".part");
}

// A file descriptor closed when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

std::string errnoText() { return std::strerror(errno); }

// What identifies one file: the same device, inode, size and modification time.
std::string identity(const struct stat& st) {
  return std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" + std::to_string(st.st_size) + ":" +
         std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec);
}

bool sameFile(const struct stat& a, const struct stat& b) { return a.st_dev == b.st_dev && a.st_ino == b.st_ino; }

std::string typeName(mode_t m) {
  if (S_ISLNK(m)) return "a symbolic link";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  if (S_ISDIR(m)) return "a directory";
  return "not a regular file";
}

void writeAll(int fd, const unsigned char* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) throw IoError(path + ": cannot write: " + errnoText());
    p += w;
    n -= static_cast<size_t>(w);
  }
}

}  // namespace

// One file of incoming/ while it is ingested.
struct Ingester::Candidate {
  std::string name;      // in incoming/ (raw bytes)
  std::string shown;     // "ROOT/incoming/NAME", NAME printable
  int dir = -1;          // incoming/
  struct stat st {};     // of the descriptor (or of the entry, for what is never opened)
  bool opened = false;
  std::string copy;      // the private copy in ROOT/tmp/, while there is one
  ~Candidate() {
    if (!copy.empty()) ::unlink(copy.c_str());
  }
};

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
    // Everything but folders: a symbolic link or a FIFO is quarantined (unread) by ingest().
    struct stat st {};
    if (::lstat(e.path().c_str(), &st) != 0 || S_ISDIR(st.st_mode)) continue;
    if (S_ISREG(st.st_mode) && settleS_ > 0 && static_cast<double>(st.st_mtime) > now - settleS_) continue;
    out.push_back(name);
  }
  if (ec) throw IoError(root_ + "/incoming: cannot list: " + ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<IngestOutcome> Ingester::ingestPending() {
  // Private copies left by a pass that was killed (only the holder of the root's lock ingests).
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(root_ + "/tmp", ec)) {
    if (e.path().filename().string().rfind(kTmpPrefix, 0) == 0) ::unlink(e.path().c_str());
  }
  std::vector<IngestOutcome> out;
  for (const auto& name : pending()) {
    try {
      out.push_back(ingest(name));
    } catch (const Error& e) {
      // This file alone: it waits in incoming/ for the next pass (the disk may be full).
      log::get("ingest")->warn("{}/incoming/{}: left for the next pass: {}", root_, log::shown(name), e.what());
      out.push_back({name, false, true, "", 0, "", e.what()});
    } catch (const std::system_error& e) {
      log::get("ingest")->warn("{}/incoming/{}: left for the next pass: {}", root_, log::shown(name), e.what());
      out.push_back({name, false, true, "", 0, "", e.what()});
    }
  }
  return out;
}

IngestOutcome Ingester::ingest(const std::string& name) {
  Candidate c;
  c.name = name;
  c.shown = root_ + "/incoming/" + printable(name);
  Fd dir(::open((root_ + "/incoming").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) throw IoError(root_ + "/incoming: cannot open: " + errnoText());
  c.dir = dir.get();
  return ingestOpen(c);
}

IngestOutcome Ingester::ingestOpen(Candidate& c) {
  auto log = log::get("ingest");
  // Opened once; a symbolic link is not followed and a FIFO does not block the open.
  Fd f(::openat(c.dir, c.name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!f) {
    const int err = errno;
    if (err == ENOENT) return {c.name, false, true, "", 0, "", "it vanished before it was read"};
    if (::fstatat(c.dir, c.name.c_str(), &c.st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return {c.name, false, true, "", 0, "", "it vanished before it was read"};
      throw IoError(c.shown + ": cannot stat: " + errnoText());
    }
    if (!S_ISREG(c.st.st_mode)) {
      return quarantine(c, "", "type", c.shown + ": " + typeName(c.st.st_mode) + ", not a regular file (never followed)");
    }
    return quarantine(c, "", "hdf5", c.shown + ": cannot be opened: " + std::strerror(err));
  }
  c.opened = true;
  if (::fstat(f.get(), &c.st) != 0) throw IoError(c.shown + ": cannot stat: " + errnoText());
  if (!S_ISREG(c.st.st_mode)) {
    return quarantine(c, "", "type", c.shown + ": " + typeName(c.st.st_mode) + ", not a regular file (not read)");
  }
  if (c.st.st_size > rules_.maxShardBytes) {
    return quarantine(c, "", "size", c.shown + ": " + std::to_string(c.st.st_size) +
                                         " bytes exceeds dataset.max_shard_bytes = " + std::to_string(rules_.maxShardBytes) +
                                         " (not read)");
  }

  // The private copy, hashed on the way. No byte is read from the producer's file after this.
  c.copy = root_ + "/tmp/" + kTmpPrefix + fs::randomHex() + ".h5";
  Fd out(::open(c.copy.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) {
    const std::string why = errnoText();
    c.copy.clear();
    throw IoError(root_ + "/tmp: cannot create a private copy: " + why);
  }
  Sha256 hasher;
  std::vector<unsigned char> buf(kCopyBlock);
  int64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(f.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const std::string why = errnoText();
      f.reset();
      return quarantine(c, "", "hdf5", c.shown + ": cannot be read: " + why);
    }
    if (n == 0) break;
    total += n;
    if (total > rules_.maxShardBytes) {  // it grew while it was read
      f.reset();
      out.reset();
      ::unlink(c.copy.c_str());
      c.copy.clear();
      return quarantine(c, "", "size", c.shown + ": more than dataset.max_shard_bytes = " +
                                           std::to_string(rules_.maxShardBytes) + " bytes (it grew while it was read)");
    }
    hasher.update(buf.data(), static_cast<size_t>(n));
    writeAll(out.get(), buf.data(), static_cast<size_t>(n), c.copy);
  }
  f.reset();
  if (::fsync(out.get()) != 0) throw IoError(c.copy + ": cannot fsync: " + errnoText());
  if (::fchmod(out.get(), 0444) != 0) throw IoError(c.copy + ": cannot make read-only: " + errnoText());
  out.reset();
  const std::string hash = toHex(hasher.finish());

  ShardSummary summary;
  try {
    summary = validateShard(c.copy, rules_, c.shown);
  } catch (const ShardRejected& e) {
    return quarantine(c, hash, e.rule(), e.what());
  }
  fault("validated");
  const std::string id = identity(c.st);
  if (auto existing = cat_.shardByHash(hash)) {
    if (existing->source == c.name && existing->sourceId == id) {
      // Our own ingest of this very file was interrupted after the catalog insert.
      removeEntry(c);
      return {c.name, true, false, hash, existing->rows, "", ""};
    }
    return quarantine(c, hash, "duplicate",
                      c.shown + ": same content (sha256 " + hash + ") as shard " + std::to_string(existing->seq) +
                          " (arrived as '" + printable(existing->source) + "')");
  }
  const std::string rel = "data/" + hash + ".h5";
  const std::string dest = root_ + "/" + rel;
  struct stat dst {};
  if (::lstat(dest.c_str(), &dst) == 0 && S_ISREG(dst.st_mode)) {
    // Left by an ingest killed before its catalog insert: the same validated bytes (its name is
    // their hash, and only the scheduler writes data/).
    ::unlink(c.copy.c_str());
  } else if (::rename(c.copy.c_str(), dest.c_str()) != 0) {
    throw IoError(dest + ": cannot store: " + errnoText());
  }
  c.copy.clear();
  fs::fsyncDir(root_ + "/data");
  fault("linked");
  ShardRecord rec;
  rec.hash = hash;
  rec.file = rel;
  rec.source = c.name;
  rec.sourceId = id;
  rec.rows = summary.rows;
  rec.bytes = summary.bytes;
  rec.profile = dumpJson(summary.profile.toJson());
  rec.ingestedAt = clock_.now();
  cat_.transaction([&] {
    cat_.insertShard(rec);
    cat_.addEvent(rec.ingestedAt, "ingest", hash,
                  {{"source", c.name}, {"seq", rec.seq}, {"rows", rec.rows}, {"bytes", rec.bytes}});
  });
  fault("recorded");
  removeEntry(c);
  log->info("ingested {} as shard {} ({} rows, sha256 {})", log::shown(c.name), rec.seq, rec.rows, hash.substr(0, 16));
  return {c.name, true, false, hash, rec.rows, "", ""};
}

void Ingester::removeEntry(const Candidate& c) {
  struct stat now {};
  if (::fstatat(c.dir, c.name.c_str(), &now, AT_SYMLINK_NOFOLLOW) != 0 || !sameFile(now, c.st)) {
    // Replaced since it was read: the new file is judged on its own in a later pass.
    log::get("ingest")->warn("{}: replaced while it was ingested; the new file waits for the next pass", c.shown);
    return;
  }
  if (::unlinkat(c.dir, c.name.c_str(), 0) != 0 && errno != ENOENT) {
    throw IoError(c.shown + ": cannot remove: " + errnoText());
  }
  if (::fsync(c.dir) != 0 && errno != EINVAL) throw IoError(root_ + "/incoming: cannot fsync: " + errnoText());
}

IngestOutcome Ingester::quarantine(Candidate& c, const std::string& hash, const std::string& rule,
                                   const std::string& reason) {
  auto log = log::get("ingest");
  // Named by hash, never by the producer's name (any length, any bytes): the content's hash and
  // the name's, so the same file always gets the same name and a retry after a crash is
  // idempotent. What was never read is named by its identity instead.
  const std::string nameHash = toHex(sha256(c.name.data(), c.name.size()));
  const std::string qname =
      hash.empty() ? "x" + toHex(sha256((c.name + '\0' + identity(c.st)).data(), c.name.size() + 1 + identity(c.st).size()))
                               .substr(0, 47)
                   : hash.substr(0, 32) + "-" + nameHash.substr(0, 16);
  const std::string rel = "quarantine/" + qname;
  const double now = clock_.now();
  cat_.transaction([&] {
    if (cat_.insertQuarantine({0, rel, c.name, rule, reason, now})) {
      cat_.addEvent(now, "quarantine", hash, {{"source", c.name}, {"file", rel}, {"rule", rule}, {"reason", reason}});
    }
  });
  fault("quarantine-recorded");
  json why{{"source", c.name}, {"source_printable", printable(c.name)}, {"sha256", hash},
           {"rule", rule},     {"reason", reason},                     {"at", now}};
  fs::writeFileAtomic(root_ + "/" + rel + ".reason.json", dumpJson(why, 2) + "\n");
  const std::string dest = root_ + "/" + rel;
  if (!c.copy.empty()) {
    // The bytes that were judged, not whatever the name holds now.
    if (::rename(c.copy.c_str(), dest.c_str()) != 0) throw IoError(c.copy + ": cannot move to " + rel + ": " + errnoText());
    c.copy.clear();
    fs::fsyncDir(root_ + "/quarantine");
    removeEntry(c);
  } else {
    // Never read (not a regular file, too large, unreadable): the entry itself moves, a
    // symbolic link as a link. Only while the name still names what was judged.
    struct stat now2 {};
    if (::fstatat(c.dir, c.name.c_str(), &now2, AT_SYMLINK_NOFOLLOW) == 0 && sameFile(now2, c.st)) {
      if (::renameat(c.dir, c.name.c_str(), AT_FDCWD, dest.c_str()) != 0 && errno != ENOENT) {
        throw IoError(c.shown + ": cannot move to " + rel + ": " + errnoText());
      }
      fs::fsyncDir(root_ + "/quarantine");
      if (::fsync(c.dir) != 0 && errno != EINVAL) throw IoError(root_ + "/incoming: cannot fsync: " + errnoText());
    }
  }
  fault("quarantine-moved");
  // The reason names the file escaped already (c.shown).
  log->warn("quarantined {} ({}): {}", log::shown(c.name), rule, reason);
  return {c.name, false, false, hash, 0, rule, reason};
}

std::vector<std::string> stageFiles(const std::string& root, const std::vector<std::string>& files) {
  std::vector<std::string> names;
  for (const auto& f : files) {
    const std::string name = stdfs::path(f).filename().string();
    if (ignoredName(name)) throw DataError(f + ": names starting with '.' or ending in .tmp/.part are never ingested");
    // The caller's own file, named on the command line: following a link there is what they ask.
    Fd in(::open(f.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
    if (!in) throw DataError(f + ": cannot open: " + errnoText());
    struct stat st {};
    if (::fstat(in.get(), &st) != 0 || !S_ISREG(st.st_mode)) throw DataError(f + ": not a regular file");
    const std::string dest = root + "/incoming/" + name;
    const std::string shown = root + "/incoming/" + printable(name);
    // A hidden name of our own: nothing planted in incoming/ is followed or overwritten.
    const std::string tmp = root + "/incoming/." + fs::randomHex() + ".tmp";
    Fd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640));
    if (!out) throw DataError(root + "/incoming: cannot create a file: " + errnoText());
    try {
      std::vector<unsigned char> buf(kCopyBlock);
      for (;;) {
        const ssize_t n = ::read(in.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw DataError(f + ": cannot read: " + errnoText());
        if (n == 0) break;
        writeAll(out.get(), buf.data(), static_cast<size_t>(n), tmp);
      }
      if (::fsync(out.get()) != 0) throw IoError(tmp + ": cannot fsync: " + errnoText());
      out.reset();
      // Never over a file waiting there (or anything else of that name).
      if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, dest.c_str(), RENAME_NOREPLACE) != 0) {
        if (errno == EEXIST) throw DataError(shown + ": a file of that name is already waiting in incoming/");
        throw DataError(f + ": cannot move into " + root + "/incoming: " + errnoText());
      }
    } catch (const Error& e) {
      ::unlink(tmp.c_str());
      throw DataError(e.what());
    }
    fs::fsyncDir(root + "/incoming");
    names.push_back(name);
  }
  return names;
}

}  // namespace perennial::sched
