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

// NOTE [Rank placement]: where a rank runs. The node-local rank decides which GPU a rank takes;
// the launcher's local rank (launcherLocalRank) wins where the launcher sets one, since the
// launcher also binds devices and CPUs by it, and MPI's (MPI_COMM_TYPE_SHARED: the ranks that
// can share memory, i.e. one node) serves otherwise and checks it.
struct RankPlacement {
  std::string host;                // this rank's host name
  int localRank = 0;               // its index among the ranks of its node (MPI_COMM_TYPE_SHARED)
  int localSize = 1;               // the ranks of its node
  std::vector<std::string> hosts;  // every rank's host, in rank order
  std::string network;             // the interfaces MPI's TCP traffic may use, for the log ("" : unknown)

  // The number of distinct hosts.
  int nodes() const;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // "mpi", "nccl", ... and a version string, for logs and result.json.
  virtual std::string backend() const = 0;
  virtual std::string backendVersion() const = 0;
  // True when data pointers must be GPU memory (NCCL); false for host memory (MPI).
  virtual bool deviceMemory() const { return false; }
  // NOTE [Rank placement]. The default (for single-process fakes): every rank on this host.
  virtual RankPlacement placement() const;
  // True when collectives may be called from a thread other than the one that built the
  // communicator, one thread at a time (NOTE [Overlap] in gradient_reducer.cpp).
  virtual bool callableFromHelperThread() const { return true; }

  // In-place reduction of COUNT elements of TYPE at DATA across all ranks. kBFloat16 and
  // kFloat16 take kSum only (NOTE [Gradient compression] in gradient_reducer.cpp).
  virtual void allReduce(void* data, size_t count, DType type, ReduceOp op) = 0;
  // Copies BYTES bytes at DATA from ROOT to every rank.
  virtual void broadcast(void* data, size_t bytes, int root) = 0;
  // Every rank contributes BYTES bytes at IN; OUT receives size()*BYTES bytes in rank order.
  virtual void allGather(const void* in, void* out, size_t bytes) = 0;
  virtual void barrier() = 0;

  // BYTES of zeroed host memory shared by the ranks of this communicator, which allReduce then
  // sums in place through that memory rather than through the library's transport (NOTE
  // [Shared-memory all-reduce] in mpi_communicator.cpp); nullptr where the backend cannot (the
  // ranks span nodes, tensors live on a device, a world of one, no shared memory to be had), and
  // the caller allocates as usual. Collective: every rank calls it at the same point with the same
  // BYTES. The memory stays mapped until MPI_Finalize, at process exit: views of it must not be
  // used after that.
  virtual void* sharedHostBuffer(size_t bytes) {
    (void)bytes;
    return nullptr;
  }

  // Typed conveniences.
  void allReduceSum(float* data, size_t count) { allReduce(data, count, DType::kFloat32, ReduceOp::kSum); }
  void allReduceSum(double* data, size_t count) { allReduce(data, count, DType::kFloat64, ReduceOp::kSum); }
  void allReduceSum(int64_t* data, size_t count) { allReduce(data, count, DType::kInt64, ReduceOp::kSum); }
};

struct CommOptions {
  std::string backend = "auto";                  // auto | mpi | nccl (comm.backend)
  std::chrono::milliseconds timeout{std::chrono::minutes(10)};
  std::string logLevel = "info";  // logging is initialised with the rank once it is known
};

// NOTE [Two communicators]: every process has a host communicator (MPI), which launches,
// bootstraps and carries the small control-plane collectives (the stop flag, metric sums,
// generator states, strings), and a tensor communicator for the model's tensors (gradient
// buckets, parameter and buffer broadcasts): the same MPI one for CPU tensors, NCCL for CUDA
// tensors (as PyTorch pairs gloo with NCCL). makeCommunicator builds the host one;
// makeTensorCommunicator the other, once the training device is known.

// Builds the host communicator (MPI) and checks OPTIONS.backend against this build: asking for
// a backend that the build does not have throws ConfigError listing the ones it has, before
// any process starts training.
std::unique_ptr<Communicator> makeCommunicator(const CommOptions& options);

// Backends compiled into this build, e.g. {"mpi"} or {"mpi", "nccl"}.
std::vector<std::string> availableBackends();

// The tensor communicator for tensors on the training device (NOTE [Two communicators]).
// BACKEND is comm.backend; CUDA_DEVICE the rank's GPU (-1: the tensors are on the CPU);
// STREAM the cudaStream_t LibTorch computes on (nullptr: the default stream). Returns nullptr
// when HOST serves (MPI: CPU tensors, or CUDA tensors staged through host memory when NCCL is
// not built or comm.backend = mpi); WHY receives the reason for the choice, for the log.
// Throws ConfigError when comm.backend = nccl cannot be honoured, saying why.
std::unique_ptr<Communicator> makeTensorCommunicator(Communicator& host, const std::string& backend, int cudaDevice,
                                                     void* stream, std::chrono::milliseconds timeout,
                                                     std::string* why);

// The launcher's local rank of this process (OMPI_COMM_WORLD_LOCAL_RANK, SLURM_LOCALID,
// MPI_LOCALRANKID, PMIX_LOCAL_RANK), or 0: which GPU of the node this rank takes.
int launcherLocalRank();
// The same, or -1 when no launcher variable is set; VARIABLE receives the variable's name.
int launcherLocalRank(std::string* variable);

// The node-local rank that picks this rank's GPU (NOTE [Rank placement]) and where it came from.
struct LocalRank {
  int rank = 0;
  int size = 1;        // ranks on this node
  std::string source;  // "SLURM_LOCALID", "MPI_COMM_TYPE_SHARED", ...
  std::string note;    // a disagreement between the launcher and MPI, for a warning ("" : none)
};
LocalRank localRankOf(const Communicator& comm);

// The GPU index that node-local rank LOCAL_RANK takes among GPUS visible ones: LOCAL_RANK mod GPUS.
int gpuForLocalRank(int localRank, int64_t gpus);

}  // namespace perennial
