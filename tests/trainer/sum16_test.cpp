// The 16-bit sums behind comm.compression (trainer/comm/mpi/sum16.h): the vectorised versions give
// the bits of the one-by-one ones (common/half.h), for every kind of value and any length.
#include "trainer/comm/mpi/sum16.h"

#include <gtest/gtest.h>

#include <vector>

namespace perennial {
namespace {

// Pseudo-random 16-bit patterns (every exponent, NaNs, infinities, subnormals and zeros among
// them), and pairs that round at the edges.
std::vector<uint16_t> patterns(size_t n, uint32_t seed) {
  std::vector<uint16_t> v(n);
  uint32_t x = seed;
  for (auto& e : v) {
    x = x * 1664525u + 1013904223u;
    e = static_cast<uint16_t>(x >> 16);
  }
  return v;
}

// V with every NaN replaced by one canonical NaN. When both addends are NaNs, which payload the
// sum keeps depends on the order of the operands, and a compiler may commute a scalar float
// addition (the sanitizer build at -O1 does): a NaN is a NaN whatever its payload.
std::vector<uint16_t> canonicalNaNs(std::vector<uint16_t> v, uint16_t exponentMask, uint16_t nan) {
  for (auto& e : v) {
    if ((e & exponentMask) == exponentMask && (e & ~exponentMask & 0x7fffu) != 0) e = nan;
  }
  return v;
}

TEST(Sum16, VectorisedSumsAreTheScalarOnes) {
  for (size_t n : {0u, 1u, 7u, 8u, 9u, 63u, 1000u, 65536u}) {
    const std::vector<uint16_t> a = patterns(n, 7 + static_cast<uint32_t>(n)), b0 = patterns(n, 99);
    std::vector<uint16_t> fast = b0, slow = b0;
    sumBf16(a.data(), fast.data(), n);
    sumBf16Scalar(a.data(), slow.data(), n);
    ASSERT_EQ(canonicalNaNs(fast, 0x7f80, 0x7fc0), canonicalNaNs(slow, 0x7f80, 0x7fc0)) << "bfloat16, n = " << n;
    fast = b0;
    slow = b0;
    sumHalf(a.data(), fast.data(), n);
    sumHalfScalar(a.data(), slow.data(), n);
    ASSERT_EQ(canonicalNaNs(fast, 0x7c00, 0x7e00), canonicalNaNs(slow, 0x7c00, 0x7e00)) << "half, n = " << n;
  }
}

TEST(Sum16, SumsInClosedForm) {
  std::vector<uint16_t> one(9, 0x3f80), two(9, 0x3f80);  // bfloat16 1.0
  sumBf16(one.data(), two.data(), 9);
  for (uint16_t v : two) EXPECT_EQ(v, 0x4000);  // 2.0
  std::vector<uint16_t> h1(9, 0x3c00), h2(9, 0x3c00);  // half 1.0
  sumHalf(h1.data(), h2.data(), 9);
  for (uint16_t v : h2) EXPECT_EQ(v, 0x4000);  // 2.0
  std::vector<uint16_t> big(9, 0x7bff), big2(9, 0x7bff);  // 65504 + 65504 overflows half
  sumHalf(big.data(), big2.data(), 9);
  for (uint16_t v : big2) EXPECT_EQ(v, 0x7c00);
}

}  // namespace
}  // namespace perennial
