#include "trainer/host_memory.h"

#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <torch/torch.h>

#include "common/error.h"

namespace perennial {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

torch::Tensor stepBufferZeros(int64_t numel, const torch::TensorOptions& options) {
  PERENNIAL_CHECK(numel >= 0, "stepBufferZeros: negative size " << numel);
  const size_t bytes = static_cast<size_t>(numel) * options.dtype().itemsize();
  if (!options.device().is_cpu() || bytes < kMinHugePageBytes) return torch::zeros({numel}, options);
  const size_t len = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, len);
  if (p == nullptr) throw std::bad_alloc();
  // Advice only: where it is refused (THP compiled out) the memory is ordinary pages.
  (void)madvise(p, len, MADV_HUGEPAGE);
  std::memset(p, 0, len);
  return torch::from_blob(p, {numel}, [](void* q) { std::free(q); }, options);
}

bool onHugePages(const torch::Tensor& t) {
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t end = begin + static_cast<uintptr_t>(t.nbytes());
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    unsigned long lo = 0, hi = 0;
    long kb = 0;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2) {  // a mapping's first line: "lo-hi perms ..."
      inside = lo <= begin && end <= hi;
    } else if (inside && std::sscanf(line.c_str(), "AnonHugePages: %ld kB", &kb) == 1) {
      return kb >= 2048;
    }
  }
  return false;
}

}  // namespace perennial
