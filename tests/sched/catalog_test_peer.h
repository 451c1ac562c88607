#pragma once
// Raw SQL on a catalog, for tests and benchmarks only: filling one with many rows fast, or
// breaking one on purpose (a trigger that fails an update, a schema from the future). The
// scheduler's own code reads and writes through Catalog's methods (Catalog::db is private).
#include "scheduler/catalog.h"

namespace perennial::sched {

struct CatalogTestPeer {
  static Database& db(Catalog& c) { return c.db_; }
};

}  // namespace perennial::sched
