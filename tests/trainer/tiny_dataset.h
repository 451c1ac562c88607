#pragma once
// A tiny classification dataset for trainer tests: 4x4 uint8 "images" in 3 classes whose label
// is readable from the pixels, written as one shard in a fresh temporary directory.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "dataset/shard_dataset.h"

namespace perennial {

inline std::string tinyDataset(const std::string& name, int64_t rows) {
  auto d = std::filesystem::temp_directory_path() / ("perennial-trainer-test-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  data::DatasetSpec spec;
  spec.name = "tiny";
  spec.featureShape = {4, 4};
  spec.numClasses = 3;
  std::vector<uint8_t> f(static_cast<size_t>(rows * 16));
  std::vector<int64_t> l(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) {
    l[i] = i % 3;
    for (int k = 0; k < 16; ++k) f[i * 16 + k] = static_cast<uint8_t>(l[i] * 80 + (i * 7 + k) % 40);
  }
  data::writeShard((d / "shard-0.h5").string(), spec, f.data(), l.data(), rows);
  return d.string();
}

}  // namespace perennial
