#pragma once
#include <mpi.h>

#include "trainer/comm/communicator.h"

namespace perennial {

// Communicator over MPI (OpenMPI here), for CPU tensors.
//
// Initialises MPI (MPI_THREAD_FUNNELED: only the training thread calls MPI) on first use if
// the program has not, and finalises it at process exit. Works on a private duplicate of the
// given communicator with MPI_ERRORS_RETURN, so failures become CommError, never an abort.
// Collectives are issued non-blocking and completed by polling against the deadline, which is
// how the timeout is enforced.
class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(std::chrono::milliseconds timeout, MPI_Comm base = MPI_COMM_WORLD);
  ~MpiCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  std::string backendVersion() const override;

  void allReduce(void* data, size_t count, DType type, ReduceOp op) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void allGather(const void* in, void* out, size_t bytes) override;
  void barrier() override;

  MPI_Comm comm() const { return comm_; }

  // Ensures MPI is initialised (for code that needs MPI before building a communicator).
  static void ensureInitialized();

 private:
  void check(int rc, const char* call) const;
  void wait(MPI_Request& req, const char* call);

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::chrono::milliseconds timeout_;
  std::string host_;
  uint64_t seq_ = 0;  // collectives issued, for error messages
};

}  // namespace perennial
