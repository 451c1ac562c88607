#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace perennial {

// Element types that cross library boundaries (collectives, HDF5 files) without LibTorch.
// kBFloat16 and kFloat16 (common/half.h) only cross the wire (comm.compression); files never
// hold them.
enum class DType : uint8_t { kUInt8, kInt32, kInt64, kFloat32, kFloat64, kBFloat16, kFloat16 };

inline size_t dtypeSize(DType t) {
  switch (t) {
    case DType::kUInt8: return 1;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
    case DType::kBFloat16: return 2;
    case DType::kFloat16: return 2;
  }
  return 0;
}

inline const char* dtypeName(DType t) {
  switch (t) {
    case DType::kUInt8: return "uint8";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
    case DType::kFloat32: return "float32";
    case DType::kFloat64: return "float64";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat16: return "float16";
  }
  return "?";
}

// Number of elements of a tensor of SHAPE (1 for a scalar).
inline int64_t shapeElements(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace perennial
