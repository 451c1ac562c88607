#include "scheduler/catalog_host.h"

#include <fcntl.h>
#include <limits.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/text.h"

namespace perennial::sched {
namespace {

using nlohmann::json;

constexpr size_t kMaxRecordBytes = 4096;

[[noreturn]] void fail(const std::string& what, const std::string& path) {
  throw IoError(path + ": " + what + ": " + std::strerror(errno));
}

// The record in FD: empty host when the file is empty (just created, or by a process that could
// not write it).
HostIdentity readRecord(int fd, const std::string& path) {
  std::string text(kMaxRecordBytes + 1, '\0');
  const ssize_t n = ::pread(fd, text.data(), text.size(), 0);
  if (n < 0) fail("cannot read the catalog's host record", path);
  text.resize(static_cast<size_t>(n));
  if (text.empty()) return {};
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (text.size() > kMaxRecordBytes || !j.is_object() || !j.contains("host") || !j["host"].is_string() ||
      (j.contains("boot_id") && !j["boot_id"].is_string())) {
    throw IoError(path + ": not a catalog host record (a JSON object with a string \"host\"); it is rewritten when "
                  "nothing holds the catalog open, or delete it while the scheduler is stopped");
  }
  return HostIdentity{j["host"].get<std::string>(), j.value("boot_id", "")};
}

void writeRecord(int fd, const std::string& path, const HostIdentity& me) {
  const std::string text =
      dumpJson(json{{"host", me.host}, {"boot_id", me.bootId}, {"since", static_cast<int64_t>(std::time(nullptr))}}, 2) +
      "\n";
  if (::ftruncate(fd, 0) != 0) fail("cannot write the catalog's host record", path);
  if (::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    fail("cannot write the catalog's host record", path);
  }
  if (::fsync(fd) != 0) fail("cannot write the catalog's host record", path);
}

// A shared lock, waiting out another process's exclusive moment (it writes a few hundred bytes).
// Bounded: anyone who may read the file may also lock it, and must not stop the scheduler.
void lockShared(int fd, const std::string& path) {
  for (int waited = 0; ::flock(fd, LOCK_SH | LOCK_NB) != 0; waited += 20) {
    if (errno != EWOULDBLOCK && errno != EINTR) fail("cannot lock", path);
    if (waited >= 10000) {
      throw IoError(path + ": held exclusively for 10 s (by a process that may read it); the catalog is not opened");
    }
    ::usleep(20000);
  }
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

CatalogHostLease::CatalogHostLease(const std::string& dbPath, const HostIdentity& me) {
  const std::string path = catalogHostFile(dbPath);
  bool writable = true;
  // Readable as the catalog is (catalog.cpp: owner and group).
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0 && (errno == EACCES || errno == EPERM || errno == EROFS)) {
    writable = false;
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) return;  // may not create it: no lease to take (see the header)
  }
  if (fd < 0) fail("cannot open the catalog's host record", path);
  try {
    // Nobody holds the catalog open (from any host): record this host, then hold the lease with
    // the others that come. flock's conversion to shared is not atomic, so the record is read
    // again below: another host that took the lock in between has written its own.
    bool alone = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
    if (!alone && errno != EWOULDBLOCK) fail("cannot lock", path);
    if (alone && writable) writeRecord(fd, path, me);
    lockShared(fd, path);
    const HostIdentity holder = readRecord(fd, path);
    const bool ours = holder.host == me.host && (holder.bootId == me.bootId || holder.bootId.empty() || me.bootId.empty());
    // A record that could not be rewritten while this process held the lock alone is stale.
    if (!ours && !holder.host.empty() && !(alone && !writable)) {
      const std::string other =
          holder.host == me.host ? "another machine named '" + printable(holder.host) + "' (boot id " +
                                       printable(holder.bootId) + ", this one's is " + me.bootId + ")"
                                 : "host '" + printable(holder.host) + "'";
      throw IoError(dbPath + ": the catalog is in use on " + other + " (recorded in " + path + "), this is '" +
                    printable(me.host) +
                    "': SQLite's WAL mode is not safe from two hosts at once, so it is not opened here: run "
                    "this command on '" + printable(holder.host) +
                    "', or once nothing there holds the catalog open (the scheduler stopped); see "
                    "docs/operations.md, \"Where the root may live\"");
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  fd_ = fd;
}

CatalogHostLease::~CatalogHostLease() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace perennial::sched
