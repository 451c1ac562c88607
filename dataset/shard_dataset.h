#pragma once
// Datasets stored as a directory of HDF5 shards.
//
// Shard layout (version 1): a features dataset ([N, ...feature_shape], uint8 images or float32
// values) and a targets dataset ([N]: int64 class labels in [0, num_classes), or float32 values
// for regression); the dataset spec as attributes on the root group:
//   spec.name (string), spec.features (string: the features dataset's name, "images" for
//   Fashion-MNIST, "features" for tables), spec.labels (string: the targets dataset's name,
//   "labels" or "targets"), spec.feature_shape (int64[]), spec.feature_dtype (string: uint8 |
//   float32), spec.num_classes (int64; 0 for regression), spec.target_dtype (string: int64 |
//   float32; absent means int64), spec.version (int64 = 1).
// The task follows from the targets: int64 labels are classification, float32 values
// regression. Every shard of a dataset carries the same spec; shards are read in file-name order.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/h5.h"
#include "common/dtype.h"
#include "common/sha256.h"

namespace perennial::data {

struct DatasetSpec {
  std::string name;
  std::string features = "images";
  std::string labels = "labels";
  std::vector<int64_t> featureShape;
  DType featureType = DType::kUInt8;   // uint8 (images, scaled to [0, 1]) | float32
  DType targetType = DType::kInt64;    // int64 (classification) | float32 (regression)
  int64_t numClasses = 0;              // >= 2 for classification, 0 for regression

  bool regression() const { return targetType == DType::kFloat32; }
  int64_t featureElements() const;
  bool operator==(const DatasetSpec& o) const;
};

inline constexpr int64_t kShardVersion = 1;

// Writes one shard deterministically (same content, same bytes). Atomic: temporary file, fsync,
// rename. FEATURES and TARGETS hold the spec's dtypes; class labels must be in [0, numClasses).
void writeShard(const std::string& path, const DatasetSpec& spec, const void* features,
                const void* targets, int64_t rows);

DatasetSpec readSpec(hid_t file, const std::string& path);

// Read-only view of a shard directory. Thread-compatible: one reader per thread, or external
// locking (the HDF5 library itself is built thread-safe).
class ShardedDataset {
 public:
  // Throws DataError naming the directory or shard when it has no shards, a shard's spec
  // differs from the first one's, or a dataset's type or shape disagrees with the spec.
  explicit ShardedDataset(const std::string& dir);

  const DatasetSpec& spec() const { return spec_; }
  int64_t size() const { return total_; }
  size_t numShards() const { return shards_.size(); }
  const std::string& dir() const { return dir_; }
  const std::vector<std::string>& shardPaths() const { return paths_; }
  int64_t shardRows(size_t shard) const { return shards_.at(shard).rows; }
  // SHA-256 of shard SHARD's bytes, read through the descriptor this dataset reads rows from (so
  // the bytes hashed are those trained on, even if the path was replaced since it was opened).
  // Throws IoError naming the file when it cannot be read.
  Digest hashShard(size_t shard) const;

  // Reads the rows with the given global indices (any order, repeats allowed) into FEATURES
  // (rows x featureElements of the feature dtype) and TARGETS (rows of the target dtype), in
  // the order given. One HDF5 read per shard touched: rows of a shard are gathered with a
  // single hyperslab selection.
  void readRows(const std::vector<int64_t>& indices, void* features, void* targets);

  // Reads the contiguous global range [begin, end).
  void readRange(int64_t begin, int64_t end, void* features, void* targets);

  // NOTE [Row cache]: reads every row into memory (one read of each dataset per shard) when the
  // features and targets take at most MAX_BYTES, and returns true; readRows then copies rows from
  // memory instead of asking HDF5 for each batch (about 0.13 ms per 64-row batch of Fashion-MNIST,
  // taken from the rank's compute when its loader shares the core). The shards' bytes were
  // checked (NOTE [Data identity], trainer/data_identity.h) through the descriptors this reads from.
  bool cacheInMemory(size_t maxBytes);
  bool cached() const { return cached_; }

 private:
  struct Shard {
    h5::Handle file;
    h5::Handle features;
    h5::Handle labels;
    int64_t begin;  // first global index
    int64_t rows;
  };
  void readShardRows(Shard& s, const std::vector<int64_t>& localRows, void* features,
                     void* targets, const std::string& path);

  std::string dir_;
  DatasetSpec spec_;
  std::vector<Shard> shards_;
  std::vector<std::string> paths_;
  int64_t total_ = 0;
  bool cached_ = false;
  std::vector<uint8_t> cacheFeatures_, cacheTargets_;  // every row, in global order
};

}  // namespace perennial::data
