#include "trainer/comm/bucket_plan.h"

#include <gtest/gtest.h>

#include <set>

namespace perennial {
namespace {

// Every parameter appears exactly once, offsets are dense, and no bucket exceeds the cap unless
// it holds a single tensor.
void expectValid(const std::vector<ParamInfo>& params, const std::vector<Bucket>& plan, size_t cap) {
  std::set<size_t> seen;
  for (const Bucket& b : plan) {
    size_t offset = 0;
    ASSERT_FALSE(b.entries.empty());
    for (const BucketEntry& e : b.entries) {
      EXPECT_TRUE(seen.insert(e.param).second) << "param " << e.param << " in two buckets";
      EXPECT_EQ(e.offset, offset);
      EXPECT_EQ(e.numel, params[e.param].numel);
      EXPECT_EQ(params[e.param].type, b.type);
      offset += e.numel;
    }
    EXPECT_EQ(b.numel, offset);
    size_t nonEmpty = 0;
    for (const BucketEntry& e : b.entries) nonEmpty += e.numel > 0 ? 1 : 0;
    if (nonEmpty > 1) {
      EXPECT_LE(b.bytes(), cap);
    }
  }
  EXPECT_EQ(seen.size(), params.size());
}

TEST(BucketPlan, EmptyParameterListGivesNoBuckets) {
  EXPECT_TRUE(planBuckets({}, 1024).empty());
}

TEST(BucketPlan, SmallTensorsShareOneBucketInReverseOrder) {
  std::vector<ParamInfo> p{{10, DType::kFloat32}, {20, DType::kFloat32}, {30, DType::kFloat32}};
  auto plan = planBuckets(p, 1 << 20);
  ASSERT_EQ(plan.size(), 1u);
  ASSERT_EQ(plan[0].entries.size(), 3u);
  EXPECT_EQ(plan[0].entries[0].param, 2u);  // last registered first, as backward produces them
  EXPECT_EQ(plan[0].entries[2].param, 0u);
  EXPECT_EQ(plan[0].numel, 60u);
  expectValid(p, plan, 1 << 20);
}

TEST(BucketPlan, TensorLargerThanCapGetsItsOwnBucket) {
  // cap 400 bytes = 100 floats
  std::vector<ParamInfo> p{{10, DType::kFloat32}, {1000, DType::kFloat32}, {10, DType::kFloat32}};
  auto plan = planBuckets(p, 400);
  ASSERT_EQ(plan.size(), 3u);
  EXPECT_EQ(plan[1].entries.size(), 1u);
  EXPECT_EQ(plan[1].entries[0].param, 1u);
  EXPECT_EQ(plan[1].bytes(), 4000u);
  expectValid(p, plan, 400);
}

TEST(BucketPlan, ExactFitStaysInOneBucket) {
  std::vector<ParamInfo> p{{50, DType::kFloat32}, {50, DType::kFloat32}, {1, DType::kFloat32}};
  auto plan = planBuckets(p, 400);
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].numel, 51u);  // params 2 and 1
  EXPECT_EQ(plan[1].numel, 50u);
  expectValid(p, plan, 400);
}

TEST(BucketPlan, ManySmallTensorsFillFewBuckets) {
  std::vector<ParamInfo> p(1000, ParamInfo{256, DType::kFloat32});  // 1 KiB each
  auto plan = planBuckets(p, 64 * 1024);
  EXPECT_EQ(plan.size(), 16u);  // 1000 KiB / 64 KiB, rounded up
  expectValid(p, plan, 64 * 1024);
}

TEST(BucketPlan, BucketsNeverMixTypes) {
  std::vector<ParamInfo> p{{4, DType::kFloat32}, {4, DType::kFloat64}, {4, DType::kFloat32}};
  auto plan = planBuckets(p, 1 << 20);
  ASSERT_EQ(plan.size(), 3u);
  expectValid(p, plan, 1 << 20);
}

TEST(BucketPlan, ZeroSizedTensorsArePlaced) {
  std::vector<ParamInfo> p{{0, DType::kFloat32}, {8, DType::kFloat32}, {0, DType::kFloat32}};
  auto plan = planBuckets(p, 16);
  expectValid(p, plan, 16);
}

TEST(BucketPlan, RandomSizesAreAlwaysValid) {
  uint64_t x = 12345;
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<ParamInfo> p;
    const int n = static_cast<int>(x % 50);
    for (int i = 0; i < n; ++i) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      p.push_back({static_cast<size_t>((x >> 33) % 5000), (x >> 20) % 7 == 0 ? DType::kFloat64 : DType::kFloat32});
    }
    const size_t cap = 1 + (x >> 40) % 20000;
    expectValid(p, planBuckets(p, cap), cap);
  }
}

}  // namespace
}  // namespace perennial
