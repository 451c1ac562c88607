#pragma once
// NOTE [Fault points]: the one seam through which tests inject faults (LevelDB's Env plays this
// part there). Code that must survive a crash or a failed write at some step calls
// fault::reached("name") right after that step; in production it costs a relaxed atomic load.
// Two ways to act on a point:
//   - a process's environment: PERENNIAL_FAULT_AT=NAME[:N[:stop]] SIGKILLs the process the Nth
//     time (default: the first) it reaches NAME, or with ":stop" SIGSTOPs it (frozen, alive, its
//     sockets open: a hung peer). The kill tests (tests/sched/kill_test.sh) run the real binary
//     this way, once per point; the node-loss test (tests/slurm/nodeloss_test.sh) stops rank 1.
//   - a test's handler: fault::ScopedHandler installs a function called with every point's name
//     for the handler's lifetime (it may throw, to simulate a failed step, or record the order).
// The points, by component (each is reached after the step it names):
//   checkpoint  document-created, document-tensor-written (once per tensor), document-truncated,
//               document-synced, document-closed, document-published (checkpoint/document.cpp);
//               checkpoint-document-written, checkpoint-record-ready, checkpoint-manifest-written
//               (checkpoint/checkpoint_store.cpp)
//   ingest      validated, linked, recorded, quarantine-recorded, quarantine-moved
//               (scheduler/ingest.cpp)
//   scheduler   run-created, materialized, submitted-recorded, spawned, attempt-ended,
//               attempt-recorded, validated-run, published, promoted (scheduler/scheduler.cpp)
//   registry    publish-files-written, publish-renamed (scheduler/registry.cpp)
//   trainer     step-done-rank-R, on rank R after each optimizer step and the checkpoint that
//               follows it (trainer/trainer.cpp)
// Thread-safe: points may be reached from any thread (checkpoints are written on a background
// thread); the handler is called on the thread that reaches the point.
#include <functional>
#include <memory>
#include <string>

namespace perennial::fault {

using Handler = std::function<void(const std::string& point)>;

// Marks that the step POINT names has just been done: calls the installed handler, then kills
// the process if PERENNIAL_FAULT_AT names this point and this is its Nth arrival.
void reached(const std::string& point);

// Installs HANDLER for its lifetime (tests only); the previous handler returns after it. Not
// nestable across threads: install and remove from one thread while no point is being reached.
class ScopedHandler {
 public:
  explicit ScopedHandler(Handler handler);
  ~ScopedHandler();
  ScopedHandler(const ScopedHandler&) = delete;
  ScopedHandler& operator=(const ScopedHandler&) = delete;

 private:
  std::shared_ptr<const Handler> previous_;
};

}  // namespace perennial::fault
