// Replays the inputs the fuzzers once crashed on (tests/fuzz/regressions/<target>/, see
// tests/fuzz/run.sh) through the same entry points (tests/fuzz/targets.h), in the normal gcc
// build: each must now end in the rejection its parser documents, with no other exception.
// tests/fuzz/known-hdf5/ (crashes inside HDF5 itself) is not replayed here.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <typeinfo>
#include <vector>

#include "tests/fuzz/targets.h"

namespace perennial::fuzz {
namespace {

namespace stdfs = std::filesystem;

stdfs::path regressionsDir() {
  if (const char* env = std::getenv("PERENNIAL_FUZZ_REGRESSIONS"); env && *env) return env;
  return stdfs::path(__FILE__).parent_path().parent_path() / "fuzz" / "regressions";
}

std::vector<uint8_t> readAll(const stdfs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Runs every input of TARGET's directory through FN; returns how many there were.
int replay(const std::string& target, void (*fn)(const uint8_t*, size_t)) {
  const stdfs::path dir = regressionsDir() / target;
  std::error_code ec;
  if (!stdfs::is_directory(dir, ec)) return 0;
  std::vector<stdfs::path> files;
  for (const auto& e : stdfs::directory_iterator(dir)) {
    if (e.is_regular_file() && e.path().extension() != ".md") files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    SCOPED_TRACE(f.string());
    const auto bytes = readAll(f);
    try {
      fn(bytes.data(), bytes.size());
    } catch (const std::exception& e) {
      ADD_FAILURE() << f << ": unexpected " << typeid(e).name() << ": " << e.what();
    }
  }
  return static_cast<int>(files.size());
}

TEST(FuzzRegressions, DirectoryIsThere) {
  ASSERT_TRUE(stdfs::is_directory(regressionsDir())) << regressionsDir() << " (set PERENNIAL_FUZZ_REGRESSIONS)";
}

TEST(FuzzRegressions, CheckpointReader) { RecordProperty("inputs", replay("checkpoint_reader", &checkpointReader)); }
TEST(FuzzRegressions, ShardValidator) { RecordProperty("inputs", replay("shard_validator", &shardValidator)); }
TEST(FuzzRegressions, TrainConfig) { RecordProperty("inputs", replay("train_config", &trainConfig)); }
TEST(FuzzRegressions, SchedConfig) { RecordProperty("inputs", replay("sched_config", &schedConfig)); }

}  // namespace
}  // namespace perennial::fuzz
