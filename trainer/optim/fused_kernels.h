#pragma once
// Single-pass optimizer updates over contiguous arrays (torch-free; used by fused_optimizer.cpp).
//
// NOTE [Fused optimizer numerics]: each kernel reads a parameter's value, gradient and state once
// and writes them once, and computes every element with the operations, operand order and
// roundings of LibTorch 1.13's per-tensor optimizers (torch::optim::SGD, Adam, AdamW), so that
// the result is bitwise the same. LibTorch's CPU kernels differ in one respect between builds
// and CPUs: whether `a.add(b, alpha)` and `addcmul` round a*b+c once (fused multiply-add, its
// AVX2/AVX-512 kernels) or twice (its baseline kernel). MulAdd selects which; the caller picks it
// by probing LibTorch (fused_optimizer.cpp). In LibTorch 1.13:
//   x.add(y, alpha)          = fma(y, alpha, x)             (kFused) or x + alpha*y rounded twice
//   x.addcmul(a, b, value)   = fma(value*a, b, x)           (kFused) or (value*a)*b + x
//   x.addcdiv(a, b, value)   = (value*a)/b + x              (both)
//   x.mul(s), x / s, sqrt(x) : one correctly rounded operation each
// Scalars (momentum, learning rate, ...) are converted to the element type exactly where
// LibTorch converts them; the structs below carry them already converted.
// This file is compiled with -ffp-contract=off, so the compiler never fuses what LibTorch rounds
// twice.
#include <cstddef>

namespace perennial::optim {

enum class MulAdd { kSeparate, kFused };

// Whether this CPU executes fused multiply-adds in hardware (kFused is only used where it does).
bool cpuHasFma();

template <typename T>
struct SgdArgs {
  T negLr = 0;              // -lr
  T momentum = 0;           // 0: plain SGD, no buffer
  T oneMinusDampening = 1;  // 1 - dampening
  T weightDecay = 0;        // L2, added to the gradient
  bool nesterov = false;
  bool firstStep = false;   // the buffer is created from this step's gradient (LibTorch clones it)
};

// P -= lr * update, with BUF the momentum buffer (unused when momentum is 0). N elements.
template <typename T>
void sgdUpdate(T* p, const T* g, T* buf, size_t n, const SgdArgs<T>& a, MulAdd mode);

template <typename T>
struct AdamArgs {
  T beta1 = 0, oneMinusBeta1 = 0, beta2 = 0, oneMinusBeta2 = 0;
  T sqrtBiasCorrection2 = 1;  // sqrt(1 - beta2^step), converted from double
  T eps = 0;
  T negStepSize = 0;          // -(lr / (1 - beta1^step)), converted from double
  T weightDecay = 0;          // Adam: L2 added to the gradient
  T decay = 1;                // AdamW: the parameter is first multiplied by 1 - lr * weight_decay
  bool decoupled = false;     // AdamW
};

// One Adam or AdamW step over N elements: M and V are exp_avg and exp_avg_sq.
template <typename T>
void adamUpdate(T* p, const T* g, T* m, T* v, size_t n, const AdamArgs<T>& a, MulAdd mode);

}  // namespace perennial::optim
