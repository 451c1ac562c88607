#pragma once
// NOTE [Catalog host]: the catalog is SQLite in WAL mode, whose readers and writers coordinate
// through a memory-mapped index (CATALOG-shm) and POSIX locks. Both are coherent only between
// processes of one kernel: on a network file system used from two hosts, a reader can see a torn
// state and a writer can corrupt the database (https://sqlite.org/wal.html, "Disadvantages").
// So a catalog belongs to one host. The first process that opens it records that host in
// CATALOG.host (its host name and kernel boot id); every later open, before SQLite touches the
// file, compares the record with its own host and refuses on another one. The same host name
// with another boot id is the host rebooted: the record is brought up to date. The record is
// read before the database and never through SQLite, so reading it is safe from anywhere.
#include <string>

namespace perennial::sched {

struct HostIdentity {
  std::string host;    // gethostname(2): the node name of this UTS namespace
  std::string bootId;  // /proc/sys/kernel/random/boot_id ("" where there is none)
};

// This process's host.
HostIdentity thisHost();

// The file that records the catalog DB_PATH's host: DB_PATH + ".host".
std::string catalogHostFile(const std::string& dbPath);

// Checks (and, when there is none yet, writes) the host record of the catalog DB_PATH for ME.
// Throws ConfigError naming the file and both hosts when the catalog belongs to another host,
// and IoError when the record cannot be read or is not one. A record that cannot be written for
// lack of permission (a reader who may not write the root) is left absent.
void claimCatalogHost(const std::string& dbPath, const HostIdentity& me = thisHost());

}  // namespace perennial::sched
