#include "scheduler/shard_validator.h"

#include <hdf5.h>

#include <cmath>
#include <filesystem>

#include "checkpoint/h5.h"

namespace perennial::sched {
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

void checkSpecAttrs(hid_t file, const std::string& path, const DatasetRules& r) {
  auto mismatch = [&](const std::string& attr, const std::string& got, const std::string& want) {
    throw ShardRejected("spec", path + "@" + attr + ": is " + got + ", the dataset spec says " + want);
  };
  for (const char* attr : {"spec.version", "spec.name", "spec.features", "spec.labels", "spec.feature_shape",
                           "spec.feature_dtype", "spec.num_classes"}) {
    if (!h5::hasAttr(file, attr)) {
      throw ShardRejected("spec", path + ": attribute " + attr +
                                      " missing (shards carry their dataset spec; see docs/scheduler.md)");
    }
  }
  try {
    if (h5::readIntAttr(file, "spec.version", path) != 1) mismatch("spec.version", std::to_string(h5::readIntAttr(file, "spec.version", path)), "1");
    const std::string name = h5::readStringAttr(file, "spec.name", path);
    if (name != r.name) mismatch("spec.name", "'" + name + "'", "'" + r.name + "'");
    const std::string f = h5::readStringAttr(file, "spec.features", path);
    if (f != r.features) mismatch("spec.features", "'" + f + "'", "'" + r.features + "'");
    const std::string l = h5::readStringAttr(file, "spec.labels", path);
    if (l != r.labels) mismatch("spec.labels", "'" + l + "'", "'" + r.labels + "'");
    const auto shape = h5::readIntsAttr(file, "spec.feature_shape", path);
    if (shape != r.featureShape) mismatch("spec.feature_shape", shapeText(shape), shapeText(r.featureShape));
    const std::string dt = h5::readStringAttr(file, "spec.feature_dtype", path);
    if (dt != dtypeName(r.featureType)) mismatch("spec.feature_dtype", "'" + dt + "'", std::string("'") + dtypeName(r.featureType) + "'");
    const int64_t nc = h5::readIntAttr(file, "spec.num_classes", path);
    if (nc != r.numClasses) mismatch("spec.num_classes", std::to_string(nc), std::to_string(r.numClasses));
  } catch (const ShardRejected&) {
    throw;
  } catch (const Error& e) {
    throw ShardRejected("spec", e.what());
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
  checkSpecAttrs(file, path, r);

  for (const std::string& name : {r.features, r.labels}) {
    if (!h5::exists(file, name)) throw ShardRejected("dataset", path + ": required dataset '" + name + "' is missing");
  }
  h5::DatasetInfo fi, li;
  try {
    fi = h5::datasetInfo(file, r.features, path);
    li = h5::datasetInfo(file, r.labels, path);
  } catch (const Error& e) {
    throw ShardRejected("dtype", e.what());
  }
  if (fi.type != r.featureType) {
    throw ShardRejected("dtype", path + ":" + r.features + ": dtype " + dtypeName(fi.type) + ", the spec says " +
                                     dtypeName(r.featureType));
  }
  if (li.type != DType::kInt64) {
    throw ShardRejected("dtype", path + ":" + r.labels + ": dtype " + std::string(dtypeName(li.type)) + ", labels must be int64");
  }
  std::vector<int64_t> tail(fi.shape.empty() ? fi.shape.begin() : fi.shape.begin() + 1, fi.shape.end());
  if (fi.shape.empty() || tail != r.featureShape) {
    throw ShardRejected("shape", path + ":" + r.features + ": shape " + shapeText(fi.shape) + ", the spec says [N, " +
                                     shapeText(r.featureShape).substr(1));
  }
  if (li.shape.size() != 1) {
    throw ShardRejected("shape", path + ":" + r.labels + ": shape " + shapeText(li.shape) + ", labels must be [N]");
  }
  const int64_t rows = fi.shape[0];
  if (li.shape[0] != rows) {
    throw ShardRejected("rows", path + ": " + r.features + " has " + std::to_string(rows) + " rows but " + r.labels +
                                    " has " + std::to_string(li.shape[0]));
  }
  if (rows == 0) throw ShardRejected("empty", path + ": the shard has no rows");
  if (rows > r.maxShardRows) {
    throw ShardRejected("max_rows", path + ": " + std::to_string(rows) + " rows exceeds dataset.max_shard_rows = " +
                                        std::to_string(r.maxShardRows));
  }
  out.rows = rows;

  const int64_t rowElems = shapeElements(r.featureShape);
  const int64_t rowBytes = rowElems * static_cast<int64_t>(dtypeSize(r.featureType));
  const int64_t block = std::max<int64_t>(1, kBlockBytes / std::max<int64_t>(1, rowBytes));
  Profile& p = out.profile;
  p.rows = rows;
  p.labels.assign(static_cast<size_t>(r.numClasses), 0);
  std::vector<int64_t>& values = p.hist["value"];
  std::vector<int64_t>& means = p.hist["row_mean"];
  values.assign(kProfileBins, 0);
  means.assign(kProfileBins, 0);
  try {
    h5::Handle fds(h5::check(H5Dopen2(file, r.features.c_str(), H5P_DEFAULT), "H5Dopen2", path));
    h5::Handle lds(h5::check(H5Dopen2(file, r.labels.c_str(), H5P_DEFAULT), "H5Dopen2", path));
    for (hid_t ds : {fds.get(), lds.get()}) h5::checkStoredSize(ds, path);  // before HDF5 trusts the layout
    std::vector<int64_t> labels;
    std::vector<uint8_t> bytes;
    std::vector<float> floats;
    for (int64_t begin = 0; begin < rows; begin += block) {
      const int64_t n = std::min(block, rows - begin);
      labels.resize(static_cast<size_t>(n));
      readBlock(lds, H5T_NATIVE_INT64, begin, n, li.shape, labels.data(), path + ":" + r.labels);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t y = labels[static_cast<size_t>(i)];
        if (y < 0 || y >= r.numClasses) {
          throw ShardRejected("labels", path + ":" + r.labels + ": row " + std::to_string(begin + i) + " has label " +
                                            std::to_string(y) + ", outside [0, " + std::to_string(r.numClasses) + ")");
        }
        ++p.labels[static_cast<size_t>(y)];
      }
      if (r.featureType == DType::kUInt8) {
        // Integer counts per value first, then 256 values into 16 bins: the bin edges of the
        // default 0..256 range fall on whole values, so this equals binning each value.
        bytes.resize(static_cast<size_t>(n * rowElems));
        readBlock(fds, H5T_NATIVE_UINT8, begin, n, fi.shape, bytes.data(), path + ":" + r.features);
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
        readBlock(fds, H5T_NATIVE_FLOAT, begin, n, fi.shape, floats.data(), path + ":" + r.features);
        for (int64_t i = 0; i < n; ++i) {
          const float* row = floats.data() + i * rowElems;
          double sum = 0;
          for (int64_t k = 0; k < rowElems; ++k) {
            if (!std::isfinite(row[k])) {
              throw ShardRejected("finite", path + ":" + r.features + ": row " + std::to_string(begin + i) + ", element " +
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

}  // namespace perennial::sched
