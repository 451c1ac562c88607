#pragma once
// The seam between the trainer and a collective-communication library.
//
// Contract (every backend):
//  - Collectives are called by all ranks of the group in the same order with the same counts
//    and types; a mismatch is a usage error that the backend may not detect.
//  - allReduce leaves bitwise-identical results on every rank (backends that could reduce in a
//    rank-dependent order must not be used; see NOTE [Identical results] in mpi_communicator.cpp).
//  - Every blocking call honours the timeout given at construction: a call that exceeds it either
//    fails with CommError or, where the library cannot cancel a call (blocking MPI), ends the
//    process after printing the call, the rank and the host; it never hangs silently.
//  - No global state: several communicators (and in tests, fakes) may coexist in one process.
// This header does not include LibTorch: backends compile without it.
#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace perennial {

enum class ReduceOp { kSum, kMax, kMin };

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "nccl", ... and a version string, for logs and result.json.
  virtual std::string backend() const = 0;
  virtual std::string backendVersion() const = 0;

  // In-place reduction of COUNT elements of TYPE at DATA across all ranks.
  virtual void allReduce(void* data, size_t count, DType type, ReduceOp op) = 0;
  // Copies BYTES bytes at DATA from ROOT to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // Every rank contributes BYTES bytes at IN; OUT receives size()*BYTES bytes in rank order.
  virtual void allGather(const void* in, void* out, size_t bytes) = 0;
  virtual void barrier() = 0;

  // Typed conveniences.
  void allReduceSum(float* data, size_t count) { allReduce(data, count, DType::kFloat32, ReduceOp::kSum); }
  void allReduceSum(double* data, size_t count) { allReduce(data, count, DType::kFloat64, ReduceOp::kSum); }
  void allReduceSum(int64_t* data, size_t count) { allReduce(data, count, DType::kInt64, ReduceOp::kSum); }
};

struct CommOptions {
  std::string backend = "auto";                  // auto | mpi
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  std::string logLevel = "info";  // logging is initialised with the rank once it is known
};

// Builds the backend named in OPTIONS and logs which one it chose and why. Asking for a backend
// that this build does not have throws ConfigError listing the ones it has.
std::unique_ptr<Communicator> makeCommunicator(const CommOptions& options);

// Backends compiled into this build, e.g. {"mpi"}.
std::vector<std::string> availableBackends();

}  // namespace perennial
