#pragma once
// NOTE [Catalog host]: the catalog is SQLite in WAL mode, whose readers and writers coordinate
// through a memory-mapped index (CATALOG-shm). Memory maps of one file are coherent only between
// processes of one kernel: on a network file system used from two hosts at once, a reader can
// see a torn state and a writer can corrupt the database (https://sqlite.org/wal.html,
// "Disadvantages"). So at any moment the catalog is open on one host only.
//
// Every process that opens the catalog first takes a lease on CATALOG.host: a shared flock(2)
// held for as long as the catalog is open (the daemon's whole life, one command's run). The file
// records the host name and kernel boot id of the processes holding it. A process that finds no
// holder (it gets the lock exclusively) records its own host and joins as a holder; one that
// finds holders joins them only if the record names its own host and boot, and otherwise refuses
// before SQLite touches the database. So the catalog moves freely between hosts when it is idle
// (a daemon requeued on another node, a tick job that lands elsewhere) and is never open on two
// at once. flock is coherent across the hosts of a network file system where the file system
// supports locks (NFSv4, or v3 with lockd), as ROOT/scheduler.lock already requires; a host that
// dies holding a lease keeps it until the server expires its locks (NFSv4: one lease period).
#include <string>

namespace perennial::sched {

struct HostIdentity {
  std::string host;    // gethostname(2): the node name of this UTS namespace
  std::string bootId;  // /proc/sys/kernel/random/boot_id ("" where there is none)
};

// This process's host.
HostIdentity thisHost();

// The file that records the catalog DB_PATH's host and carries the lease: DB_PATH + ".host".
std::string catalogHostFile(const std::string& dbPath);

// The lease of NOTE [Catalog host] on the catalog DB_PATH, for ME, held until destruction.
// Throws IoError naming the file and both hosts when processes of another host (or of another
// boot of a host with the same name) hold it, and IoError when the lock cannot be taken. A
// process that may not create the file (a reader without write access to the root, before any
// scheduler ran there) goes on without a lease; one that may not write it leaves its record as
// it is.
class CatalogHostLease {
 public:
  explicit CatalogHostLease(const std::string& dbPath, const HostIdentity& me = thisHost());
  ~CatalogHostLease();
  CatalogHostLease(const CatalogHostLease&) = delete;
  CatalogHostLease& operator=(const CatalogHostLease&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace perennial::sched
