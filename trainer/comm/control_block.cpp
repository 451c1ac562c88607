#include "trainer/comm/control_block.h"

#include <cmath>
#include <limits>
#include <type_traits>

#include "common/half.h"

namespace perennial {
namespace {

// V rounded to a value the wire type represents exactly.
double onWire(double v, WireType wire) {
  switch (wire) {
    case WireType::kFloat64: return v;
    case WireType::kFloat32: return static_cast<float>(v);
    case WireType::kBFloat16: return bf16ToFloat(floatToBf16(static_cast<float>(v)));
    case WireType::kFloat16: return halfToFloat(floatToHalf(static_cast<float>(v)));
  }
  return v;
}

// Exponents beyond this are not sent (bfloat16 holds integers exactly only up to 256); a window
// loss of 2^200 is an overflow for any purpose.
constexpr int kMaxExponent = 200;

}  // namespace

template <typename T>
void encodeControl(T* slots, int world, int rank, bool stop, double loss, WireType wire) {
  // The slots themselves are a wire as narrow as T.
  if (std::is_same_v<T, float> && wire == WireType::kFloat64) wire = WireType::kFloat32;
  for (size_t i = 0; i < controlSlots(world); ++i) slots[i] = 0;
  slots[0] = stop ? 1 : 0;
  T* mine = slots + 1 + 4 * static_cast<size_t>(rank);
  if (loss == 0) return;
  if (!std::isfinite(loss)) {
    mine[1] = static_cast<T>(loss);
    return;
  }
  int k = 0;
  double m = std::frexp(loss, &k);  // loss = m * 2^k, 0.5 <= |m| < 1
  if (k > kMaxExponent) {
    mine[1] = static_cast<T>(std::copysign(std::numeric_limits<double>::infinity(), loss));
    return;
  }
  if (k < -kMaxExponent) return;  // indistinguishable from 0 for a loss
  mine[0] = static_cast<T>(k);
  for (int i = 1; i <= 3; ++i) {
    const double t = onWire(m, wire);
    mine[i] = static_cast<T>(t);
    m -= t;  // exact: t is m rounded to fewer bits
  }
}

template <typename T>
ControlValues decodeControl(const T* slots, int world) {
  ControlValues out;
  out.stop = slots[0] > 0;
  for (int r = 0; r < world; ++r) {
    const T* v = slots + 1 + 4 * static_cast<size_t>(r);
    const double m = static_cast<double>(v[1]) + static_cast<double>(v[2]) + static_cast<double>(v[3]);
    out.lossSum += std::isfinite(m) ? std::ldexp(m, static_cast<int>(v[0])) : m;
  }
  return out;
}

template void encodeControl<float>(float*, int, int, bool, double, WireType);
template void encodeControl<double>(double*, int, int, bool, double, WireType);
template ControlValues decodeControl<float>(const float*, int);
template ControlValues decodeControl<double>(const double*, int);

}  // namespace perennial
