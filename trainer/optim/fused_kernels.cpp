// See NOTE [Fused optimizer numerics] in fused_kernels.h. Compiled with -ffp-contract=off and
// -fno-math-errno (trainer/CMakeLists.txt): the first keeps every a*b+c that is not written as
// fma() rounded twice, the second lets sqrt vectorise (it changes no result).
#include "trainer/optim/fused_kernels.h"

#include <cmath>
#include <type_traits>

namespace perennial::optim {
namespace {

#if defined(__GNUC__)
#define PERENNIAL_INLINE inline __attribute__((always_inline))
#else
#define PERENNIAL_INLINE inline
#endif

// a*b + c, rounded once (kFma) or twice.
template <bool kFma, typename T>
PERENNIAL_INLINE T madd(T a, T b, T c) {
  if constexpr (!kFma) {
    return a * b + c;
  } else if constexpr (std::is_same_v<T, float>) {
    return __builtin_fmaf(a, b, c);
  } else {
    return __builtin_fma(a, b, c);
  }
}

enum Momentum { kNone, kFirst, kUpdate };

// SGD as torch::optim::SGD::step (1.13) computes it per element:
//   d = g.add(p, wd); buf = clone(d) | buf.mul_(momentum).add_(d, 1 - dampening);
//   d = nesterov ? d.add(buf, momentum) : buf; p.add_(d, -lr)
template <bool kFma, bool kWd, int kMomentum, bool kNesterov, typename T>
PERENNIAL_INLINE void sgdLoop(T* __restrict p, const T* __restrict g, T* __restrict buf, size_t n,
                              const SgdArgs<T>& a) {
  for (size_t i = 0; i < n; ++i) {
    const T pi = p[i];
    T d = g[i];
    if constexpr (kWd) d = madd<kFma>(pi, a.weightDecay, d);
    if constexpr (kMomentum != kNone) {
      T b;
      if constexpr (kMomentum == kFirst) {
        b = d;
      } else {
        b = madd<kFma>(d, a.oneMinusDampening, buf[i] * a.momentum);
      }
      buf[i] = b;
      if constexpr (kNesterov) {
        d = madd<kFma>(b, a.momentum, d);
      } else {
        d = b;
      }
    }
    p[i] = madd<kFma>(d, a.negLr, pi);
  }
}

// Adam / AdamW as torch::optim::Adam::step and AdamW::step (1.13) compute them per element:
//   (AdamW) p.mul_(1 - lr * wd);  (Adam) g = g.add(p, wd)
//   m.mul_(b1).add_(g, 1 - b1); v.mul_(b2).addcmul_(g, g, 1 - b2)
//   denom = (v.sqrt() / sqrt(bc2)).add_(eps); p.addcdiv_(m, denom, -lr / bc1)
template <bool kFma, bool kWd, bool kDecoupled, typename T>
PERENNIAL_INLINE void adamLoop(T* __restrict p, const T* __restrict g, T* __restrict m, T* __restrict v,
                               size_t n, const AdamArgs<T>& a) {
  for (size_t i = 0; i < n; ++i) {
    T pi = p[i];
    T gi = g[i];
    if constexpr (kDecoupled) {
      pi = pi * a.decay;
    } else if constexpr (kWd) {
      gi = madd<kFma>(pi, a.weightDecay, gi);
    }
    const T mi = madd<kFma>(gi, a.oneMinusBeta1, m[i] * a.beta1);
    const T vi = madd<kFma>(a.oneMinusBeta2 * gi, gi, v[i] * a.beta2);
    m[i] = mi;
    v[i] = vi;
    const T denom = std::sqrt(vi) / a.sqrtBiasCorrection2 + a.eps;
    p[i] = (a.negStepSize * mi) / denom + pi;
  }
}

template <bool kFma, typename T>
PERENNIAL_INLINE void sgdDispatch(T* p, const T* g, T* buf, size_t n, const SgdArgs<T>& a) {
  const bool wd = a.weightDecay != 0;
  const int mom = a.momentum == 0 ? kNone : a.firstStep ? kFirst : kUpdate;
  // clang-format off
  if (wd) {
    if (mom == kNone) sgdLoop<kFma, true, kNone, false>(p, g, buf, n, a);
    else if (mom == kFirst) { if (a.nesterov) sgdLoop<kFma, true, kFirst, true>(p, g, buf, n, a); else sgdLoop<kFma, true, kFirst, false>(p, g, buf, n, a); }
    else { if (a.nesterov) sgdLoop<kFma, true, kUpdate, true>(p, g, buf, n, a); else sgdLoop<kFma, true, kUpdate, false>(p, g, buf, n, a); }
  } else {
    if (mom == kNone) sgdLoop<kFma, false, kNone, false>(p, g, buf, n, a);
    else if (mom == kFirst) { if (a.nesterov) sgdLoop<kFma, false, kFirst, true>(p, g, buf, n, a); else sgdLoop<kFma, false, kFirst, false>(p, g, buf, n, a); }
    else { if (a.nesterov) sgdLoop<kFma, false, kUpdate, true>(p, g, buf, n, a); else sgdLoop<kFma, false, kUpdate, false>(p, g, buf, n, a); }
  }
  // clang-format on
}

template <bool kFma, typename T>
PERENNIAL_INLINE void adamDispatch(T* p, const T* g, T* m, T* v, size_t n, const AdamArgs<T>& a) {
  if (a.decoupled) {
    adamLoop<kFma, false, true>(p, g, m, v, n, a);
  } else if (a.weightDecay != 0) {
    adamLoop<kFma, true, false>(p, g, m, v, n, a);
  } else {
    adamLoop<kFma, false, false>(p, g, m, v, n, a);
  }
}

// The kFused instances are compiled for AVX2 + FMA on x86-64 (the CPUs where LibTorch's kernels
// fuse), so that fma() is one instruction and the loops vectorise; elsewhere for the baseline.
#if defined(__x86_64__) && defined(__GNUC__)
#define PERENNIAL_FMA_TARGET __attribute__((target("avx2,fma")))
#else
#define PERENNIAL_FMA_TARGET
#endif

template <typename T>
PERENNIAL_FMA_TARGET void sgdFused(T* p, const T* g, T* buf, size_t n, const SgdArgs<T>& a) {
  sgdDispatch<true>(p, g, buf, n, a);
}
template <typename T>
void sgdSeparate(T* p, const T* g, T* buf, size_t n, const SgdArgs<T>& a) {
  sgdDispatch<false>(p, g, buf, n, a);
}
template <typename T>
PERENNIAL_FMA_TARGET void adamFused(T* p, const T* g, T* m, T* v, size_t n, const AdamArgs<T>& a) {
  adamDispatch<true>(p, g, m, v, n, a);
}
template <typename T>
void adamSeparate(T* p, const T* g, T* m, T* v, size_t n, const AdamArgs<T>& a) {
  adamDispatch<false>(p, g, m, v, n, a);
}

}  // namespace

bool cpuHasFma() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#elif defined(__aarch64__)
  return true;
#else
  return false;
#endif
}

