// common/half.h against LibTorch's c10::BFloat16 and c10::Half (the conversions the gradient
// reducer uses on the tensors, beside the ones the MPI sum uses on the wire).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstring>

#include "common/half.h"

namespace perennial {
namespace {

TEST(Half, EverySixteenBitValueConvertsAsLibTorch) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const auto h = static_cast<uint16_t>(bits);
    const float b = bf16ToFloat(h), f = halfToFloat(h);
    const float tb = static_cast<float>(c10::BFloat16(h, c10::BFloat16::from_bits()));
    const float tf = static_cast<float>(c10::Half(h, c10::Half::from_bits()));
    ASSERT_TRUE(std::memcmp(&b, &tb, 4) == 0 || (std::isnan(b) && std::isnan(tb))) << std::hex << bits;
    ASSERT_TRUE(std::memcmp(&f, &tf, 4) == 0 || (std::isnan(f) && std::isnan(tf))) << std::hex << bits;
    if (!std::isnan(b)) {
      ASSERT_EQ(floatToBf16(b), h) << std::hex << bits;
    }
    if (!std::isnan(f)) {
      ASSERT_EQ(floatToHalf(f), h) << std::hex << bits;
    }
  }
}

TEST(Half, FloatsRoundToNearestEvenAsLibTorch) {
  uint32_t x = 12345;
  for (int i = 0; i < 2000000; ++i) {
    x = x * 1664525u + 1013904223u;
    // Every exponent, with extra weight near the half subnormals and its overflow edge.
    uint32_t bits = x;
    if (i % 3 == 0) bits = (x & 0x807fffffu) | ((100u + (x >> 24) % 50u) << 23);
    float v;
    std::memcpy(&v, &bits, 4);
    if (std::isnan(v)) continue;
    ASSERT_EQ(floatToBf16(v), c10::BFloat16(v).x) << v;
    ASSERT_EQ(floatToHalf(v), c10::Half(v).x) << v;
  }
  EXPECT_EQ(halfToFloat(floatToHalf(65519.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(halfToFloat(floatToHalf(65520.0f))));
  EXPECT_TRUE(std::isnan(bf16ToFloat(floatToBf16(std::nanf("")))));
}

}  // namespace
}  // namespace perennial
