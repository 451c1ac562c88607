#include "checkpoint/tensor_file.h"

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <sstream>

#include "checkpoint/h5.h"
#include "common/error.h"
#include "common/fs_util.h"

namespace perennial::checkpoint {

void writeTensorFile(const std::string& path, const std::vector<TensorView>& tensors,
                     const std::map<std::string, std::string>& attributes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    {
      h5::Handle file = h5::createFile(tmp);
      h5::writeAttr(file, "format", std::string(kWeightsFormat), tmp);
      h5::writeAttr(file, "format_version", kWeightsFormatVersion, tmp);
      for (const auto& [k, v] : attributes) h5::writeAttr(file, k, v, tmp);  // sorted: stable
      h5::Handle group = h5::createGroup(file, "state_dict", tmp);
      std::string order;
      for (const auto& t : tensors) order += t.name + "\n";
      h5::writeAttr(group, "order", order, tmp);
      h5::DatasetOptions opts;
      opts.fletcher32 = true;
      for (const auto& t : tensors) {
        h5::writeDataset(group, t.name, t.type, t.shape, t.data, tmp + ":/state_dict", opts);
      }
      h5::check(H5Fflush(file, H5F_SCOPE_GLOBAL), "H5Fflush", tmp);
    }
    // HDF5 has closed the file; make its bytes durable before publishing the name.
    std::FILE* f = std::fopen(tmp.c_str(), "rb+");
    if (!f) throw IoError(tmp + ": reopen for fsync failed");
    int rc = ::fsync(fileno(f));
    std::fclose(f);
    if (rc != 0) throw IoError(tmp + ": fsync failed");
    std::filesystem::rename(tmp, path);
    fs::fsyncDir(std::filesystem::path(path).parent_path().string());
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

TensorFile readTensorFile(const std::string& path) {
  h5::Handle file = h5::openFile(path);
  TensorFile out;
  const std::string format = h5::readStringAttr(file, "format", path);
  if (format != kWeightsFormat) {
    throw DataError(path + ": format is '" + format + "', expected '" + kWeightsFormat + "'");
  }
  const int64_t version = h5::readIntAttr(file, "format_version", path);
  if (version != kWeightsFormatVersion) {
    throw DataError(path + ": format_version " + std::to_string(version) +
                    " is not supported (this build reads " +
                    std::to_string(kWeightsFormatVersion) + ")");
  }
  for (const auto& key : h5::attrNames(file, path)) {
    if (key == "format" || key == "format_version") continue;
    out.attributes[key] = h5::readStringAttr(file, key, path);
  }
  h5::Handle group = h5::openGroup(file, "state_dict", path);
  std::istringstream order(h5::readStringAttr(group, "order", path + ":/state_dict"));
  std::string name;
  while (std::getline(order, name)) {
    if (name.empty()) continue;
    h5::DatasetInfo info = h5::datasetInfo(group, name, path + ":/state_dict");
    TensorData t{name, info.type, info.shape, {}};
    t.bytes.resize(static_cast<size_t>(info.elements()) * dtypeSize(info.type));
    // A Fletcher32 mismatch makes H5Dread fail; the IoError names the dataset.
    h5::readDataset(group, name, info.type, t.bytes.data(), path + ":/state_dict");
    out.tensors.push_back(std::move(t));
  }
  return out;
}

}  // namespace perennial::checkpoint
