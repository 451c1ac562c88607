// NOTE [Control block] (trainer/comm/control_block.h) without communication: what each rank
// writes, and what the sum over ranks decodes to, for every wire type.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "common/half.h"
#include "trainer/comm/control_block.h"

namespace perennial {
namespace {

// The element-wise sum over ranks that an all-reduce computes, each rank having encoded its own
// values (sums in the wire type: exact here, every slot has at most one non-zero term).
template <typename T>
ControlValues roundTrip(int world, const std::vector<double>& losses, const std::vector<bool>& stops, WireType wire) {
  std::vector<T> sum(controlSlots(world), 0), mine(controlSlots(world));
  for (int r = 0; r < world; ++r) {
    encodeControl(mine.data(), world, r, stops[r], losses[r], wire);
    for (size_t i = 0; i < sum.size(); ++i) {
      if (r != 0 && i > 0) {
        EXPECT_TRUE(mine[i] == 0 || sum[i] == 0) << "slot " << i << " written by two ranks";
      }
      sum[i] += mine[i];
    }
  }
  return decodeControl(sum.data(), world);
}

bool representable(double v, WireType wire) {
  const auto f = static_cast<float>(v);
  if (wire == WireType::kFloat64) return true;
  if (static_cast<double>(f) != v) return false;
  if (wire == WireType::kBFloat16) return bf16ToFloat(floatToBf16(f)) == f;
  if (wire == WireType::kFloat16) return halfToFloat(floatToHalf(f)) == f;
  return true;
}

TEST(ControlBlock, LossesArriveToTheWirePrecisionAndTheFlagSurvives) {
  const std::vector<double> values = {0.0, 2.302585092994046, 1e-30, 123456.789, 0.1, 7e20, 3.0};
  for (const WireType wire : {WireType::kFloat32, WireType::kFloat64, WireType::kBFloat16, WireType::kFloat16}) {
    for (int world : {1, 2, 3, 7}) {
      std::vector<double> losses(static_cast<size_t>(world));
      std::vector<bool> stops(static_cast<size_t>(world), false);
      double want = 0;
      for (int r = 0; r < world; ++r) {
        losses[r] = values[static_cast<size_t>(r) % values.size()] * (r + 1);
        want += losses[r];
      }
      const ControlValues none = roundTrip<float>(world, losses, stops, wire);
      EXPECT_FALSE(none.stop);
      // float32 and float64 wires carry a double exactly; 16-bit ones about 24 bits of it.
      const double tol = wire == WireType::kBFloat16 || wire == WireType::kFloat16 ? std::ldexp(std::abs(want), -21) : 0.0;
      if (tol == 0) {
        EXPECT_EQ(none.lossSum, want) << "world " << world;
      } else {
        EXPECT_NEAR(none.lossSum, want, tol) << "world " << world;
      }
      stops[static_cast<size_t>(world - 1)] = true;
      EXPECT_TRUE(roundTrip<double>(world, losses, stops, wire).stop);
    }
  }
}

TEST(ControlBlock, EveryValueWrittenIsExactInTheWireType) {
  for (const WireType wire : {WireType::kBFloat16, WireType::kFloat16, WireType::kFloat32}) {
    std::vector<float> slots(controlSlots(2));
    for (double loss : {2.302585092994046, 1e-7, 65519.0, 1e30, -4.5}) {
      encodeControl(slots.data(), 2, 1, true, loss, wire);
      for (float v : slots) EXPECT_TRUE(representable(v, wire)) << v << " for loss " << loss;
    }
  }
}

TEST(ControlBlock, NonFiniteLossesStayNonFinite) {
  const double inf = std::numeric_limits<double>::infinity(), nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_TRUE(std::isnan(roundTrip<float>(2, {1.0, nan}, {false, false}, WireType::kBFloat16).lossSum));
  EXPECT_EQ(roundTrip<float>(2, {1.0, inf}, {false, false}, WireType::kFloat16).lossSum, inf);
  EXPECT_EQ(roundTrip<float>(2, {std::ldexp(1.0, 300), 0.0}, {false, false}, WireType::kFloat32).lossSum, inf);
}

}  // namespace
}  // namespace perennial
