#pragma once
// Validation of an arriving shard against the expected dataset spec (DatasetSpec, the shard format
// of dataset/shard_dataset.h: the spec is read with readSpec, as the trainer reads it). Each rule
// has a short name that quarantine records and reason files carry:
//   type      not a regular file (a symbolic link, a FIFO, a device): never opened or followed
//   size      the file is larger than dataset.max_shard_bytes (checked before it is read)
//   hdf5      not a readable HDF5 file (not HDF5, truncated, unreadable dataset)
//   spec      the shard's spec.* attributes are missing or differ from the dataset spec
//   dataset   a required dataset (features, labels) is missing
//   dtype     a dataset's element type differs from the spec
//   shape     the features are not [N, feature_shape...] or the labels not [N]
//   rows      features and labels have different row counts
//   empty     the shard has no rows
//   max_rows  more rows than dataset.max_shard_rows
//   labels    a class label outside [0, num_classes)
//   finite    a NaN or infinite feature value, or (regression) target value
//   duplicate the same bytes were already ingested (checked by the ingester)
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "dataset/profile.h"
#include "dataset/shard_dataset.h"

namespace perennial::data {

struct DatasetRules {
  DatasetSpec spec = fashionMnistSpec();  // what every shard's spec must be
  double valueMin = 0, valueMax = 256;    // histogram range of feature values
  int64_t maxShardBytes = int64_t{1} << 30;
  int64_t maxShardRows = 1000000;

  static DatasetSpec fashionMnistSpec();
};

// A shard broke RULE; what() names the file and explains.
class ShardRejected : public DataError {
 public:
  ShardRejected(std::string rule, const std::string& message) : DataError(message), rule_(std::move(rule)) {}
  const std::string& rule() const { return rule_; }

 private:
  std::string rule_;
};

struct ShardSummary {
  int64_t rows = 0;
  int64_t bytes = 0;
  Profile profile;
};

// Reads the whole shard (in blocks, so memory stays bounded by the block, not the shard) and
// checks every rule above except `duplicate`. Throws ShardRejected; its message names the file
// as SHOWN_AS when given (the name a user knows for a private copy), else as PATH.
ShardSummary validateShard(const std::string& path, const DatasetRules& rules, const std::string& shownAs = "");

}  // namespace perennial::data
