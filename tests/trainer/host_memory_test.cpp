// NOTE [Huge pages] (trainer/host_memory.h): buffers a step sweeps are zeroed CPU tensors, large
// ones in 2 MiB-aligned memory advised as huge pages; the trainer's gradient buckets and the fused
// optimizer's flat parameters and state are such buffers.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <fstream>
#include <string>

#include "trainer/comm/gradient_reducer.h"
#include "trainer/host_memory.h"
#include "trainer/optim/fused_optimizer.h"
#include "fake_comm.h"

namespace perennial {
namespace {

constexpr uintptr_t kTwoMiB = uintptr_t{2} << 20;

uintptr_t address(const torch::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()); }

// Whether this kernel backs madvise(MADV_HUGEPAGE) ranges with huge pages ("always" or "madvise").
bool thpAdvisable() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s;
  std::getline(f, s);
  return s.find("[always]") != std::string::npos || s.find("[madvise]") != std::string::npos;
}

TEST(HostMemory, LargeBuffersAreZeroedAndAlignedToHugePages) {
  for (auto type : {torch::kFloat32, torch::kFloat64, torch::kBFloat16}) {
    const int64_t n = 203530 + 3;  // the MLP's 814 KB gradient and 3 control slots, in floats
    torch::Tensor t = stepBufferZeros(n, torch::TensorOptions().dtype(type));
    EXPECT_TRUE(t.is_cpu() && t.is_contiguous());
    EXPECT_EQ(t.numel(), n);
    EXPECT_EQ(t.scalar_type(), type);
    EXPECT_EQ(address(t) % kTwoMiB, 0u) << "not aligned to 2 MiB";
    EXPECT_EQ(t.count_nonzero().item<int64_t>(), 0);
    t.fill_(1);  // writable all through
    EXPECT_EQ(t.to(torch::kFloat64).sum().item<double>(), static_cast<double>(n));
  }
}

TEST(HostMemory, SmallBuffersAreOrdinary) {
  torch::Tensor t = stepBufferZeros(1000, torch::kFloat32);
  EXPECT_EQ(t.numel(), 1000);
  EXPECT_EQ(t.count_nonzero().item<int64_t>(), 0);
  EXPECT_LT(static_cast<size_t>(t.nbytes()), kMinHugePageBytes);
  EXPECT_EQ(stepBufferZeros(0, torch::kFloat32).numel(), 0);
}

TEST(HostMemory, TheKernelBacksThemWithHugePagesWhereItCan) {
  if (!thpAdvisable()) GTEST_SKIP() << "transparent huge pages are off on this kernel";
  torch::Tensor t = stepBufferZeros(int64_t{1} << 20, torch::kFloat32);  // 4 MiB: two huge pages
  // A kernel with no free huge page left falls back to small pages; say so rather than fail.
  if (!onHugePages(t)) GTEST_SKIP() << "the kernel had no huge page to give (memory fragmented)";
  EXPECT_FALSE(onHugePages(torch::zeros({1 << 20})));  // LibTorch's own allocation: 4 KiB pages
}

TEST(HostMemory, GradientBucketsAndFlatParametersUseIt) {
  torch::nn::Linear big(784, 256), small(10, 3);
  std::vector<torch::Tensor> params = big->parameters();
  for (auto& p : small->parameters()) params.push_back(p);
  RecordingComm comm;
  GradientReducer reducer(params, comm, size_t{1} << 30);  // one bucket: 803 KB and 132 B
  ASSERT_EQ(reducer.gradBuffers().size(), 1u);
  EXPECT_EQ(address(reducer.gradBuffers()[0]) % kTwoMiB, 0u);
  FlatBuckets flat(params, reducer.buckets(), reducer.gradBuffers());
  EXPECT_EQ(address(flat.params(0)) % kTwoMiB, 0u) << "the parameters' flat storage";
  EXPECT_TRUE(params[0].data_ptr() >= flat.params(0).data_ptr() &&
              params[0].data_ptr() < static_cast<char*>(flat.params(0).data_ptr()) + flat.params(0).nbytes());
  for (const auto& s : flat.newState()) EXPECT_EQ(address(s) % kTwoMiB, 0u) << "optimizer state";
}

}  // namespace
}  // namespace perennial
