#pragma once
// Prometheus metrics of a scheduler root (text exposition format 0.0.4), served by `perennial
// sched run --metrics-port P` on 127.0.0.1 only. Everything but the tick statistics is read from
// the catalog on each scrape, through a connection of the HTTP thread's own (SQLite in WAL mode
// lets it read while the daemon writes); the tick statistics live in the daemon's memory.
// The metrics are listed in docs/scheduler.md ("Metrics").
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "scheduler/catalog.h"

namespace perennial::sched {

// Updated by the daemon after each tick, read by the HTTP thread.
struct TickStats {
  std::atomic<int64_t> ticks{0};       // ticks completed
  std::atomic<int64_t> failures{0};    // ticks that ended with an error (the daemon went on)
  std::atomic<double> lastSeconds{0};  // duration of the last completed tick
  std::atomic<double> lastAt{0};       // when it ended (seconds since the epoch); 0: none yet

  void recordTick(double seconds, double at) {
    lastSeconds.store(seconds);
    lastAt.store(at);
    ticks.fetch_add(1);
  }
};

struct MetricsContext {
  std::string registryDir;  // for the champion's metrics.json when its run has no test_accuracy
  std::string model;        // the registry model name, when the champion event does not name one
};

// The exposition text. Reads CATALOG in one read transaction (so the numbers agree with each
// other); must not be called inside a transaction of CATALOG's.
std::string renderMetrics(Catalog& catalog, const TickStats& ticks,
                          const MetricsContext& context = {});

// A label value escaped for the exposition format (backslash, double quote, newline).
std::string escapeLabelValue(const std::string& value);

// Serves GET /metrics (404 for any other path) on 127.0.0.1 from a background thread. Each
// scrape opens CATALOG_PATH afresh, read-only (PRAGMA query_only), in the serving thread. The
// serving threads block every signal, so SIGTERM and SIGINT reach the daemon's main thread.
class MetricsServer {
 public:
  MetricsServer(std::string catalogPath, const TickStats* ticks, MetricsContext context = {});
  ~MetricsServer();  // stops
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // Binds 127.0.0.1:PORT (0: a free port the system picks) and starts serving; returns the port.
  // Throws IoError when the port cannot be bound (in use, or not allowed).
  int start(int port);
  // Stops accepting, finishes the scrapes in flight and joins the threads. Idempotent.
  void stop();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace perennial::sched
