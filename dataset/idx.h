#pragma once
// Reader for the IDX format of MNIST and Fashion-MNIST (optionally gzip-compressed).
//
// An IDX file is a big-endian header: two zero bytes, a type code (0x08 = unsigned byte), the
// number of dimensions, then one uint32 per dimension; then the data, row-major.
#include <cstdint>
#include <string>
#include <vector>

namespace perennial::data {

struct IdxArray {
  std::vector<int64_t> dims;
  std::vector<uint8_t> values;  // unsigned-byte arrays only (all that Fashion-MNIST uses)
};

// Throws DataError naming the file and the rule broken (bad magic, unsupported type, dimension
// count, size mismatch or trailing bytes, truncated data).
IdxArray readIdx(const std::string& path);

// Serialises an unsigned-byte IDX array (uncompressed); for tests and tools.
std::string encodeIdx(const IdxArray& array);

}  // namespace perennial::data
