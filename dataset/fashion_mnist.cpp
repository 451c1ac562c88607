#include "dataset/fashion_mnist.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <tuple>

#include "common/error.h"
#include "common/fs_util.h"
#include "dataset/idx.h"
#include "dataset/shard_dataset.h"

namespace perennial::data {
namespace stdfs = std::filesystem;

namespace {

// Validates one IDX pair and writes it as shards into DEST (a fresh directory).
std::pair<int64_t, size_t> importSplit(const std::string& images, const std::string& labels,
                                       const std::string& dest, const std::string& name,
                                       int64_t shardSize) {
  IdxArray img = readIdx(images);
  IdxArray lab = readIdx(labels);
  if (img.dims.size() != 3) {
    throw DataError(images + ": expected 3 dimensions [N, rows, cols], found " + std::to_string(img.dims.size()));
  }
  if (lab.dims.size() != 1) {
    throw DataError(labels + ": expected 1 dimension [N], found " + std::to_string(lab.dims.size()));
  }
  if (lab.dims[0] != img.dims[0]) {
    throw DataError(labels + ": has " + std::to_string(lab.dims[0]) + " labels but " + images +
                    " has " + std::to_string(img.dims[0]) + " images");
  }
  DatasetSpec spec;
  spec.name = name;
  spec.featureShape = {img.dims[1], img.dims[2]};
  spec.numClasses = 10;
  const int64_t n = img.dims[0];
  std::vector<int64_t> lab64(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    lab64[i] = lab.values[i];
    if (lab64[i] >= spec.numClasses) {
      throw DataError(labels + ": label " + std::to_string(lab64[i]) + " at index " + std::to_string(i) +
                      " outside [0, 10)");
    }
  }
  const std::string tmpDir = dest + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  stdfs::remove_all(tmpDir, ec);
  stdfs::create_directories(tmpDir);
  const int64_t fe = spec.featureElements();
  size_t shards = 0;
  for (int64_t begin = 0; begin < n; begin += shardSize, ++shards) {
    const int64_t rows = std::min(shardSize, n - begin);
    char file[32];
    std::snprintf(file, sizeof(file), "shard-%05zu.h5", shards);
    writeShard(tmpDir + "/" + file, spec, img.values.data() + begin * fe, lab64.data() + begin, rows);
  }
  stdfs::rename(tmpDir, dest);
  fs::fsyncDir(stdfs::path(dest).parent_path().string());
  return {n, shards};
}

}  // namespace

ImportSummary importFashionMnist(const ImportOptions& o) {
  if (o.shardSize <= 0) throw ConfigError("--shard-size: must be positive (got " + std::to_string(o.shardSize) + ")");
  if (o.outDir.empty()) throw ConfigError("--out: required");
  const std::string train = o.outDir + "/train", test = o.outDir + "/test";
  for (const auto& d : {train, test}) {
    if (fs::exists(d)) {
      throw ConfigError(d + ": already exists; remove it or import into another --out directory");
    }
  }
  stdfs::create_directories(o.outDir);
  auto src = [&](const char* f) {
    std::string gz = o.sourceDir + "/" + f + ".gz";
    return fs::exists(gz) ? gz : o.sourceDir + "/" + f;
  };
  ImportSummary s;
  std::tie(s.trainRows, s.trainShards) = importSplit(src("train-images-idx3-ubyte"),
      src("train-labels-idx1-ubyte"), train, "fashion-mnist", o.shardSize);
  std::tie(s.testRows, s.testShards) = importSplit(src("t10k-images-idx3-ubyte"),
      src("t10k-labels-idx1-ubyte"), test, "fashion-mnist", o.shardSize);
  return s;
}

}  // namespace perennial::data
