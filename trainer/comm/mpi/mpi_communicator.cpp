#include "trainer/comm/mpi/mpi_communicator.h"

#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "common/error.h"
#include "trainer/comm/mpi/sum16.h"

namespace perennial {
namespace {

// Finalises MPI at process exit when Perennial initialised it. Asks for MPI_THREAD_SERIALIZED:
// the gradient reducer's communication thread (comm.overlap) calls collectives while the
// training thread runs backward, never two threads at once.
struct MpiEnvironment {
  bool ownsInit = false;
  MpiEnvironment() {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
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
    case DType::kBFloat16:
    case DType::kFloat16: return MPI_UINT16_T;  // summed by the operations below
  }
  return MPI_DATATYPE_NULL;
}

// MPI has no 16-bit floating-point types: bfloat16 and half travel as MPI_UINT16_T and are summed
// by these user operations, which add two values in float32 and round the sum back to nearest
// even (NOTE [Gradient compression] in gradient_reducer.cpp; sum16.h). Commutative, so Open MPI
// keeps its usual algorithms.
template <void (*sum)(const uint16_t*, uint16_t*, size_t)>
void sum16(void* in, void* inout, int* len, MPI_Datatype*) {
  sum(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(inout), static_cast<size_t>(*len));
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

void MpiCommunicator::abortJobIfParallel(int code) {
  int initialized = 0, finalized = 0, size = 1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (!initialized || finalized) return;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  if (size > 1) MPI_Abort(MPI_COMM_WORLD, code);
}

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
  int level = MPI_THREAD_SINGLE;
  MPI_Query_thread(&level);
  serializedThreads_ = level >= MPI_THREAD_SERIALIZED;
  check(MPI_Op_create(&sum16<sumBf16>, /*commute=*/1, &sumBf16_), "MPI_Op_create");
  check(MPI_Op_create(&sum16<sumHalf>, /*commute=*/1, &sumHalf_), "MPI_Op_create");
  if (timeout_.count() > 0 && size_ > 1) watchdog_ = std::thread([this] { watch(); });
}

void MpiCommunicator::begin(const char* call) {
  std::lock_guard<std::mutex> lock(mu_);
  inflight_ = call;
  ++seq_;
  started_ = std::chrono::steady_clock::now();
}

void MpiCommunicator::end() {
  std::lock_guard<std::mutex> lock(mu_);
  inflight_ = nullptr;
}

void MpiCommunicator::watch() {
  std::unique_lock<std::mutex> lock(mu_);
  const auto tick = std::min<std::chrono::milliseconds>(timeout_ / 4 + std::chrono::milliseconds(1),
                                                        std::chrono::milliseconds(1000));
  while (!stop_) {
    cv_.wait_for(lock, tick);
    if (stop_ || !inflight_) continue;
    const auto waited = std::chrono::steady_clock::now() - started_;
    if (waited < timeout_) continue;
    std::fprintf(stderr,
                 "perennial: %s (collective #%llu) timed out after %lld ms on rank %d/%d (%s): another "
                 "rank has not joined it (crashed, stalled, or called a different collective); ending "
                 "this process with status %d so the job does not hang (see comm.timeout_s)\n",
                 inflight_, static_cast<unsigned long long>(seq_),
                 static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(waited).count()),
                 rank_, size_, host_.c_str(), kExitCommTimeout);
    std::fflush(stderr);
    std::_Exit(kExitCommTimeout);
  }
}

MpiCommunicator::~MpiCommunicator() {
  if (watchdog_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    watchdog_.join();
  }
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  if (sumBf16_ != MPI_OP_NULL) MPI_Op_free(&sumBf16_);
  if (sumHalf_ != MPI_OP_NULL) MPI_Op_free(&sumHalf_);
  if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
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

void MpiCommunicator::allReduce(void* data, size_t count, DType type, ReduceOp op) {
  const bool narrow = type == DType::kBFloat16 || type == DType::kFloat16;
  PERENNIAL_CHECK(!narrow || op == ReduceOp::kSum, "16-bit floating-point all-reduce supports sum only");
  if (size_ == 1 || count == 0) return;
  PERENNIAL_CHECK(count <= static_cast<size_t>(INT_MAX), "allReduce count " << count << " exceeds INT_MAX");
  MPI_Op mop = mpiOp(op);
  if (narrow) mop = type == DType::kBFloat16 ? sumBf16_ : sumHalf_;
  begin("MPI_Allreduce");
  int rc = MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), mpiType(type), mop, comm_);
  end();
  check(rc, "MPI_Allreduce");
}

void MpiCommunicator::broadcast(void* data, size_t bytes, int root) {
  if (size_ == 1 || bytes == 0) return;
  PERENNIAL_CHECK(bytes <= static_cast<size_t>(INT_MAX), "broadcast of " << bytes << " bytes exceeds INT_MAX");
  begin("MPI_Bcast");
  int rc = MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, comm_);
  end();
  check(rc, "MPI_Bcast");
}

void MpiCommunicator::allGather(const void* in, void* out, size_t bytes) {
  PERENNIAL_CHECK(bytes <= static_cast<size_t>(INT_MAX), "allGather of " << bytes << " bytes exceeds INT_MAX");
  begin("MPI_Allgather");
  int rc = MPI_Allgather(in, static_cast<int>(bytes), MPI_BYTE, out, static_cast<int>(bytes), MPI_BYTE, comm_);
  end();
  check(rc, "MPI_Allgather");
}

void MpiCommunicator::barrier() {
  if (size_ == 1) return;
  begin("MPI_Barrier");
  int rc = MPI_Barrier(comm_);
  end();
  check(rc, "MPI_Barrier");
}

}  // namespace perennial
