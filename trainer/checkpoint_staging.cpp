#include "trainer/checkpoint_staging.h"

#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstring>

#include "common/error.h"

namespace perennial {
namespace {

constexpr size_t kAlign = 64;  // cache line: each tensor starts on its own

size_t aligned(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

}  // namespace

size_t StagingBuffers::footprint(const torch::Tensor& t) {
  return aligned(static_cast<size_t>(t.numel()) * t.element_size());
}

void StagingBuffers::begin(size_t bytes) {
  if (capacity() < bytes) {
    buffer_ = torch::Tensor();  // free the old one first: the state may be large
    buffer_ = torch::empty({static_cast<int64_t>(bytes)}, torch::TensorOptions().dtype(torch::kUInt8).pinned_memory(pinned_));
    // Touch every page now, so that no save pays for faulting them in.
    std::memset(buffer_.data_ptr(), 0, bytes);
    ++allocations_;
  }
  used_ = 0;
  deviceCopies_ = false;
}

torch::Tensor StagingBuffers::copy(const torch::Tensor& t) {
  const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
  PERENNIAL_CHECK(used_ + footprint(t) <= capacity(), "staging buffer of " << capacity() << " bytes overflows");
  uint8_t* base = buffer_.data_ptr<uint8_t>() + used_;
  used_ += footprint(t);
  torch::Tensor dst = torch::from_blob(base, t.sizes(), torch::TensorOptions().dtype(t.scalar_type()));
  if (t.is_cpu() && t.is_contiguous()) {
    if (bytes > 0) std::memcpy(base, t.data_ptr(), bytes);
  } else if (t.is_cpu()) {
    dst.copy_(t);
  } else {
    dst.copy_(t, /*non_blocking=*/pinned_);
    deviceCopies_ = true;
  }
  return dst;
}

void StagingBuffers::finish() {
  if (deviceCopies_) torch::cuda::synchronize();
  deviceCopies_ = false;
}

}  // namespace perennial
