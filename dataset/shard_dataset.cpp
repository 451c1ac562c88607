#include "dataset/shard_dataset.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <tuple>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/fs_util.h"
#include "common/log.h"
#include "common/read_file.h"

namespace perennial::data {
namespace stdfs = std::filesystem;

int64_t DatasetSpec::featureElements() const { return shapeElements(featureShape); }

bool DatasetSpec::operator==(const DatasetSpec& o) const {
  return name == o.name && features == o.features && labels == o.labels &&
         featureShape == o.featureShape && featureType == o.featureType &&
         targetType == o.targetType && numClasses == o.numClasses;
}

void writeShard(const std::string& path, const DatasetSpec& spec, const void* features,
                const void* targets, int64_t rows) {
  PERENNIAL_CHECK(spec.featureType == DType::kUInt8 || spec.featureType == DType::kFloat32,
                  "feature dtype " << dtypeName(spec.featureType));
  PERENNIAL_CHECK(spec.targetType == DType::kInt64 || spec.targetType == DType::kFloat32,
                  "target dtype " << dtypeName(spec.targetType));
  if (!spec.regression()) {
    const auto* labels = static_cast<const int64_t*>(targets);
    for (int64_t i = 0; i < rows; ++i) {
      if (labels[i] < 0 || labels[i] >= spec.numClasses) {
        throw DataError(path + ": label " + std::to_string(labels[i]) + " at row " + std::to_string(i) +
                        " outside [0, " + std::to_string(spec.numClasses) + ")");
      }
    }
  }
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    {
      h5::Handle file = h5::createFile(tmp);
      h5::writeAttr(file, "spec.version", kShardVersion, tmp);
      h5::writeAttr(file, "spec.name", spec.name, tmp);
      h5::writeAttr(file, "spec.features", spec.features, tmp);
      h5::writeAttr(file, "spec.labels", spec.labels, tmp);
      h5::writeAttr(file, "spec.feature_shape", spec.featureShape, tmp);
      h5::writeAttr(file, "spec.feature_dtype", std::string(dtypeName(spec.featureType)), tmp);
      h5::writeAttr(file, "spec.num_classes", spec.numClasses, tmp);
      // Written only when not the default, so Fashion-MNIST shards keep their bytes.
      if (spec.targetType != DType::kInt64) {
        h5::writeAttr(file, "spec.target_dtype", std::string(dtypeName(spec.targetType)), tmp);
      }
      std::vector<int64_t> shape{rows};
      shape.insert(shape.end(), spec.featureShape.begin(), spec.featureShape.end());
      h5::writeDataset(file, spec.features, spec.featureType, shape, features, tmp);
      h5::writeDataset(file, spec.labels, spec.targetType, {rows}, targets, tmp);
    }
    fs::fsyncFile(tmp);
    fs::publish(tmp, path);
  } catch (...) {
    std::error_code ec;
    stdfs::remove(tmp, ec);
    throw;
  }
}

