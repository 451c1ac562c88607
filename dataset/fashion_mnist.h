#pragma once
// Fashion-MNIST (Debian's dataset-fashion-mnist, IDX files) as shard directories.
#include <cstddef>
#include <cstdint>
#include <string>

namespace perennial::data {

struct ImportOptions {
  std::string sourceDir = "/usr/share/datasets/fashion-mnist";
  std::string outDir;
  int64_t shardSize = 10000;
};

struct ImportSummary {
  int64_t trainRows = 0, testRows = 0;
  size_t trainShards = 0, testShards = 0;
};

// Converts Fashion-MNIST's IDX files into OUT/train and OUT/test shard directories.
ImportSummary importFashionMnist(const ImportOptions& options);

}  // namespace perennial::data
