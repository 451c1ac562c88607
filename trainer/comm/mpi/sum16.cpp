#include "trainer/comm/mpi/sum16.h"

#include "common/half.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define PERENNIAL_SUM16_X86 1
#endif

namespace perennial {

void sumBf16Scalar(const uint16_t* in, uint16_t* inout, size_t n) {
  for (size_t i = 0; i < n; ++i) inout[i] = floatToBf16(bf16ToFloat(in[i]) + bf16ToFloat(inout[i]));
}

void sumHalfScalar(const uint16_t* in, uint16_t* inout, size_t n) {
  for (size_t i = 0; i < n; ++i) inout[i] = floatToHalf(halfToFloat(in[i]) + halfToFloat(inout[i]));
}

#ifdef PERENNIAL_SUM16_X86
namespace {

// floatToBf16 of eight floats (round to nearest even; NaN kept quiet), as common/half.h.
__attribute__((target("avx2"))) __m128i toBf16(__m256 f) {
  const __m256i u = _mm256_castps_si256(f);
  const __m256i absU = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
  const __m256i isNan = _mm256_cmpgt_epi32(absU, _mm256_set1_epi32(0x7f800000));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
  const __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
  const __m256i r = _mm256_blendv_epi8(rounded, quiet, isNan);
  // Pack the low 16 bits of each 32-bit lane (values fit in 16 bits, so unsigned saturation is exact).
  const __m128i lo = _mm256_castsi256_si128(r), hi = _mm256_extracti128_si256(r, 1);
  return _mm_packus_epi32(lo, hi);
}

__attribute__((target("avx2"))) __m256 fromBf16(__m128i h) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

__attribute__((target("avx2"))) void sumBf16Avx2(const uint16_t* in, uint16_t* inout, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i));
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(inout + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(inout + i), toBf16(_mm256_add_ps(fromBf16(a), fromBf16(b))));
  }
  sumBf16Scalar(in + i, inout + i, n - i);
}

__attribute__((target("avx2,f16c"))) void sumHalfF16c(const uint16_t* in, uint16_t* inout, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
    const __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(inout + i)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(inout + i), _mm256_cvtps_ph(_mm256_add_ps(a, b), _MM_FROUND_TO_NEAREST_INT));
  }
  sumHalfScalar(in + i, inout + i, n - i);
}

bool hasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}

bool hasF16c() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  return has;
}

}  // namespace
#endif

void sumBf16(const uint16_t* in, uint16_t* inout, size_t n) {
#ifdef PERENNIAL_SUM16_X86
  if (hasAvx2()) return sumBf16Avx2(in, inout, n);
#endif
  sumBf16Scalar(in, inout, n);
}

void sumHalf(const uint16_t* in, uint16_t* inout, size_t n) {
#ifdef PERENNIAL_SUM16_X86
  if (hasF16c()) return sumHalfF16c(in, inout, n);
#endif
  sumHalfScalar(in, inout, n);
}

}  // namespace perennial