DatasetSpec readSpec(hid_t file, const std::string& path) {
  if (!h5::hasAttr(file, "spec.version")) {
    throw DataError(path + ": not a Perennial shard (attribute spec.version missing)");
  }
  const int64_t version = h5::readIntAttr(file, "spec.version", path);
  if (version != kShardVersion) {
    throw DataError(path + ": shard spec.version " + std::to_string(version) +
                    " is not supported (expected " + std::to_string(kShardVersion) + ")");
  }
  DatasetSpec s;
  s.name = h5::readStringAttr(file, "spec.name", path);
  s.features = h5::readStringAttr(file, "spec.features", path);
  s.labels = h5::readStringAttr(file, "spec.labels", path);
  s.featureShape = h5::readIntsAttr(file, "spec.feature_shape", path);
  const std::string dtype = h5::readStringAttr(file, "spec.feature_dtype", path);
  if (dtype == "uint8") {
    s.featureType = DType::kUInt8;
  } else if (dtype == "float32") {
    s.featureType = DType::kFloat32;
  } else {
    throw DataError(path + "@spec.feature_dtype: '" + dtype + "' not supported (uint8 or float32)");
  }
  if (h5::hasAttr(file, "spec.target_dtype")) {
    const std::string t = h5::readStringAttr(file, "spec.target_dtype", path);
    if (t == "int64") {
      s.targetType = DType::kInt64;
    } else if (t == "float32") {
      s.targetType = DType::kFloat32;
    } else {
      throw DataError(path + "@spec.target_dtype: '" + t + "' not supported (int64 labels or float32 values)");
    }
  }
  s.numClasses = h5::readIntAttr(file, "spec.num_classes", path);
  if (s.regression() && s.numClasses != 0) {
    throw DataError(path + "@spec.num_classes: must be 0 for float32 (regression) targets");
  }
  if (!s.regression() && s.numClasses < 2) throw DataError(path + "@spec.num_classes: must be at least 2");
  if (s.featureShape.empty()) throw DataError(path + "@spec.feature_shape: must not be empty");
  for (int64_t d : s.featureShape) {
    if (d <= 0) throw DataError(path + "@spec.feature_shape: dimensions must be positive");
  }
  return s;
}

ShardedDataset::ShardedDataset(const std::string& dir) : dir_(dir) {
  paths_ = fs::listFiles(dir, ".h5");
  if (paths_.empty()) throw DataError(dir + ": no shards (*.h5) found");
  for (const std::string& path : paths_) {
    Shard s;
    // Batches gather scattered rows: a sieve buffer would re-read 64 KiB around each one.
    s.file = h5::openFile(path, 0);
    DatasetSpec spec = readSpec(s.file, path);
    if (shards_.empty()) {
      spec_ = spec;
    } else if (!(spec == spec_)) {
      throw DataError(path + ": dataset spec differs from " + paths_.front() +
                      " (all shards of a dataset must share name, shape, dtype and classes)");
    }
    h5::DatasetInfo fi = h5::datasetInfo(s.file, spec.features, path);
    h5::DatasetInfo li = h5::datasetInfo(s.file, spec.labels, path);
    if (fi.type != spec.featureType) {
      throw DataError(path + ":" + spec.features + ": dtype " + dtypeName(fi.type) + " differs from spec.feature_dtype " +
                      dtypeName(spec.featureType));
    }
    if (li.type != spec.targetType) {
      throw DataError(path + ":" + spec.labels + ": dtype " + dtypeName(li.type) + " differs from the spec's " +
                      dtypeName(spec.targetType));
    }
    std::vector<int64_t> expect{fi.shape.empty() ? 0 : fi.shape[0]};
    expect.insert(expect.end(), spec.featureShape.begin(), spec.featureShape.end());
    if (fi.shape != expect) throw DataError(path + ":" + spec.features + ": shape does not match spec.feature_shape");
    if (li.shape.size() != 1 || li.shape[0] != fi.shape[0]) {
      throw DataError(path + ":" + spec.labels + ": must be 1-D with one label per row");
    }
    s.features = h5::Handle(h5::check(H5Dopen2(s.file, spec.features.c_str(), H5P_DEFAULT), "H5Dopen2", path));
    s.labels = h5::Handle(h5::check(H5Dopen2(s.file, spec.labels.c_str(), H5P_DEFAULT), "H5Dopen2", path));
    // A damaged shard may declare more rows than it stores: refused here, not read past.
    h5::checkStoredSize(s.features, path + ":" + spec.features);
    h5::checkStoredSize(s.labels, path + ":" + spec.labels);
    s.begin = total_;
    s.rows = fi.shape[0];
    total_ += s.rows;
    shards_.push_back(std::move(s));
  }
}

