#pragma once
// A file of named tensors in HDF5 (the trainer's final weights, `model.h5`).
//
// Layout (format "perennial-weights", version 1):
//   /                   attributes: format, format_version, and the caller's string attributes
//   /state_dict/<name>  one dataset per tensor, named as PyTorch's state_dict names it,
//                       Fletcher32-checksummed; attribute `order` on /state_dict lists the names
//                       in state_dict order, one per line.
// The same tensors and attributes give the same bytes (see NOTE [Deterministic HDF5]).
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/dtype.h"

namespace perennial::checkpoint {

struct TensorView {
  std::string name;
  DType type;
  std::vector<int64_t> shape;
  const void* data;  // contiguous, native byte order
};

struct TensorData {
  std::string name;
  DType type;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

inline constexpr const char* kWeightsFormat = "perennial-weights";
inline constexpr int64_t kWeightsFormatVersion = 1;

// Writes PATH atomically (temporary file in the same directory, fsync, rename, fsync dir).
void writeTensorFile(const std::string& path, const std::vector<TensorView>& tensors,
                     const std::map<std::string, std::string>& attributes);

struct TensorFile {
  std::map<std::string, std::string> attributes;
  std::vector<TensorData> tensors;  // in state_dict order
};

// Throws DataError/IoError naming the file and what is wrong (not HDF5, wrong format,
// checksum mismatch, missing tensor).
TensorFile readTensorFile(const std::string& path);

}  // namespace perennial::checkpoint
