#pragma once
// Fused optimizer steps over flat, bucket-aligned storage (optim.fused = true, the default).
//
// NOTE [Flat parameters]: the gradient reducer keeps each bucket's gradients in one flat buffer
// (NOTE [Bucket order], bucket_plan.h). FlatBuckets gives the parameters the same layout: each
// parameter becomes a view into its bucket's flat parameter buffer (same offsets as its gradient),
// and the fused optimizers keep their state (momentum, exp_avg, exp_avg_sq) in flat buffers of
// that layout too. A step is then one pass per bucket over parameters, gradients and state
// together (on the CPU: the kernels of fused_kernels.h), instead of LibTorch's several passes and
// dispatches per parameter.
//
// The fused optimizers are torch::optim::SGD, Adam and AdamW with step() replaced: their
// options, parameter groups and per-parameter state (state()) are LibTorch's, and each state
// tensor is a view into the flat state, so checkpoints read and write them under the same names
// as before. State that someone else puts into state() (a checkpoint being restored) is adopted:
// copied into the flat buffers at the next step. Results are bitwise those of LibTorch's
// optimizers (NOTE [Fused optimizer numerics], fused_kernels.h); off the CPU each bucket is
// updated with LibTorch's own tensor operations over the flat buffers, which compute every
// element as the per-parameter ones do.
#include <torch/optim/adam.h>
#include <torch/optim/adamw.h>
#include <torch/optim/sgd.h>

#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include "trainer/comm/bucket_plan.h"
#include "trainer/config/train_config.h"
#include "trainer/optim/fused_kernels.h"
#include "trainer/optim/optimizer_state.h"

namespace perennial {

// Parameters re-homed into flat per-bucket buffers (NOTE [Flat parameters]).
class FlatBuckets {
 public:
  // PARAMS: the model's parameters (contiguous; values are kept); PLAN: the reducer's buckets over
  // them; GRADS: the reducer's flat gradient buffer of each bucket (at least bucket.numel
  // elements; each parameter's .grad() is the view at its entry's offset).
  FlatBuckets(std::vector<torch::Tensor> params, std::vector<Bucket> plan, std::vector<torch::Tensor> grads);

  size_t size() const { return plan_.size(); }
  const Bucket& bucket(size_t b) const { return plan_[b]; }
  const torch::Tensor& params(size_t b) const { return params_[b]; }  // flat, bucket.numel elements
  const torch::Tensor& grads(size_t b) const { return grads_[b]; }    // flat, bucket.numel elements
  const torch::Tensor& param(size_t i) const { return tensors_[i]; }  // the model's parameter i
  size_t numParams() const { return tensors_.size(); }
  // Zero-filled flat buffers of the parameters' layout (one per bucket), for optimizer state.
  std::vector<torch::Tensor> newState() const;
  // The view of entry E inside FLAT (a buffer of bucket E belongs to), shaped as its parameter.
  torch::Tensor view(const torch::Tensor& flat, const BucketEntry& e) const;

 private:
  std::vector<torch::Tensor> tensors_;
  std::vector<Bucket> plan_;
  std::vector<torch::Tensor> params_, grads_;
};

// How LibTorch's CPU kernels round a*b+c in this process (probed once; see fused_kernels.h).
// When the probe matches neither variant the fused steps are deterministic but not bitwise
// LibTorch's; BITWISE (if given) says which.
optim::MulAdd libTorchMulAdd(bool* bitwise = nullptr);

// The state objects an optimizer put into state(), so that its step can confirm with pointer
// comparisons alone that nobody has replaced them (restoring a checkpoint does).
class InstalledStates {
 public:
  template <class S>
  void reset(const std::vector<S*>& mine) {
    set_.clear();
    for (auto* s : mine) {
      if (s) set_.insert(s);
    }
  }
  bool holdsAll(const OptimizerStates& states) const {
    if (states.size() != set_.size()) return false;
    for (const auto& item : states) {
      if (!set_.count(item.second.get())) return false;
    }
    return true;
  }

 private:
  std::unordered_set<const void*> set_;
};

class FusedSgd final : public torch::optim::SGD {
 public:
  FusedSgd(torch::optim::SGDOptions options, std::shared_ptr<FlatBuckets> flat);
  torch::Tensor step(LossClosure closure = nullptr) override;

 private:
  void adoptState();
  std::shared_ptr<FlatBuckets> flat_;
  std::vector<torch::Tensor> momentum_;           // per bucket; empty without momentum
  std::vector<torch::optim::SGDParamState*> mine_;  // per parameter; null before its first step
  InstalledStates installed_;
  optim::MulAdd mode_;
};

// Adam (DECOUPLED false, options as torch::optim::Adam) or AdamW (true), on LibTorch's
// optimizer class of the same name so that state() holds the state type it expects.
template <class Base, class State, class Options>
class FusedAdamBase final : public Base {
 public:
  using LossClosure = typename Base::LossClosure;
  FusedAdamBase(Options options, std::shared_ptr<FlatBuckets> flat);
  torch::Tensor step(LossClosure closure = nullptr) override;

 private:
  void adoptState();
  std::shared_ptr<FlatBuckets> flat_;
  std::vector<torch::Tensor> expAvg_, expAvgSq_;  // per bucket
  std::vector<State*> mine_;                      // per parameter; null before its first step
  InstalledStates installed_;
  optim::MulAdd mode_;
};
using FusedAdam = FusedAdamBase<torch::optim::Adam, torch::optim::AdamParamState, torch::optim::AdamOptions>;
using FusedAdamW = FusedAdamBase<torch::optim::AdamW, torch::optim::AdamWParamState, torch::optim::AdamWOptions>;

// The optimizer optim.* configures over PARAMS: fused over FLAT when optim.fused is on and FLAT
// is given (it must hold PARAMS), else LibTorch's own.
std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const TrainConfig& c, const std::vector<torch::Tensor>& params,
                                                       std::shared_ptr<FlatBuckets> flat);

}  // namespace perennial
