#pragma once
// Element-wise sums of 16-bit floating-point arrays (torch-free): the MPI user operations behind
// comm.compression (NOTE [Gradient compression] in trainer/comm/gradient_reducer.cpp).
//
// INOUT[i] = round(float(IN[i]) + float(INOUT[i])), the sum computed in float32 and rounded to
// nearest even, for bfloat16 or IEEE half. On x86-64 CPUs with AVX2 (and F16C for half) eight
// elements at a time; elsewhere with common/half.h one by one. Both give the same bits: the
// conversions and the float32 addition are exact IEEE operations either way.
#include <cstddef>
#include <cstdint>

namespace perennial {

void sumBf16(const uint16_t* in, uint16_t* inout, size_t n);
void sumHalf(const uint16_t* in, uint16_t* inout, size_t n);

// The one-by-one versions, for the tests.
void sumBf16Scalar(const uint16_t* in, uint16_t* inout, size_t n);
void sumHalfScalar(const uint16_t* in, uint16_t* inout, size_t n);

}  // namespace perennial
