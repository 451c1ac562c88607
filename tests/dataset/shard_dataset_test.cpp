#include "dataset/shard_dataset.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "trainer/data/batch_loader.h"

namespace perennial::data {
namespace {

namespace stdfs = std::filesystem;

// A dataset of 4x3 "images" where every byte of row g equals g % 251 and label g % 5.
stdfs::path makeDataset(const std::string& name, const std::vector<int64_t>& shardRows) {
  auto d = stdfs::temp_directory_path() / ("perennial-shard-test-" + name + "-" + std::to_string(::getpid()));
  stdfs::remove_all(d);
  stdfs::create_directories(d);
  DatasetSpec spec;
  spec.name = "toy";
  spec.featureShape = {4, 3};
  spec.numClasses = 5;
  int64_t g = 0;
  for (size_t s = 0; s < shardRows.size(); ++s) {
    std::vector<uint8_t> f;
    std::vector<int64_t> l;
    for (int64_t r = 0; r < shardRows[s]; ++r, ++g) {
      f.insert(f.end(), 12, static_cast<uint8_t>(g % 251));
      l.push_back(g % 5);
    }
    writeShard((d / ("shard-" + std::to_string(s) + ".h5")).string(), spec, f.data(), l.data(), shardRows[s]);
  }
  return d;
}

TEST(ShardedDataset, ReadsRowsInAnyOrderWithRepeatsAcrossShards) {
  auto d = makeDataset("rows", {5, 1, 7});
  ShardedDataset ds(d.string());
  ASSERT_EQ(ds.size(), 13);
  ASSERT_EQ(ds.numShards(), 3u);
  std::vector<int64_t> idx{12, 0, 5, 5, 3, 11, 6, 4, 1, 2};
  std::vector<uint8_t> f(idx.size() * 12);
  std::vector<int64_t> l(idx.size());
  ds.readRows(idx, f.data(), l.data());
  for (size_t i = 0; i < idx.size(); ++i) {
    EXPECT_EQ(l[i], idx[i] % 5) << "position " << i;
    for (int k = 0; k < 12; ++k) ASSERT_EQ(f[i * 12 + k], idx[i] % 251) << "position " << i;
  }
  EXPECT_THROW(ds.readRows({13}, f.data(), l.data()), DataError);
}

TEST(ShardedDataset, LoaderDeliversBatchesInOrderScaled) {
  auto d = makeDataset("loader", {10, 10});
  ShardedDataset ds(d.string());
  std::vector<std::vector<int64_t>> batches{{19, 0}, {7, 8, 9}, {10}};
  BatchLoader loader(ds, batches, 1);
  for (const auto& want : batches) {
    auto b = loader.next();
    ASSERT_TRUE(b.has_value());
    ASSERT_EQ(b->rows, static_cast<int64_t>(want.size()));
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(b->labels[i], want[i] % 5);
      EXPECT_FLOAT_EQ(b->features[i * 12], static_cast<float>(want[i] % 251) / 255.0f);
    }
  }
  EXPECT_FALSE(loader.next().has_value());
}

TEST(ShardedDataset, LoaderSurfacesReadErrorsAtTheFailingBatch) {
  auto d = makeDataset("loadererr", {4});
  ShardedDataset ds(d.string());
  BatchLoader loader(ds, {{0, 1}, {99}}, 2);
  EXPECT_TRUE(loader.next().has_value());
  EXPECT_THROW(loader.next(), DataError);
}

// NOTE [Row cache]: rows served from memory are those HDF5 reads, in any order, with repeats; the
// cache is refused above its size limit; out-of-range indices still fail.
TEST(ShardedDataset, CachedRowsAreTheStoredRows) {
  auto d = makeDataset("cache", {5, 1, 7});
  ShardedDataset disk(d.string()), cached(d.string());
  EXPECT_FALSE(cached.cacheInMemory(13 * (12 + 8) - 1)) << "above the limit";
  EXPECT_FALSE(cached.cached());
  ASSERT_TRUE(cached.cacheInMemory(13 * (12 + 8)));
  EXPECT_TRUE(cached.cached());
  std::vector<int64_t> idx{12, 0, 5, 5, 3, 11, 6, 4, 1, 2};
  std::vector<uint8_t> f1(idx.size() * 12), f2(f1.size());
  std::vector<int64_t> l1(idx.size()), l2(idx.size());
  disk.readRows(idx, f1.data(), l1.data());
  cached.readRows(idx, f2.data(), l2.data());
  EXPECT_EQ(f1, f2);
  EXPECT_EQ(l1, l2);
  EXPECT_THROW(cached.readRows({13}, f2.data(), l2.data()), DataError);
  EXPECT_THROW(cached.readRows({-1}, f2.data(), l2.data()), DataError);
}

// With depth 0 there is no loader thread: next() makes the batch, the same one as with a thread.
TEST(ShardedDataset, LoaderWithoutThreadMakesTheSameBatches) {
  auto d = makeDataset("inline", {10, 10});
  ShardedDataset ds(d.string());
  std::vector<std::vector<int64_t>> batches{{19, 0}, {7, 8, 9}, {10}};
  BatchLoader threaded(ds, batches, 2), inline_(ds, batches, 0);
  for (size_t b = 0; b < batches.size(); ++b) {
    auto x = threaded.next(), y = inline_.next();
    ASSERT_TRUE(x && y);
    EXPECT_EQ(x->features, y->features);
    EXPECT_EQ(x->labels, y->labels);
  }
  EXPECT_FALSE(inline_.next().has_value());
  EXPECT_EQ(inline_.threadCpuSeconds(), 0.0);
  BatchLoader failing(ds, {{99}}, 0);
  EXPECT_THROW(failing.next(), DataError);
}

TEST(ShardedDataset, RefusesEmptyDirectoryMismatchedSpecAndGarbage) {
  auto empty = stdfs::temp_directory_path() / ("perennial-shard-empty-" + std::to_string(::getpid()));
  stdfs::create_directories(empty);
  EXPECT_THROW(ShardedDataset(empty.string()), DataError);
  EXPECT_THROW(ShardedDataset("/nonexistent/dir"), DataError);

  auto d = makeDataset("mismatch", {3});
  DatasetSpec other;
  other.name = "toy";
  other.featureShape = {4, 3};
  other.numClasses = 7;
  std::vector<uint8_t> f(12, 0);
  int64_t l = 0;
  writeShard((d / "shard-9.h5").string(), other, f.data(), &l, 1);
  try {
    ShardedDataset ds(d.string());
    FAIL() << "mixed specs accepted";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("shard-9.h5"), std::string::npos) << e.what();
  }

  auto g = makeDataset("garbage", {3});
  std::ofstream(g / "shard-5.h5") << "this is not HDF5";
  try {
    ShardedDataset ds(g.string());
    FAIL() << "garbage accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shard-5.h5"), std::string::npos) << e.what();
  }
}

TEST(ShardedDataset, WriteShardRefusesLabelsOutOfRange) {
  auto d = makeDataset("labels", {1});
  DatasetSpec spec;
  spec.name = "toy";
  spec.featureShape = {4, 3};
  spec.numClasses = 5;
  std::vector<uint8_t> f(12, 0);
  int64_t l = 5;
  EXPECT_THROW(writeShard((d / "bad.h5").string(), spec, f.data(), &l, 1), DataError);
  EXPECT_FALSE(stdfs::exists(d / "bad.h5"));
}

}  // namespace
}  // namespace perennial::data
