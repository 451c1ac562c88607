#include "trainer/host_memory.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include <torch/torch.h>

#include "common/error.h"

namespace perennial {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

torch::Tensor hostZeros(int64_t numel, torch::ScalarType type) {
  PERENNIAL_CHECK(numel >= 0, "hostZeros: negative size " << numel);
  const size_t bytes = static_cast<size_t>(numel) * c10::elementSize(type);
  if (bytes < kMinHugePageBytes) return torch::zeros({numel}, torch::TensorOptions().dtype(type));
  const size_t len = (bytes + kHugePage - 1) / kHugePage * kHugePage;
  void* p = std::aligned_alloc(kHugePage, len);
  if (p == nullptr) throw std::bad_alloc();
  // Advice only: where it is refused (THP compiled out) the memory is ordinary pages.
  (void)madvise(p, len, MADV_HUGEPAGE);
  std::memset(p, 0, len);
  return torch::from_blob(p, {numel}, [](void* q) { std::free(q); }, torch::TensorOptions().dtype(type));
}

bool onHugePages(const torch::Tensor& t) {
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t end = begin + static_cast<uintptr_t>(t.nbytes());
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool inside = false;
  while (std::getline(smaps, line)) {
    uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream head(line);
    if (line.find(':') > line.find(' ') && (head >> std::hex >> lo >> dash >> hi) && dash == '-') {
      inside = lo <= begin && end <= hi;  // a mapping's first line: "lo-hi perms ..."
      continue;
    }
    if (inside && line.rfind("AnonHugePages:", 0) == 0) return std::stol(line.substr(14)) >= 2048;
  }
  return false;
}

}  // namespace perennial
