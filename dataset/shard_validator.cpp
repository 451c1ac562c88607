#include "dataset/shard_validator.h"

#include <hdf5.h>

#include <cmath>
#include <filesystem>

#include "common/h5.h"

namespace perennial::data {
namespace {
namespace stdfs = std::filesystem;

constexpr int64_t kBlockBytes = 8 << 20;

std::string shapeText(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// Reads rows [begin, begin+count) of a dataset whose rows hold ROW_ELEMS elements of TYPE.
void readBlock(hid_t ds, hid_t memType, int64_t begin, int64_t count, const std::vector<int64_t>& shape,
               void* out, const std::string& context) {
  h5::Handle fspace(h5::check(H5Dget_space(ds), "H5Dget_space", context));
  std::vector<hsize_t> start(shape.size(), 0), cnt(shape.begin(), shape.end());
  start[0] = static_cast<hsize_t>(begin);
  cnt[0] = static_cast<hsize_t>(count);
  h5::check(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr),
            "H5Sselect_hyperslab", context);
  h5::Handle mspace(h5::check(H5Screate_simple(static_cast<int>(cnt.size()), cnt.data(), nullptr),
                              "H5Screate_simple", context));
  h5::check(H5Dread(ds, memType, mspace, fspace, H5P_DEFAULT, out), "H5Dread", context);
}

// The shard's spec, read as the trainer reads it, against the expected one: every field that
// differs is named with both values.
void checkSpec(hid_t file, const std::string& path, const DatasetSpec& want) {
  DatasetSpec got;
  try {
    got = readSpec(file, path);
  } catch (const Error& e) {
    throw ShardRejected("spec", std::string(e.what()) + " (shards carry their dataset spec; see docs/scheduler.md)");
  }
  auto mismatch = [&](const std::string& attr, const std::string& g, const std::string& w) {
    throw ShardRejected("spec", path + "@" + attr + ": is " + g + ", the dataset spec says " + w);
  };
  auto quoted = [](const std::string& v) { return "'" + v + "'"; };
  if (got.name != want.name) mismatch("spec.name", quoted(got.name), quoted(want.name));
  if (got.features != want.features) mismatch("spec.features", quoted(got.features), quoted(want.features));
  if (got.labels != want.labels) mismatch("spec.labels", quoted(got.labels), quoted(want.labels));
  if (got.featureShape != want.featureShape) {
    mismatch("spec.feature_shape", shapeText(got.featureShape), shapeText(want.featureShape));
  }
  if (got.featureType != want.featureType) {
    mismatch("spec.feature_dtype", quoted(dtypeName(got.featureType)), quoted(dtypeName(want.featureType)));
  }
  if (got.targetType != want.targetType) {
    mismatch("spec.target_dtype", quoted(dtypeName(got.targetType)), quoted(dtypeName(want.targetType)));
  }
  if (got.numClasses != want.numClasses) {
    mismatch("spec.num_classes", std::to_string(got.numClasses), std::to_string(want.numClasses));
  }
}

}  // namespace

ShardSummary validateShard(const std::string& fsPath, const DatasetRules& r, const std::string& shownAs) {
  h5::quietErrors();
  // Messages name the file as the user knows it (ingest validates a private copy).
  const std::string& path = shownAs.empty() ? fsPath : shownAs;
  ShardSummary out;
  std::error_code ec;
  const auto size = stdfs::file_size(fsPath, ec);
  if (ec) throw ShardRejected("hdf5", path + ": cannot stat: " + ec.message());
  out.bytes = static_cast<int64_t>(size);
  if (out.bytes > r.maxShardBytes) {
    throw ShardRejected("size", path + ": " + std::to_string(out.bytes) + " bytes exceeds dataset.max_shard_bytes = " +
                                    std::to_string(r.maxShardBytes));
  }
  if (out.bytes == 0 || H5Fis_hdf5(fsPath.c_str()) <= 0) {
    throw ShardRejected("hdf5", path + ": not an HDF5 file (" + std::to_string(out.bytes) + " bytes)");
  }
  h5::Handle file;
  try {
    file = h5::openFile(fsPath, 0);
  } catch (const Error& e) {
    throw ShardRejected("hdf5", path + ": cannot be opened as HDF5 (truncated or damaged?): " + e.what());
  }
  const DatasetSpec& spec = r.spec;
  checkSpec(file, path, spec);

  for (const std::string& name : {spec.features, spec.labels}) {
    if (!h5::exists(file, name)) throw ShardRejected("dataset", path + ": required dataset '" + name + "' is missing");
  }
  h5::DatasetInfo fi, li;
  try {
    fi = h5::datasetInfo(file, spec.features, path);
    li = h5::datasetInfo(file, spec.labels, path);
  } catch (const Error& e) {
    throw ShardRejected("dtype", e.what());
  }
  if (fi.type != spec.featureType) {
    throw ShardRejected("dtype", path + ":" + spec.features + ": dtype " + dtypeName(fi.type) + ", the spec says " +
                                     dtypeName(spec.featureType));
  }
  if (li.type != spec.targetType) {
    throw ShardRejected("dtype", path + ":" + spec.labels + ": dtype " + std::string(dtypeName(li.type)) + ", the spec says " +
                                     dtypeName(spec.targetType) +
                                     (spec.regression() ? " (target values)" : " (class labels)"));
  }
  std::vector<int64_t> tail(fi.shape.empty() ? fi.shape.begin() : fi.shape.begin() + 1, fi.shape.end());
  if (fi.shape.empty() || tail != spec.featureShape) {
    throw ShardRejected("shape", path + ":" + spec.features + ": shape " + shapeText(fi.shape) + ", the spec says [N, " +
                                     shapeText(spec.featureShape).substr(1));
  }
  if (li.shape.size() != 1) {
    throw ShardRejected("shape", path + ":" + spec.labels + ": shape " + shapeText(li.shape) + ", labels must be [N]");
  }
  const int64_t rows = fi.shape[0];
  if (li.shape[0] != rows) {
    throw ShardRejected("rows", path + ": " + spec.features + " has " + std::to_string(rows) + " rows but " + spec.labels +
                                    " has " + std::to_string(li.shape[0]));
  }
  if (rows == 0) throw ShardRejected("empty", path + ": the shard has no rows");
  if (rows > r.maxShardRows) {
    throw ShardRejected("max_rows", path + ": " + std::to_string(rows) + " rows exceeds dataset.max_shard_rows = " +
                                        std::to_string(r.maxShardRows));
  }
  out.rows = rows;

  const int64_t rowElems = shapeElements(spec.featureShape);
  const int64_t rowBytes = rowElems * static_cast<int64_t>(dtypeSize(spec.featureType));
  const int64_t block = std::max<int64_t>(1, kBlockBytes / std::max<int64_t>(1, rowBytes));
  Profile& p = out.profile;
  p.rows = rows;
  p.labels.assign(static_cast<size_t>(spec.numClasses), 0);
  std::vector<int64_t>& values = p.hist["value"];
  std::vector<int64_t>& means = p.hist["row_mean"];
  values.assign(kProfileBins, 0);
  means.assign(kProfileBins, 0);
  try {
    h5::Handle fds(h5::check(H5Dopen2(file, spec.features.c_str(), H5P_DEFAULT), "H5Dopen2", path));
    h5::Handle lds(h5::check(H5Dopen2(file, spec.labels.c_str(), H5P_DEFAULT), "H5Dopen2", path));
    for (hid_t ds : {fds.get(), lds.get()}) h5::checkStoredSize(ds, path);  // before HDF5 trusts the layout
    std::vector<int64_t> labels;
    std::vector<float> targets;
    std::vector<uint8_t> bytes;
    std::vector<float> floats;
    for (int64_t begin = 0; begin < rows; begin += block) {
      const int64_t n = std::min(block, rows - begin);
      if (spec.regression()) {
        targets.resize(static_cast<size_t>(n));
        readBlock(lds, H5T_NATIVE_FLOAT, begin, n, li.shape, targets.data(), path + ":" + spec.labels);
        for (int64_t i = 0; i < n; ++i) {
          const float y = targets[static_cast<size_t>(i)];
          if (!std::isfinite(y)) {
            throw ShardRejected("finite", path + ":" + spec.labels + ": row " + std::to_string(begin + i) + " has target " +
                                              (std::isnan(y) ? "NaN" : "infinite"));
          }
        }
      } else {
        labels.resize(static_cast<size_t>(n));
        readBlock(lds, H5T_NATIVE_INT64, begin, n, li.shape, labels.data(), path + ":" + spec.labels);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t y = labels[static_cast<size_t>(i)];
          if (y < 0 || y >= spec.numClasses) {
            throw ShardRejected("labels", path + ":" + spec.labels + ": row " + std::to_string(begin + i) + " has label " +
                                              std::to_string(y) + ", outside [0, " + std::to_string(spec.numClasses) + ")");
          }
          ++p.labels[static_cast<size_t>(y)];
        }
      }
      if (spec.featureType == DType::kUInt8) {
        // Integer counts per value first, then 256 values into 16 bins: the bin edges of the
        // default 0..256 range fall on whole values, so this equals binning each value.
        bytes.resize(static_cast<size_t>(n * rowElems));
        readBlock(fds, H5T_NATIVE_UINT8, begin, n, fi.shape, bytes.data(), path + ":" + spec.features);
        int64_t byValue[256] = {0};
        for (int64_t i = 0; i < n; ++i) {
          const uint8_t* row = bytes.data() + i * rowElems;
          int64_t sum = 0;
          for (int64_t k = 0; k < rowElems; ++k) {
            ++byValue[row[k]];
            sum += row[k];
          }
          ++means[static_cast<size_t>(profileBin(static_cast<double>(sum) / static_cast<double>(rowElems), r.valueMin, r.valueMax))];
        }
        for (int v = 0; v < 256; ++v) values[static_cast<size_t>(profileBin(v, r.valueMin, r.valueMax))] += byValue[v];
      } else {
        floats.resize(static_cast<size_t>(n * rowElems));
        readBlock(fds, H5T_NATIVE_FLOAT, begin, n, fi.shape, floats.data(), path + ":" + spec.features);
        for (int64_t i = 0; i < n; ++i) {
          const float* row = floats.data() + i * rowElems;
          double sum = 0;
          for (int64_t k = 0; k < rowElems; ++k) {
            if (!std::isfinite(row[k])) {
              throw ShardRejected("finite", path + ":" + spec.features + ": row " + std::to_string(begin + i) + ", element " +
                                                std::to_string(k) + " is " + (std::isnan(row[k]) ? "NaN" : "infinite"));
            }
            ++values[static_cast<size_t>(profileBin(row[k], r.valueMin, r.valueMax))];
            sum += row[k];
          }
          ++means[static_cast<size_t>(profileBin(sum / static_cast<double>(rowElems), r.valueMin, r.valueMax))];
        }
      }
    }
  } catch (const ShardRejected&) {
    throw;
  } catch (const Error& e) {
    throw ShardRejected("hdf5", path + ": cannot read the data (truncated or damaged?): " + e.what());
  }
  return out;
}

}  // namespace perennial::data

namespace perennial::data {

DatasetSpec DatasetRules::fashionMnistSpec() {
  DatasetSpec s;
  s.name = "fashion-mnist";
  s.features = "images";
  s.labels = "labels";
  s.featureShape = {28, 28};
  s.featureType = DType::kUInt8;
  s.targetType = DType::kInt64;
  s.numClasses = 10;
  return s;
}

}  // namespace perennial::data
