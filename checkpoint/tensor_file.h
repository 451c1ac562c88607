#pragma once
// The weights file (`RUN/model.h5`): a Document (document.h) of format "perennial-weights"
// holding the group `state_dict`, with the parameters and buffers under PyTorch's state_dict
// names, optional further groups (`normalization`: the feature standardisation), and string
// attributes (arch, config, param_sha256, ...).
#include <map>
#include <string>
#include <vector>

#include "checkpoint/document.h"

namespace perennial::checkpoint {

inline constexpr const char* kWeightsFormat = "perennial-weights";
inline constexpr int64_t kWeightsFormatVersion = 1;

struct TensorView {
  std::string name;
  DType type;
  std::vector<int64_t> shape;
  const void* data;  // contiguous, native byte order; must stay valid during the write
};

// Writes PATH atomically (see writeDocument).
void writeTensorFile(const std::string& path, const std::vector<TensorView>& tensors,
                     const std::map<std::string, std::string>& attributes,
                     std::vector<Group> extraGroups = {});

struct TensorFile {
  std::map<std::string, std::string> attributes;
  std::vector<Tensor> tensors;  // in state_dict order
  std::vector<Group> otherGroups;  // the groups that describe the model besides its state_dict
                                   // (normalization), in file order

  const Group* group(const std::string& path) const;
};

// Reads a weights file, or the state_dict of a training checkpoint (both carry the
// `state_dict` group and the `config` and `param_sha256` attributes). Throws DataError/IoError
// naming the file and what is wrong.
TensorFile readTensorFile(const std::string& path);

}  // namespace perennial::checkpoint