template <typename T>
void sgdUpdate(T* p, const T* g, T* buf, size_t n, const SgdArgs<T>& a, MulAdd mode) {
  if (mode == MulAdd::kFused && cpuHasFma()) {
    sgdFused(p, g, buf, n, a);
  } else if (mode == MulAdd::kFused) {
    // Unreachable on a CPU LibTorch fuses on; correct (slowly) anywhere else.
    sgdDispatch<true>(p, g, buf, n, a);
  } else {
    sgdSeparate(p, g, buf, n, a);
  }
}

template <typename T>
void adamUpdate(T* p, const T* g, T* m, T* v, size_t n, const AdamArgs<T>& a, MulAdd mode) {
  if (mode == MulAdd::kFused && cpuHasFma()) {
    adamFused(p, g, m, v, n, a);
  } else if (mode == MulAdd::kFused) {
    adamDispatch<true>(p, g, m, v, n, a);
  } else {
    adamSeparate(p, g, m, v, n, a);
  }
}

template void sgdUpdate<float>(float*, const float*, float*, size_t, const SgdArgs<float>&, MulAdd);
template void sgdUpdate<double>(double*, const double*, double*, size_t, const SgdArgs<double>&, MulAdd);
template void adamUpdate<float>(float*, const float*, float*, float*, size_t, const AdamArgs<float>&, MulAdd);
template void adamUpdate<double>(double*, const double*, double*, double*, size_t, const AdamArgs<double>&, MulAdd);

}  // namespace perennial::optim
