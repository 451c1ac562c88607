#pragma once
// Assignment of gradients to all-reduce buckets (torch-free, so it is unit-testable alone).
//
// NOTE [Bucket order]: parameters are visited in reverse registration order (roughly the order
// backward produces their gradients, as PyTorch DDP does) and packed greedily into buckets of at
// most capBytes. A tensor larger than the cap gets a bucket of its own; a bucket never mixes
// element types. The plan depends only on the parameters' sizes, types and the cap, so every
// rank computes the same plan and reduces buckets in the same order: a precondition for
// bitwise-identical results across ranks and runs.
#include <cstddef>
#include <vector>

#include "common/dtype.h"

namespace perennial {

struct ParamInfo {
  size_t numel;
  DType type;
};

struct BucketEntry {
  size_t param;   // index into the parameter list
  size_t offset;  // element offset inside the bucket's flat buffer
  size_t numel;
};

struct Bucket {
  DType type;
  size_t numel = 0;
  std::vector<BucketEntry> entries;
  size_t bytes() const { return numel * dtypeSize(type); }
};

// capBytes must be > 0. Zero-element parameters are placed (at no cost) like any other.
std::vector<Bucket> planBuckets(const std::vector<ParamInfo>& params, size_t capBytes);

}  // namespace perennial
