#pragma once
// Communicator over NCCL, for tensors in GPU memory (built when the CUDA toolkit and NCCL are
// found: PERENNIAL_HAVE_NCCL).
//
// Bootstrapped over another communicator (MPI): rank 0 creates the unique id, broadcasts it,
// and every rank calls ncclCommInitRank on its GPU. Collectives are enqueued on STREAM (the
// stream the model computes on) and the call returns when the stream has finished them; all
// data pointers are device pointers. Waiting polls the stream against the timeout; a stall or an
// asynchronous NCCL error aborts the NCCL communicator and throws CommError naming the NCCL
// call, the NCCL version, the rank and the host.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include "trainer/comm/communicator.h"

namespace perennial {

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(Communicator& bootstrap, int device, cudaStream_t stream,
                   std::chrono::milliseconds timeout);
  ~NcclCommunicator() override;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "nccl"; }
  std::string backendVersion() const override;
  bool deviceMemory() const override { return true; }

  void allReduce(void* data, size_t count, DType type, ReduceOp op) override;
  void broadcast(void* data, size_t bytes, int root) override;
  void allGather(const void* in, void* out, size_t bytes) override;
  void barrier() override;

 private:
  [[noreturn]] void fail(const std::string& call, const std::string& what);
  void check(ncclResult_t rc, const char* call);
  void checkCuda(cudaError_t rc, const char* call);
  void wait(const char* call);

  Communicator& bootstrap_;
  int rank_, size_, device_;
  cudaStream_t stream_;
  std::chrono::milliseconds timeout_;
  std::string host_;
  ncclComm_t comm_ = nullptr;
};

}  // namespace perennial
