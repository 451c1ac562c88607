#include "trainer/comm/nccl/nccl_communicator.h"

#include <unistd.h>

#include <sstream>
#include <thread>

#include "common/error.h"

namespace perennial {
namespace {

ncclDataType_t ncclType(DType t) {
  switch (t) {
    case DType::kUInt8: return ncclUint8;
    case DType::kInt32: return ncclInt32;
    case DType::kInt64: return ncclInt64;
    case DType::kFloat32: return ncclFloat32;
    case DType::kFloat64: return ncclFloat64;
    case DType::kBFloat16: return ncclBfloat16;
    case DType::kFloat16: return ncclFloat16;
  }
  return ncclFloat32;
}

ncclRedOp_t ncclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum: return ncclSum;
    case ReduceOp::kMax: return ncclMax;
    case ReduceOp::kMin: return ncclMin;
  }
  return ncclSum;
}

}  // namespace

NcclCommunicator::NcclCommunicator(Communicator& bootstrap, int device, cudaStream_t stream,
                                   std::chrono::milliseconds timeout)
    : bootstrap_(bootstrap), rank_(bootstrap.rank()), size_(bootstrap.size()), device_(device),
      stream_(stream), timeout_(timeout) {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  host_ = std::string(host) + ":" + std::to_string(::getpid());
  checkCuda(cudaSetDevice(device_), "cudaSetDevice");
  ncclUniqueId id{};
  if (rank_ == 0) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  bootstrap_.broadcast(&id, sizeof(id), 0);
  check(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_) ncclCommDestroy(comm_);
}

std::string NcclCommunicator::backendVersion() const {
  int v = 0;
  ncclGetVersion(&v);
  std::ostringstream os;
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  os << "NCCL " << v / 10000 << "." << (v / 100) % 100 << "." << v % 100;
  return os.str();
}

void NcclCommunicator::fail(const std::string& call, const std::string& what) {
  std::ostringstream os;
  os << call << " failed on rank " << rank_ << "/" << size_ << " (" << host_ << ", GPU " << device_ << ", "
     << backendVersion() << "): " << what;
  throw CommError(os.str());
}

void NcclCommunicator::check(ncclResult_t rc, const char* call) {
  if (rc != ncclSuccess && rc != ncclInProgress) fail(call, ncclGetErrorString(rc));
}

void NcclCommunicator::checkCuda(cudaError_t rc, const char* call) {
  if (rc != cudaSuccess) fail(call, cudaGetErrorString(rc));
}

void NcclCommunicator::wait(const char* call) {
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  for (;;) {
    cudaError_t q = cudaStreamQuery(stream_);
    if (q == cudaSuccess) return;
    if (q != cudaErrorNotReady) checkCuda(q, call);
    ncclResult_t async = ncclSuccess;
    check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
    if (async != ncclSuccess && async != ncclInProgress) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
      fail(call, std::string("asynchronous error: ") + ncclGetErrorString(async));
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
      fail(call, "timed out after " + std::to_string(timeout_.count()) +
                     " ms: another rank has not joined it (see comm.timeout_s)");
    }
    std::this_thread::yield();
  }
}

void NcclCommunicator::allReduce(void* data, size_t count, DType type, ReduceOp op) {
  if (count == 0) return;
  check(ncclAllReduce(data, data, count, ncclType(type), ncclOp(op), comm_, stream_), "ncclAllReduce");
  wait("ncclAllReduce");
}

void NcclCommunicator::broadcast(void* data, size_t bytes, int root) {
  if (bytes == 0) return;
  check(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "ncclBroadcast");
  wait("ncclBroadcast");
}

void NcclCommunicator::allGather(const void* in, void* out, size_t bytes) {
  check(ncclAllGather(in, out, bytes, ncclUint8, comm_, stream_), "ncclAllGather");
  wait("ncclAllGather");
}

void NcclCommunicator::barrier() { bootstrap_.barrier(); }

}  // namespace perennial
