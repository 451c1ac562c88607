// The NCCL communicator on a real GPU: skipped, with the reason, where there is none.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <vector>

#include "trainer/comm/mpi/mpi_communicator.h"
#include "trainer/comm/nccl/nccl_communicator.h"

namespace perennial {
namespace {

int gpus() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
}

TEST(Nccl, AllReduceBroadcastAllGatherOnOneGpu) {
  if (gpus() == 0) GTEST_SKIP() << "no CUDA GPU on this machine: the NCCL backend is only compiled and linked here";
  MpiCommunicator mpi(std::chrono::seconds(60));
  NcclCommunicator nccl(mpi, launcherLocalRank() % gpus(), nullptr, std::chrono::seconds(60));
  EXPECT_EQ(nccl.backend(), "nccl");
  const int n = nccl.size(), r = nccl.rank();
  std::vector<float> host(1000, static_cast<float>(r + 1));
  float* dev = nullptr;
  ASSERT_EQ(cudaMalloc(&dev, host.size() * sizeof(float)), cudaSuccess);
  cudaMemcpy(dev, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice);
  nccl.allReduce(dev, host.size(), DType::kFloat32, ReduceOp::kSum);
  cudaMemcpy(host.data(), dev, host.size() * sizeof(float), cudaMemcpyDeviceToHost);
  for (float v : host) ASSERT_EQ(v, static_cast<float>(n * (n + 1) / 2));
  int32_t mine = 100 + r, *dIn = nullptr, *dOut = nullptr;
  cudaMalloc(&dIn, sizeof(int32_t));
  cudaMalloc(&dOut, sizeof(int32_t) * n);
  cudaMemcpy(dIn, &mine, sizeof(int32_t), cudaMemcpyHostToDevice);
  nccl.allGather(dIn, dOut, sizeof(int32_t));
  std::vector<int32_t> all(n);
  cudaMemcpy(all.data(), dOut, sizeof(int32_t) * n, cudaMemcpyDeviceToHost);
  for (int k = 0; k < n; ++k) EXPECT_EQ(all[k], 100 + k);
  cudaFree(dev);
  cudaFree(dIn);
  cudaFree(dOut);
}

}  // namespace
}  // namespace perennial
