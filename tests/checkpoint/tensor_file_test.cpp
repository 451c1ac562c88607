#include "checkpoint/tensor_file.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <cstring>
#include <fstream>

#include "common/error.h"
#include "common/sha256.h"

namespace perennial::checkpoint {
namespace {

namespace stdfs = std::filesystem;

stdfs::path dir() {
  auto d = stdfs::temp_directory_path() / ("perennial-tensorfile-" + std::to_string(::getpid()));
  stdfs::create_directories(d);
  return d;
}

std::vector<float> weights(size_t n, float seed) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = seed + 0.5f * static_cast<float>(i);
  return v;
}

void write(const std::string& path) {
  auto w = weights(6, 1.0f), b = weights(3, -2.0f);
  writeTensorFile(path, {{"1.weight", DType::kFloat32, {3, 2}, w.data()}, {"1.bias", DType::kFloat32, {3}, b.data()}},
                  {{"arch", "mlp"}});
}

std::string slurp(const stdfs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

TEST(TensorFile, RoundTripKeepsOrderShapesValuesAndAttributes) {
  auto p = (dir() / "rt.h5").string();
  write(p);
  TensorFile f = readTensorFile(p);
  ASSERT_EQ(f.tensors.size(), 2u);
  EXPECT_EQ(f.tensors[0].name, "1.weight");
  EXPECT_EQ(f.tensors[0].shape, (std::vector<int64_t>{3, 2}));
  EXPECT_EQ(f.tensors[1].name, "1.bias");
  auto w = weights(6, 1.0f);
  EXPECT_EQ(0, std::memcmp(f.tensors[0].bytes.data(), w.data(), 24));
  EXPECT_EQ(f.attributes.at("arch"), "mlp");
}

TEST(TensorFile, SameContentSameBytes) {
  auto a = dir() / "a.h5", b = dir() / "b.h5";
  write(a.string());
  usleep(1100 * 1000);  // a second later: any timestamp in the file would now differ
  write(b.string());
  EXPECT_EQ(toHex(sha256File(a.string())), toHex(sha256File(b.string())));
}

TEST(TensorFile, CorruptionIsDetected) {
  auto p = dir() / "corrupt.h5";
  write(p.string());
  std::string bytes = slurp(p);
  // Flip one byte of the stored weights (found by their known float pattern).
  auto w = weights(6, 1.0f);
  std::string needle(reinterpret_cast<const char*>(w.data()), 24);
  size_t at = bytes.find(needle);
  ASSERT_NE(at, std::string::npos);
  bytes[at + 5] ^= 0x40;
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
  try {
    readTensorFile(p.string());
    FAIL() << "a flipped byte went unnoticed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("1.weight"), std::string::npos) << e.what();
  }
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() / 2);
  EXPECT_THROW(readTensorFile(p.string()), Error);
  std::ofstream(p, std::ios::binary | std::ios::trunc) << "";
  EXPECT_THROW(readTensorFile(p.string()), Error);
}

TEST(TensorFile, FailedWriteLeavesNoFile) {
  auto p = dir() / "no-such-subdir" / "x.h5";
  EXPECT_THROW(write(p.string()), Error);
  EXPECT_FALSE(stdfs::exists(p));
}

}  // namespace
}  // namespace perennial::checkpoint
