#pragma once
// Tensors for the buffers a training step sweeps every step: the gradient buckets the
// all-reduce reads and writes, and the flat parameters and optimizer state of the fused step.
//
// NOTE [Huge pages]: an all-reduce through shared memory (Open MPI's vader transport with CMA)
// has the kernel pin and map the peer's buffer page by page on every call. On 4 KiB pages an
// 814 KB gradient is 199 pages a call; on a transparent huge page it is one. So buffers of at
// least kMinHugePageBytes are allocated aligned to 2 MiB and advised as huge pages
// (madvise(MADV_HUGEPAGE): Linux's default THP mode, "madvise", backs only such ranges), then
// zeroed, which faults them in. Where the kernel has no huge page to give, or THP is off, the
// memory is ordinary pages and nothing else changes. The values, and so every result, are the
// same either way: only the memory's page size differs. Measured in BENCHMARKS.md ("Huge pages").
#include <torch/types.h>

#include <cstddef>
#include <cstdint>

namespace perennial {

// Smaller buffers are allocated as LibTorch allocates (rounding them up to 2 MiB would waste
// more than it gains).
inline constexpr size_t kMinHugePageBytes = size_t{256} << 10;

// A zeroed, contiguous 1-D tensor of NUMEL elements with OPTIONS (dtype, device): on the CPU and
// of at least kMinHugePageBytes, on huge pages (NOTE [Huge pages]); otherwise torch::zeros.
torch::Tensor stepBufferZeros(int64_t numel, const torch::TensorOptions& options);

// Whether T's memory lies in huge pages now (/proc/self/smaps; for tests and diagnostics).
bool onHugePages(const torch::Tensor& t);

}  // namespace perennial
