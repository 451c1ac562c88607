#pragma once
// An HDF5 "document": root attributes plus ordered groups of named tensors. Both file kinds
// Perennial writes are documents: weights files (`model.h5`) and training checkpoints
// (docs/checkpoint-format.md).
//
// On disk:
//   /                     attributes: format (string), format_version (int64), then the
//                         document's string, int64 and float64 attributes (each set sorted by key)
//   /<group>/<tensor>     one contiguous dataset per tensor with attribute xxh3_64 (its digest,
//                         checked on every read); groups may be nested
//                         ("optimizer/exp_avg"); attribute `order` on each group lists its tensor
//                         names, one per line, in the document's order
//   /                     attribute `groups` lists the group paths in order, one per line
// Same document, same bytes (NOTE [Deterministic HDF5] in h5.h): nothing time-dependent is stored.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/dtype.h"

namespace perennial::checkpoint {

struct Tensor {
  std::string name;
  DType type = DType::kFloat32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;  // contiguous, native (little-endian) order
  // For writing without a copy: when set, the data lives here (the caller keeps it alive for
  // the write) and `bytes` is empty. Documents read from disk always own their bytes.
  const void* external = nullptr;

  int64_t elements() const;
  size_t byteSize() const { return static_cast<size_t>(elements()) * dtypeSize(type); }
  const void* data() const { return external ? external : static_cast<const void*>(bytes.data()); }
};

struct Group {
  std::string path;  // "state_dict", "optimizer/exp_avg"
  std::vector<Tensor> tensors;
  const Tensor* find(const std::string& name) const;
};

struct Document {
  std::string format;
  int64_t formatVersion = 1;
  std::map<std::string, std::string> strings;
  std::map<std::string, int64_t> ints;
  std::map<std::string, double> floats;
  std::vector<Group> groups;
  // String attributes whose values are computed while the datasets are written (on another
  // thread; for example a hash over the tensors). Written after the datasets, in key order.
  std::map<std::string, std::function<std::string()>> deferredStrings;
  // Keeps the memory behind `Tensor::external` pointers alive as long as the document.
  std::shared_ptr<void> keepAlive;

  const Group* group(const std::string& path) const;
  // Typed lookups that throw DataError naming SOURCE and the key when it is missing.
  const std::string& str(const std::string& key, const std::string& source) const;
  int64_t integer(const std::string& key, const std::string& source) const;
  double real(const std::string& key, const std::string& source) const;
};

// Writes DOC to PATH atomically: a temporary file in the same directory, fsync, rename, fsync of
// the directory. A crash leaves either the old PATH or the new one, plus at most a stray
// temporary file (named PATH.tmp.<pid>), never a partial PATH. With SHA256_HEX, also returns
// the file's SHA-256, computed from the bytes as they are written (NOTE [File image] in
// checkpoint/file_image.h), never by reading the file back. The tensors' memory must stay
// unchanged until it returns. Reaches the fault points document-* after each step that touches
// the disk (NOTE [Fault points], common/fault.h).
void writeDocument(const std::string& path, const Document& doc, std::string* sha256Hex = nullptr);

// Where readDocument puts a tensor's bytes: a pointer to t.byteSize() writable bytes of the
// caller's (a model parameter, say), or nullptr to let the document own them. GROUP is the
// group's path; T has the tensor's name, type and shape (no data yet).
using TensorSink = std::function<void*(const std::string& group, const Tensor& t)>;

// Reads and verifies every dataset (its xxh3_64 digest). Throws DataError/IoError naming the file and
// what failed: not HDF5, truncated, wrong format, a checksum mismatch in a named tensor.
// EXPECTED_FORMAT empty accepts any format.
// With SINK, tensors it places are read straight into the caller's memory (Tensor::external).
Document readDocument(const std::string& path, const std::string& expectedFormat = "",
                      const TensorSink& sink = nullptr);

}  // namespace perennial::checkpoint
