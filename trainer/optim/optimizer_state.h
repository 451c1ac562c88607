#pragma once
// The key under which a torch::optim::Optimizer keeps a parameter's state: the parameter's
// TensorImpl address, as a string in LibTorch 1.x and as the pointer itself from 2.0.
#include <torch/optim/optimizer.h>

#include <string>
#include <type_traits>

namespace perennial {

using OptimizerStates = std::decay_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
using OptimizerStateKey = std::remove_const_t<typename OptimizerStates::value_type::first_type>;

template <typename Key>
Key optimizerStateKeyOf(void* impl) {
  if constexpr (std::is_same_v<Key, std::string>) {
    return c10::str(impl);
  } else {
    return impl;
  }
}

inline OptimizerStateKey optimizerStateKey(const torch::Tensor& param) {
  return optimizerStateKeyOf<OptimizerStateKey>(param.unsafeGetTensorImpl());
}

}  // namespace perennial
