#include "checkpoint/tensor_file.h"

#include "common/error.h"

namespace perennial::checkpoint {

void writeTensorFile(const std::string& path, const std::vector<TensorView>& tensors,
                     const std::map<std::string, std::string>& attributes,
                     std::vector<Group> extraGroups) {
  Document doc;
  doc.format = kWeightsFormat;
  doc.formatVersion = kWeightsFormatVersion;
  doc.strings = attributes;
  Group g{"state_dict", {}};
  for (const auto& v : tensors) {
    Tensor t{v.name, v.type, v.shape, {}, v.data};
    g.tensors.push_back(std::move(t));
  }
  doc.groups.push_back(std::move(g));
  for (auto& extra : extraGroups) doc.groups.push_back(std::move(extra));
  writeDocument(path, doc);
}

TensorFile readTensorFile(const std::string& path) {
  Document doc = readDocument(path);
  if (doc.format == kWeightsFormat && doc.formatVersion != kWeightsFormatVersion) {
    throw DataError(path + ": format_version " + std::to_string(doc.formatVersion) +
                    " is not supported (this build reads " + std::to_string(kWeightsFormatVersion) + ")");
  }
  const Group* g = doc.group("state_dict");
  if (!g) throw DataError(path + ": no state_dict group (format '" + doc.format + "')");
  TensorFile out;
  out.attributes = doc.strings;
  out.tensors = g->tensors;
  for (Group& other : doc.groups) {
    if (other.path == "normalization") out.otherGroups.push_back(std::move(other));
  }
  return out;
}

const Group* TensorFile::group(const std::string& path) const {
  for (const Group& g : otherGroups) {
    if (g.path == path) return &g;
  }
  return nullptr;
}

}  // namespace perennial::checkpoint
