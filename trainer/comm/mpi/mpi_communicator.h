#pragma once
#include <mpi.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common/exit_codes.h"
#include "trainer/comm/communicator.h"
#include "trainer/comm/stall_inspector.h"

namespace perennial {

// Communicator over MPI (OpenMPI here), for CPU tensors.
//
// Initialises MPI (MPI_THREAD_SERIALIZED: the training thread, or the gradient reducer's
// communication thread while the training thread waits for it, calls MPI) on first use if
// the program has not, and finalises it at process exit. Works on a private duplicate of the
// given communicator with MPI_ERRORS_RETURN, so failures become CommError.
//
// NOTE [Blocking collectives and the watchdog]: collectives are the blocking MPI calls, because
// Open MPI 4.1's non-blocking ones (libnbc) run all-reduce 2-3x slower at gradient sizes (see
// BENCHMARKS.md). A blocked MPI collective cannot be cancelled, so the timeout is enforced by a
// watchdog thread: when one collective has waited longer than the timeout, it asks the other
// ranks what they are doing (NOTE [Stall inspector], stall_inspector.h; at most kProbeBudget,
// then kLinger answering the others' questions),
// prints which call, collective number, rank and host are stuck and which ranks on which hosts
// have not joined, and ends the process with kExitCommTimeout, so the launcher (mpirun, srun)
// tears the job down instead of letting it hang. This is the one place where Perennial ends a
// process from library code; a timeout of zero disables the watchdog.
// Exit status of a process ended by the collective watchdog.
inline constexpr int kExitCommTimeout = exit_code::kTimeout;

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(std::chrono::milliseconds timeout, MPI_Comm base = MPI_COMM_WORLD);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  std::string backendVersion() const override;
  bool callableFromHelperThread() const override { return serializedThreads_; }

  void allReduce(void* data, size_t count, DType type, ReduceOp op) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void allGather(const void* in, void* out, size_t bytes) override;
  void barrier() override;
  void* sharedHostBuffer(size_t bytes) override;
  // How many all-reduces took the shared-memory path (NOTE [Shared-memory all-reduce]); for tests.
  uint64_t sharedReductions() const { return sharedReductions_; }

  RankPlacement placement() const override { return placement_; }

  MPI_Comm comm() const { return comm_; }

  // How long the watchdog spends asking the other ranks before it ends the process.
  static constexpr std::chrono::milliseconds kProbeBudget{3000};
  // How long it still answers the others' probes after printing, before it ends the process.
  static constexpr std::chrono::milliseconds kLinger{1000};

  // Ensures MPI is initialised (for code that needs MPI before building a communicator).
  static void ensureInitialized();

  // When MPI is running with more than one process, ends the whole job with CODE
  // (MPI_Abort): an error raised on some ranks only would otherwise leave the others blocked in
  // their next collective. Returns when there is nothing to abort.
  static void abortJobIfParallel(int code);

 private:
  void check(int rc, const char* call) const;
  // Marks the start and end of a blocking collective for the watchdog.
  // LIMIT (when positive and shorter) replaces the timeout for this call.
  void begin(const char* call, std::chrono::milliseconds limit = std::chrono::milliseconds(0));
  void end();
  RankActivity activity();
  // begin() for its lifetime, end() however the scope is left (an MPI error throws CommError).
  class Watched {
   public:
    Watched(MpiCommunicator& c, const char* call, std::chrono::milliseconds limit = std::chrono::milliseconds(0))
        : c_(c) {
      c_.begin(call, limit);
    }
    ~Watched() { c_.end(); }
    Watched(const Watched&) = delete;
    Watched& operator=(const Watched&) = delete;

   private:
    MpiCommunicator& c_;
  };
  // Learns where every rank runs (MPI_COMM_TYPE_SHARED, an all-gather of host names and stall
  // inspector cards) and starts the watchdog. Collective: every rank calls it at construction.
  void meetPeers();
  void watch();
  [[noreturn]] void timedOut(const char* call, uint64_t seq, std::chrono::milliseconds waited);

  // NOTE [Shared-memory all-reduce]: a window of memory every rank of comm_ maps, and where each
  // rank's part of it starts in this process.
  struct SharedSegment {
    MPI_Win win = MPI_WIN_NULL;
    std::vector<char*> bases;  // rank r's part, as mapped here
    size_t bytes = 0;          // the size of each rank's part
  };
  // sharedHostBuffer's work: the ranks agree that there is room, then makeWindow.
  void* allocateShared(size_t bytes);
  void* makeWindow(size_t bytes);
  // How long the ranks may take to set up a shared window once they have agreed to make one: a
  // rank whose part of it failed leaves the others inside Open MPI's set-up, so the watchdog ends
  // the job after this rather than comm.timeout_s.
  static constexpr std::chrono::milliseconds kWindowSetupLimit{30000};
  // The segment whose part of this rank holds [DATA, DATA + BYTES), or nullptr.
  const SharedSegment* sharedSegmentOf(const void* data, size_t bytes) const;
  // The two-shot sum of COUNT elements of TYPE at OFFSET bytes into every rank's part of SEG.
  void twoShotSum(const SharedSegment& seg, size_t offset, size_t count, DType type);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::chrono::milliseconds timeout_;
  std::string host_;  // host:pid
  RankPlacement placement_;
  std::unique_ptr<StallInspector> inspector_;
  bool serializedThreads_ = false;  // MPI was initialised with MPI_THREAD_SERIALIZED or more
  MPI_Op sumBf16_ = MPI_OP_NULL, sumHalf_ = MPI_OP_NULL;
  bool oneNode_ = false;                // every rank of comm_ can share memory with this one
  // Kept until MPI_Finalize (NOTE [Shared-memory all-reduce]); a deque, so that a segment's
  // address stays put when another is added.
  std::deque<SharedSegment> shared_;
  uint64_t sharedReductions_ = 0;

  // Watchdog state: the collective in flight or last begun (name, number, start or end), guarded
  // by mu_.
  std::mutex mu_;
  const char* call_ = nullptr;
  std::chrono::milliseconds limit_{0};  // the in-flight call's own limit (0: timeout_)
  bool inflight_ = false;
  uint64_t seq_ = 0;
  std::chrono::steady_clock::time_point changed_ = std::chrono::steady_clock::now();
  int wake_[2] = {-1, -1};  // a pipe: the destructor writes to stop the watchdog
  std::thread watchdog_;
};

}  // namespace perennial