void ShardedDataset::readShardRows(Shard& s, const std::vector<int64_t>& rows, void* features,
                                   void* targets, const std::string& path) {
  // rows is sorted; coalesce runs of consecutive rows into hyperslab blocks.
  const int nd = static_cast<int>(spec_.featureShape.size()) + 1;
  std::vector<hsize_t> fstart(nd, 0), fcount(nd);
  for (int i = 1; i < nd; ++i) fcount[i] = static_cast<hsize_t>(spec_.featureShape[i - 1]);
  h5::Handle fspace(h5::check(H5Dget_space(s.features), "H5Dget_space", path));
  h5::Handle lspace(h5::check(H5Dget_space(s.labels), "H5Dget_space", path));
  bool first = true;
  for (size_t i = 0; i < rows.size();) {
    size_t j = i + 1;
    while (j < rows.size() && rows[j] == rows[j - 1] + 1) ++j;
    fstart[0] = static_cast<hsize_t>(rows[i]);
    fcount[0] = static_cast<hsize_t>(j - i);
    H5S_seloper_t op = first ? H5S_SELECT_SET : H5S_SELECT_OR;
    h5::check(H5Sselect_hyperslab(fspace, op, fstart.data(), nullptr, fcount.data(), nullptr),
              "H5Sselect_hyperslab", path);
    hsize_t lstart = fstart[0], lcount = fcount[0];
    h5::check(H5Sselect_hyperslab(lspace, op, &lstart, nullptr, &lcount, nullptr),
              "H5Sselect_hyperslab", path);
    first = false;
    i = j;
  }
  hsize_t n = rows.size();
  hsize_t fmem[2] = {n, static_cast<hsize_t>(spec_.featureElements())};
  h5::Handle fmemSpace(h5::check(H5Screate_simple(2, fmem, nullptr), "H5Screate_simple", path));
  h5::Handle lmemSpace(h5::check(H5Screate_simple(1, &n, nullptr), "H5Screate_simple", path));
  h5::check(H5Dread(s.features, h5::nativeType(spec_.featureType), fmemSpace, fspace, H5P_DEFAULT, features),
            "H5Dread", path + ":" + spec_.features);
  h5::check(H5Dread(s.labels, h5::nativeType(spec_.targetType), lmemSpace, lspace, H5P_DEFAULT, targets),
            "H5Dread", path + ":" + spec_.labels);
}

void ShardedDataset::readRows(const std::vector<int64_t>& indices, void* features, void* targets) {
  const size_t fbytes = static_cast<size_t>(spec_.featureElements()) * dtypeSize(spec_.featureType);
  const size_t tbytes = dtypeSize(spec_.targetType);
  auto* fout = static_cast<uint8_t*>(features);
  auto* tout = static_cast<uint8_t*>(targets);
  if (cached_) {
    for (size_t i = 0; i < indices.size(); ++i) {
      const int64_t g = indices[i];
      if (g < 0 || g >= total_) {
        throw DataError(dir_ + ": row index " + std::to_string(g) + " outside [0, " + std::to_string(total_) + ")");
      }
      std::memcpy(fout + i * fbytes, cacheFeatures_.data() + static_cast<size_t>(g) * fbytes, fbytes);
      std::memcpy(tout + i * tbytes, cacheTargets_.data() + static_cast<size_t>(g) * tbytes, tbytes);
    }
    return;
  }
  // Order positions by global index, then read each shard's rows in one selection. HDF5 returns
  // a selection's rows in file order, so sorting keeps the buffer aligned with the rows; the
  // gathered rows are then scattered back to the caller's order.
  std::vector<size_t> order(indices.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return indices[a] < indices[b]; });
  std::vector<uint8_t> fbuf, tbuf;
  size_t k = 0;
  while (k < order.size()) {
    const int64_t g = indices[order[k]];
    if (g < 0 || g >= total_) {
      throw DataError(dir_ + ": row index " + std::to_string(g) + " outside [0, " + std::to_string(total_) + ")");
    }
    auto it = std::upper_bound(shards_.begin(), shards_.end(), g,
                               [](int64_t v, const Shard& s) { return v < s.begin; });
    Shard& s = *(it - 1);
    std::vector<int64_t> rows;  // distinct local rows, sorted
    std::vector<std::pair<size_t, size_t>> dest;  // (position in caller's order, row slot)
    while (k < order.size() && indices[order[k]] < s.begin + s.rows) {
      const int64_t local = indices[order[k]] - s.begin;
      if (rows.empty() || rows.back() != local) rows.push_back(local);
      dest.emplace_back(order[k], rows.size() - 1);
      ++k;
    }
    fbuf.resize(rows.size() * fbytes);
    tbuf.resize(rows.size() * tbytes);
    readShardRows(s, rows, fbuf.data(), tbuf.data(), paths_[static_cast<size_t>(&s - shards_.data())]);
    for (const auto& [pos, slot] : dest) {
      std::memcpy(fout + pos * fbytes, fbuf.data() + slot * fbytes, fbytes);
      std::memcpy(tout + pos * tbytes, tbuf.data() + slot * tbytes, tbytes);
    }
  }
}

