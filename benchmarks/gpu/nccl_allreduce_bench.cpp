// perennial_bench_nccl: NcclCommunicator::allReduce on GPU buffers, in the manner of nccl-tests'
// all_reduce_perf (in-place float32 sum, median of N timed calls per size).
//
//   mpirun -np N build/bin/perennial_bench_nccl [--min-bytes 8] [--max-bytes 268435456]
//                                               [--iters 20] [--warmup 5] [--json FILE]
//
// Each call is timed from the enqueue to the stream having finished it (NcclCommunicator waits
// for its stream), so the figure is what the trainer pays per bucket. At one rank NCCL copies
// nothing between GPUs: the time is NCCL's launch and completion overhead (busbw is 0 there, as
// nccl-tests reports). Exits 77 without a CUDA GPU.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "trainer/comm/mpi/mpi_communicator.h"
#include "trainer/comm/nccl/nccl_communicator.h"

using namespace perennial;

int main(int argc, char** argv) {
  size_t minBytes = 8, maxBytes = size_t{256} << 20;
  int iters = 20, warmup = 5;
  std::string jsonPath;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--min-bytes") minBytes = std::stoull(next());
    else if (a == "--max-bytes") maxBytes = std::stoull(next());
    else if (a == "--iters") iters = std::stoi(next());
    else if (a == "--warmup") warmup = std::stoi(next());
    else if (a == "--json") jsonPath = next();
    else {
      std::fprintf(stderr, "usage: perennial_bench_nccl [--min-bytes N] [--max-bytes N] [--iters N] [--warmup N] [--json FILE]\n");
      return 2;
    }
  }
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) {
    std::fprintf(stderr, "perennial_bench_nccl: no CUDA GPU here\n");
    return 77;
  }
  try {
    MpiCommunicator mpi(std::chrono::seconds(120));
    NcclCommunicator nccl(mpi, localDevice(), nullptr, std::chrono::seconds(120));
    const int n = nccl.size();
    float* buf = nullptr;
    if (cudaMalloc(&buf, maxBytes) != cudaSuccess) {
      std::fprintf(stderr, "cudaMalloc(%zu) failed\n", maxBytes);
      return 1;
    }
    cudaMemset(buf, 0, maxBytes);
    if (nccl.rank() == 0) {
      std::printf("# NCCL %s, %d rank(s), in-place float32 sum, median of %d\n", nccl.backendVersion().c_str(), n, iters);
      std::printf("%12s %12s %12s %12s\n", "bytes", "time_us", "algbw_GB/s", "busbw_GB/s");
    }
    std::string rows;
    for (size_t bytes = std::max<size_t>(minBytes, 4); bytes <= maxBytes; bytes *= 4) {
      const size_t count = bytes / sizeof(float);
      for (int w = 0; w < warmup; ++w) nccl.allReduce(buf, count, DType::kFloat32, ReduceOp::kSum);
      std::vector<double> us;
      for (int k = 0; k < iters; ++k) {
        const auto t0 = std::chrono::steady_clock::now();
        nccl.allReduce(buf, count, DType::kFloat32, ReduceOp::kSum);
        us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
      }
      std::sort(us.begin(), us.end());
      const double med = us[us.size() / 2];
      const double alg = static_cast<double>(bytes) / (med * 1e3);  // GB/s
      const double bus = alg * 2.0 * (n - 1) / n;
      if (nccl.rank() == 0) {
        std::printf("%12zu %12.2f %12.3f %12.3f\n", bytes, med, alg, bus);
        char row[200];
        std::snprintf(row, sizeof row, "%s{\"bytes\":%zu,\"time_us\":%.3f,\"algbw_gbs\":%.4f,\"busbw_gbs\":%.4f}",
                      rows.empty() ? "" : ",", bytes, med, alg, bus);
        rows += row;
      }
    }
    cudaFree(buf);
    if (nccl.rank() == 0 && !jsonPath.empty()) {
      std::ofstream(jsonPath) << "{\"nccl\":\"" << nccl.backendVersion() << "\",\"ranks\":" << n
                              << ",\"iters\":" << iters << ",\"rows\":[" << rows << "]}\n";
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "perennial_bench_nccl: %s\n", e.what());
    return 1;
  }
  return 0;
}
