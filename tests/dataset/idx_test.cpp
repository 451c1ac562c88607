#include "dataset/idx.h"

#include <gtest/gtest.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "dataset/fashion_mnist.h"
#include "dataset/shard_dataset.h"

namespace perennial::data {
namespace {

namespace stdfs = std::filesystem;

stdfs::path tempDir(const std::string& name) {
  auto d = stdfs::temp_directory_path() / ("perennial-idx-test-" + name + "-" + std::to_string(::getpid()));
  stdfs::remove_all(d);
  stdfs::create_directories(d);
  return d;
}

void writeFile(const stdfs::path& p, const std::string& bytes, bool gzip) {
  if (gzip) {
    gzFile f = gzopen(p.c_str(), "wb");
    gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(f);
  } else {
    std::ofstream(p, std::ios::binary) << bytes;
  }
}

std::string errorOf(const stdfs::path& p) {
  try {
    readIdx(p.string());
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

IdxArray images(int64_t n) {
  IdxArray a{{n, 28, 28}, {}};
  a.values.resize(static_cast<size_t>(n * 784));
  for (size_t i = 0; i < a.values.size(); ++i) a.values[i] = static_cast<uint8_t>(i * 7 + 3);
  return a;
}

TEST(Idx, RoundTripPlainAndGzip) {
  auto d = tempDir("roundtrip");
  IdxArray a = images(3);
  writeFile(d / "plain", encodeIdx(a), false);
  writeFile(d / "gz", encodeIdx(a), true);
  for (const char* name : {"plain", "gz"}) {
    IdxArray b = readIdx((d / name).string());
    EXPECT_EQ(b.dims, a.dims);
    EXPECT_EQ(b.values, a.values);
  }
}

TEST(Idx, MalformedFilesAreRefusedWithTheRule) {
  auto d = tempDir("malformed");
  std::string good = encodeIdx(images(2));
  writeFile(d / "empty", "", false);
  writeFile(d / "magic", "\x01\x02" + good.substr(2), false);
  std::string badType = good;
  badType[2] = '\x0d';
  writeFile(d / "type", badType, false);
  writeFile(d / "truncated", good.substr(0, good.size() - 10), false);
  writeFile(d / "trailing", good + "xx", false);
  std::string zeroDim = good;
  zeroDim[7] = 0;  // first dimension's low byte: 2 -> 0
  writeFile(d / "zerodim", zeroDim, false);
  EXPECT_NE(errorOf(d / "empty").find("truncated IDX header"), std::string::npos);
  EXPECT_NE(errorOf(d / "magic").find("not an IDX file"), std::string::npos);
  EXPECT_NE(errorOf(d / "type").find("unsupported IDX element type"), std::string::npos);
  EXPECT_NE(errorOf(d / "truncated").find("truncated IDX data"), std::string::npos);
  EXPECT_NE(errorOf(d / "trailing").find("bytes after"), std::string::npos);
  EXPECT_NE(errorOf(d / "zerodim").find("is zero"), std::string::npos);
  EXPECT_NE(errorOf(d / "missing").find("cannot open"), std::string::npos);
  EXPECT_NE(errorOf(d / "truncated").find((d / "truncated").string()), std::string::npos) << "names the file";
}

void writeSplit(const stdfs::path& dir, const std::string& prefix, int64_t n, int labelOffset = 0) {
  writeFile(dir / (prefix + "-images-idx3-ubyte.gz"), encodeIdx(images(n)), true);
  IdxArray labels{{n}, {}};
  for (int64_t i = 0; i < n; ++i) labels.values.push_back(static_cast<uint8_t>((i + labelOffset) % 10));
  writeFile(dir / (prefix + "-labels-idx1-ubyte.gz"), encodeIdx(labels), true);
}

TEST(Idx, ImportRoundTripThroughShards) {
  auto src = tempDir("import-src"), out = tempDir("import-out");
  writeSplit(src, "train", 25);
  writeSplit(src, "t10k", 7);
  ImportOptions o;
  o.sourceDir = src.string();
  o.outDir = (out / "fm").string();
  o.shardSize = 10;
  ImportSummary s = importFashionMnist(o);
  EXPECT_EQ(s.trainRows, 25);
  EXPECT_EQ(s.trainShards, 3u);
  EXPECT_EQ(s.testShards, 1u);
  ShardedDataset train(o.outDir + "/train");
  EXPECT_EQ(train.size(), 25);
  EXPECT_EQ(train.spec().featureShape, (std::vector<int64_t>{28, 28}));
  EXPECT_EQ(train.spec().numClasses, 10);
  IdxArray want = images(25);
  std::vector<uint8_t> f(25 * 784);
  std::vector<int64_t> l(25);
  train.readRange(0, 25, f.data(), l.data());
  EXPECT_EQ(f, want.values);
  for (int64_t i = 0; i < 25; ++i) EXPECT_EQ(l[i], i % 10);
  // Importing into the same place again is refused instead of mixing old and new shards.
  EXPECT_THROW(importFashionMnist(o), ConfigError);
}

TEST(Idx, ImportIsDeterministic) {
  auto src = tempDir("det-src"), out = tempDir("det-out");
  writeSplit(src, "train", 12);
  writeSplit(src, "t10k", 3);
  for (const char* name : {"a", "b"}) {
    ImportOptions o;
    o.sourceDir = src.string();
    o.outDir = (out / name).string();
    o.shardSize = 5;
    importFashionMnist(o);
  }
  for (const char* shard : {"shard-00000.h5", "shard-00002.h5"}) {
    std::ifstream a(out / "a" / "train" / shard, std::ios::binary), b(out / "b" / "train" / shard, std::ios::binary);
    std::string sa((std::istreambuf_iterator<char>(a)), {}), sb((std::istreambuf_iterator<char>(b)), {});
    EXPECT_FALSE(sa.empty());
    EXPECT_EQ(sa, sb) << shard << " differs between two identical imports";
  }
}

TEST(Idx, ImportRefusesMismatchedCountsAndBadLabels) {
  auto src = tempDir("bad-src"), out = tempDir("bad-out");
  writeSplit(src, "train", 5);
  IdxArray labels{{4}, {0, 1, 2, 3}};
  writeFile(src / "train-labels-idx1-ubyte.gz", encodeIdx(labels), true);
  writeSplit(src, "t10k", 3);
  ImportOptions o;
  o.sourceDir = src.string();
  o.outDir = (out / "x").string();
  try {
    importFashionMnist(o);
    FAIL() << "mismatched counts accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("has 4 labels but"), std::string::npos) << e.what();
  }
  IdxArray badLabels{{5}, {0, 1, 2, 3, 11}};
  writeFile(src / "train-labels-idx1-ubyte.gz", encodeIdx(badLabels), true);
  o.outDir = (out / "y").string();
  try {
    importFashionMnist(o);
    FAIL() << "label 11 accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("label 11 at index 4"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(stdfs::exists(out / "y" / "train")) << "a failed import leaves no partial dataset";
}

}  // namespace
}  // namespace perennial::data
