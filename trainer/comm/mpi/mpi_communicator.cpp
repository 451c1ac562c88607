#include "trainer/comm/mpi/mpi_communicator.h"

#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "common/error.h"

namespace perennial {
namespace {

// Finalises MPI at process exit when Perennial initialised it.
struct MpiEnvironment {
  bool ownsInit = false;
  MpiEnvironment() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      if (rc != MPI_SUCCESS) throw CommError("MPI_Init_thread failed with code " + std::to_string(rc));
      ownsInit = true;
    }
  }
  ~MpiEnvironment() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (ownsInit && !finalized) MPI_Finalize();
  }
};

MPI_Datatype mpiType(DType t) {
  switch (t) {
    case DType::kUInt8: return MPI_UINT8_T;
    case DType::kInt32: return MPI_INT32_T;
    case DType::kInt64: return MPI_INT64_T;
    case DType::kFloat32: return MPI_FLOAT;
    case DType::kFloat64: return MPI_DOUBLE;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return MPI_SUM;
    case ReduceOp::kMax: return MPI_MAX;
    case ReduceOp::kMin: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

}  // namespace

void MpiCommunicator::ensureInitialized() { static MpiEnvironment env; }

MpiCommunicator::MpiCommunicator(std::chrono::milliseconds timeout, MPI_Comm base)
    : timeout_(timeout) {
  ensureInitialized();
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  host_ = std::string(host) + ":" + std::to_string(::getpid());
  check(MPI_Comm_dup(base, &comm_), "MPI_Comm_dup");
  check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
  check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

std::string MpiCommunicator::backendVersion() const {
  char version[MPI_MAX_LIBRARY_VERSION_STRING] = {0};
  int len = 0;
  MPI_Get_library_version(version, &len);
  std::string v(version, static_cast<size_t>(len));
  auto cut = v.find_first_of(",\n");
  return cut == std::string::npos ? v : v.substr(0, cut);
}

void MpiCommunicator::check(int rc, const char* call) const {
  if (rc == MPI_SUCCESS) return;
  char msg[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(rc, msg, &len);
  std::ostringstream os;
  os << call << " failed on rank " << rank_ << "/" << size_ << " (" << host_ << "): "
     << std::string(msg, static_cast<size_t>(len));
  throw CommError(os.str());
}

void MpiCommunicator::wait(MPI_Request& req, const char* call) {
  ++seq_;
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  int done = 0;
  for (uint64_t spins = 0;; ++spins) {
    check(MPI_Test(&req, &done, MPI_STATUS_IGNORE), call);
    if (done) return;
    // Check the clock every few hundred polls: cheap, and a stall is still reported promptly.
    if ((spins & 255) == 255 && std::chrono::steady_clock::now() > deadline) {
      std::ostringstream os;
      os << call << " (collective #" << seq_ << ") timed out after " << timeout_.count()
         << " ms on rank " << rank_ << "/" << size_ << " (" << host_
         << "): another rank has not joined it (crashed, stalled, or called a different "
            "collective); see comm.timeout_s";
      throw CommError(os.str());
    }
  }
}

void MpiCommunicator::allReduce(void* data, size_t count, DType type, ReduceOp op) {
  if (size_ == 1 || count == 0) return;
  PERENNIAL_CHECK(count <= static_cast<size_t>(INT_MAX), "allReduce count " << count << " exceeds INT_MAX");
  MPI_Request req;
  check(MPI_Iallreduce(MPI_IN_PLACE, data, static_cast<int>(count), mpiType(type), mpiOp(op),
                       comm_, &req),
        "MPI_Iallreduce");
  wait(req, "MPI_Iallreduce");
}

void MpiCommunicator::broadcast(void* data, size_t bytes, int root) {
  if (size_ == 1 || bytes == 0) return;
  PERENNIAL_CHECK(bytes <= static_cast<size_t>(INT_MAX), "broadcast of " << bytes << " bytes exceeds INT_MAX");
  MPI_Request req;
  check(MPI_Ibcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_, &req), "MPI_Ibcast");
  wait(req, "MPI_Ibcast");
}

void MpiCommunicator::allGather(const void* in, void* out, size_t bytes) {
  PERENNIAL_CHECK(bytes <= static_cast<size_t>(INT_MAX), "allGather of " << bytes << " bytes exceeds INT_MAX");
  MPI_Request req;
  check(MPI_Iallgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes),
                       MPI_BYTE, comm_, &req),
        "MPI_Iallgather");
  wait(req, "MPI_Iallgather");
}

void MpiCommunicator::barrier() {
  if (size_ == 1) return;
  MPI_Request req;
  check(MPI_Ibarrier(comm_, &req), "MPI_Ibarrier");
  wait(req, "MPI_Ibarrier");
}

}  // namespace perennial