bool ShardedDataset::cacheInMemory(size_t maxBytes) {
  if (cached_) return true;
  const size_t fbytes = static_cast<size_t>(spec_.featureElements()) * dtypeSize(spec_.featureType);
  const size_t tbytes = dtypeSize(spec_.targetType);
  const auto rows = static_cast<size_t>(total_);
  if (rows * (fbytes + tbytes) > maxBytes) return false;
  std::vector<uint8_t> f(rows * fbytes), t(rows * tbytes);
  for (size_t i = 0; i < shards_.size(); ++i) {
    const Shard& s = shards_[i];
    const std::string& path = paths_[i];
    if (s.rows == 0) continue;
    h5::check(H5Dread(s.features, h5::nativeType(spec_.featureType), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                      f.data() + static_cast<size_t>(s.begin) * fbytes),
              "H5Dread", path + ":" + spec_.features);
    h5::check(H5Dread(s.labels, h5::nativeType(spec_.targetType), H5S_ALL, H5S_ALL, H5P_DEFAULT,
                      t.data() + static_cast<size_t>(s.begin) * tbytes),
              "H5Dread", path + ":" + spec_.labels);
  }
  cacheFeatures_ = std::move(f);
  cacheTargets_ = std::move(t);
  cached_ = true;
  return true;
}

void ShardedDataset::readRange(int64_t begin, int64_t end, void* features, void* targets) {
  std::vector<int64_t> idx(static_cast<size_t>(std::max<int64_t>(0, end - begin)));
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = begin + static_cast<int64_t>(i);
  readRows(idx, features, targets);
}

Digest ShardedDataset::hashShard(size_t shard) const {
  const Shard& s = shards_.at(shard);
  const std::string& path = paths_.at(shard);
  // The POSIX (sec2) driver, HDF5's default, hands out its descriptor; pread leaves its offset
  // alone. Any other driver: hash the path.
  int fd = -1;
  {
    h5::Handle fapl(h5::check(H5Fget_access_plist(s.file), "H5Fget_access_plist", path));
    void* handle = nullptr;
    if (H5Pget_driver(fapl) == H5FD_SEC2 && H5Fget_vfd_handle(s.file, fapl, &handle) >= 0 && handle) {
      fd = *static_cast<int*>(handle);
    }
  }
  if (fd < 0) return sha256File(path);
  Sha256 h;
  std::vector<char> buf(4 << 20);
  off_t offset = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf.data(), buf.size(), offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError(path + ": read error while hashing: " + std::strerror(errno));
    }
    if (n == 0) break;
    h.update(buf.data(), static_cast<size_t>(n));
    offset += n;
  }
  return h.finish();
}

}  // namespace perennial::data
