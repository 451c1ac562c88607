#include "trainer/optim/fused_optimizer.h"

#include <torch/torch.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "common/error.h"
#include "common/log.h"
#include "trainer/host_memory.h"
#include "trainer/optim/optimizer_state.h"

namespace perennial {

using optim::AdamArgs;
using optim::MulAdd;
using optim::SgdArgs;

FlatBuckets::FlatBuckets(std::vector<torch::Tensor> params, std::vector<Bucket> plan, std::vector<torch::Tensor> grads)
    : tensors_(std::move(params)), plan_(std::move(plan)) {
  PERENNIAL_CHECK(grads.size() == plan_.size(), "flat buckets: " << grads.size() << " gradient buffers for " << plan_.size()
                                                                  << " buckets");
  torch::NoGradGuard noGrad;
  for (size_t b = 0; b < plan_.size(); ++b) {
    const Bucket& bucket = plan_[b];
    const torch::Tensor& first = tensors_.at(bucket.entries.front().param);
    const auto numel = static_cast<int64_t>(bucket.numel);
    PERENNIAL_CHECK(grads[b].dim() == 1 && grads[b].numel() >= numel && grads[b].scalar_type() == first.scalar_type() &&
                        grads[b].device() == first.device(),
                    "flat buckets: gradient buffer " << b << " does not fit its bucket");
    torch::Tensor flat = stepBufferZeros(numel, torch::TensorOptions().dtype(first.scalar_type()).device(first.device()));
    for (const BucketEntry& e : bucket.entries) {
      torch::Tensor& p = tensors_.at(e.param);
      PERENNIAL_CHECK(p.is_contiguous() && static_cast<size_t>(p.numel()) == e.numel, "flat buckets: parameter " << e.param
                                                                                             << " does not fit its entry");
      torch::Tensor slot = flat.narrow(0, static_cast<int64_t>(e.offset), static_cast<int64_t>(e.numel)).view(p.sizes());
      slot.copy_(p);
      // The parameter's own TensorImpl (which the model and the optimizer's state keys hold) now
      // points into the flat buffer.
      p.set_(flat.storage(), static_cast<int64_t>(e.offset), p.sizes(), slot.strides());
    }
    params_.push_back(flat);
    grads_.push_back(grads[b].narrow(0, 0, numel));
  }
}

std::vector<torch::Tensor> FlatBuckets::newState() const {
  std::vector<torch::Tensor> out;
  out.reserve(params_.size());
  for (const auto& p : params_) out.push_back(stepBufferZeros(p.numel(), p.options()));
  return out;
}

torch::Tensor FlatBuckets::view(const torch::Tensor& flat, const BucketEntry& e) const {
  return flat.narrow(0, static_cast<int64_t>(e.offset), static_cast<int64_t>(e.numel)).view(tensors_[e.param].sizes());
}

namespace {

// Scalars converted to the element type where LibTorch 1.13 converts them (see fused_kernels.h).
template <typename T>
SgdArgs<T> sgdArgs(const torch::optim::SGDOptions& o, bool firstStep) {
  SgdArgs<T> a;
  a.negLr = static_cast<T>(-1 * o.lr());
  a.momentum = static_cast<T>(o.momentum());
  a.oneMinusDampening = static_cast<T>(1 - o.dampening());
  a.weightDecay = static_cast<T>(o.weight_decay());
  a.nesterov = o.nesterov();
  a.firstStep = firstStep;
  return a;
}

template <typename T>
AdamArgs<T> adamArgs(double lr, double beta1, double beta2, double eps, double weightDecay, int64_t step, bool decoupled) {
  AdamArgs<T> a;
  const double biasCorrection1 = 1 - std::pow(beta1, step);
  const double biasCorrection2 = 1 - std::pow(beta2, step);
  a.beta1 = static_cast<T>(beta1);
  a.oneMinusBeta1 = static_cast<T>(1 - beta1);
  a.beta2 = static_cast<T>(beta2);
  a.oneMinusBeta2 = static_cast<T>(1 - beta2);
  a.sqrtBiasCorrection2 = static_cast<T>(std::sqrt(biasCorrection2));
  a.eps = static_cast<T>(eps);
  a.negStepSize = static_cast<T>(-(lr / biasCorrection1));
  a.decoupled = decoupled;
  if (decoupled) {
    a.decay = static_cast<T>(1 - lr * weightDecay);
    a.weightDecay = 0;
  } else {
    a.weightDecay = static_cast<T>(weightDecay);
  }
  return a;
}

// Whether the fused kernels run on BUFFER (the CPU, float32 or float64); elsewhere each bucket is
// updated with LibTorch's tensor operations.
bool kernelRuns(const torch::Tensor& buffer) {
  return buffer.is_cpu() && (buffer.scalar_type() == torch::kFloat32 || buffer.scalar_type() == torch::kFloat64);
}

// Calls FN(first entry index, end index, offset, numel) for each run of consecutive entries of
// BUCKET on which SAME(a, b) holds between neighbours (flat tensor operations over a run).
void forEachRun(const Bucket& bucket, const std::function<bool(const BucketEntry&, const BucketEntry&)>& same,
                const std::function<void(size_t, size_t, int64_t, int64_t)>& fn) {
  const auto& es = bucket.entries;
  for (size_t i = 0; i < es.size();) {
    size_t j = i + 1;
    while (j < es.size() && same(es[i], es[j])) ++j;
    const BucketEntry& last = es[j - 1];
    fn(i, j, static_cast<int64_t>(es[i].offset), static_cast<int64_t>(last.offset + last.numel - es[i].offset));
    i = j;
  }
}

// Deterministic values for the probe below (which must not draw from LibTorch's generators: they
// seed training).
torch::Tensor probeValues(int64_t n, uint32_t seed, float scale, float shift) {
  torch::Tensor t = torch::empty({n}, torch::kFloat32);
  float* p = t.data_ptr<float>();
  uint32_t x = seed * 2654435761u + 1;
  for (int64_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    p[i] = (static_cast<float>(x >> 8) / 16777216.0f) * scale + shift;
  }
  return t;
}

bool sameBits(const torch::Tensor& a, const std::vector<float>& b) {
  return std::memcmp(a.data_ptr<float>(), b.data(), b.size() * sizeof(float)) == 0;
}

// Two steps of LibTorch's SGD (momentum, Nesterov, weight decay), Adam (L2) and AdamW against the
// kernels in MODE, over 1013 elements (LibTorch's vectorised loop and its scalar tail).
bool kernelsMatchLibTorch(MulAdd mode) {
  torch::NoGradGuard noGrad;
  constexpr int64_t n = 1013;
  const torch::Tensor start = probeValues(n, 1, 2.0f, -1.0f);
  const torch::Tensor grads[2] = {probeValues(n, 2, 0.2f, -0.1f), probeValues(n, 3, 0.2f, -0.1f)};
  auto copyOf = [](const torch::Tensor& t) {
    return std::vector<float>(t.data_ptr<float>(), t.data_ptr<float>() + t.numel());
  };
  auto reference = [&](auto makeOptimizer) {
    torch::Tensor p = start.clone();
    auto opt = makeOptimizer(p);
    for (const auto& g : grads) {
      p.mutable_grad() = g.clone();
      opt.step();
    }
    return p;
  };
  {
    const auto o = torch::optim::SGDOptions(0.1).momentum(0.9).weight_decay(1e-3).nesterov(true);
    torch::Tensor ref = reference([&](torch::Tensor& p) { return torch::optim::SGD({p}, o); });
    std::vector<float> p = copyOf(start), buf(n);
    for (int k = 0; k < 2; ++k) {
      optim::sgdUpdate(p.data(), grads[k].data_ptr<float>(), buf.data(), n, sgdArgs<float>(o, k == 0), mode);
    }
    if (!sameBits(ref, p)) return false;
  }
  for (const bool decoupled : {false, true}) {
    const double lr = 1e-3, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 1e-2;
    torch::Tensor ref = decoupled ? reference([&](torch::Tensor& p) {
      return torch::optim::AdamW({p}, torch::optim::AdamWOptions(lr).betas({b1, b2}).eps(eps).weight_decay(wd));
    })
                                  : reference([&](torch::Tensor& p) {
                                      return torch::optim::Adam(
                                          {p}, torch::optim::AdamOptions(lr).betas({b1, b2}).eps(eps).weight_decay(wd));
                                    });
    std::vector<float> p = copyOf(start), m(n), v(n);
    for (int k = 0; k < 2; ++k) {
      optim::adamUpdate(p.data(), grads[k].data_ptr<float>(), m.data(), v.data(), n,
                        adamArgs<float>(lr, b1, b2, eps, wd, k + 1, decoupled), mode);
    }
    if (!sameBits(ref, p)) return false;
  }
  return true;
}

// The address of element OFFSET of the flat buffer FLAT.
const void* elementAt(const torch::Tensor& flat, size_t offset) {
  return static_cast<const char*>(flat.data_ptr()) + offset * flat.element_size();
}

// Keeps an optimizer's per-parameter state in its flat buffers. Usually STATES holds exactly the
// state objects it installed (MINE, per parameter), each with its tensors at their places in the
// flat buffers (AT_PLACE(state, bucket, offset)): confirmed with pointer comparisons alone.
// Otherwise someone replaced them (restoring a checkpoint does): ADOPT(state, bucket, entry) then
// copies each parameter's state into the flat buffers and points it there (false: drop the state).
template <class State, class AtPlace, class Adopt>
void adoptStates(OptimizerStates& states, InstalledStates& installed, const FlatBuckets& flat, std::vector<State*>& mine,
                 AtPlace&& atPlace, Adopt&& adopt) {
  bool inPlace = installed.holdsAll(states);
  for (size_t b = 0; inPlace && b < flat.size(); ++b) {
    for (const BucketEntry& e : flat.bucket(b).entries) {
      if (mine[e.param] && !atPlace(*mine[e.param], b, e.offset)) inPlace = false;
    }
  }
  if (inPlace) return;
  torch::NoGradGuard noGrad;
  for (size_t b = 0; b < flat.size(); ++b) {
    for (const BucketEntry& e : flat.bucket(b).entries) {
      mine[e.param] = nullptr;
      auto it = states.find(optimizerStateKey(flat.param(e.param)));
      if (it == states.end()) continue;
      auto& s = static_cast<State&>(*it->second);
      if (!adopt(s, b, e)) {
        states.erase(it);
        continue;
      }
      mine[e.param] = &s;
    }
  }
  installed.reset(mine);
}

}  // namespace

MulAdd libTorchMulAdd(bool* bitwise) {
  static const std::pair<MulAdd, bool> probed = [] {
    for (MulAdd mode : {MulAdd::kFused, MulAdd::kSeparate}) {
      if (kernelsMatchLibTorch(mode)) return std::make_pair(mode, true);
    }
    log::get("optim")->warn("the fused optimizer step does not reproduce LibTorch's optimizers bit for bit on this "
                            "machine (its kernels round in a way fused_kernels.h does not model); results stay "
                            "deterministic (optim.fused = false uses LibTorch's optimizers)");
    return std::make_pair(optim::cpuHasFma() ? MulAdd::kFused : MulAdd::kSeparate, false);
  }();
  if (bitwise) *bitwise = probed.second;
  return probed.first;
}

// ---- SGD ----

FusedSgd::FusedSgd(torch::optim::SGDOptions options, std::shared_ptr<FlatBuckets> flat)
    : torch::optim::SGD([&] {
        std::vector<torch::Tensor> ps;
        for (size_t i = 0; i < flat->numParams(); ++i) ps.push_back(flat->param(i));
        return ps;
      }(), options),
      flat_(std::move(flat)),
      mine_(flat_->numParams(), nullptr),
      mode_(libTorchMulAdd()) {
  if (options.momentum() != 0) momentum_ = flat_->newState();
}

void FusedSgd::adoptState() {
  if (momentum_.empty()) return;  // LibTorch's SGD without momentum neither keeps nor reads state
  adoptStates(
      state(), installed_, *flat_, mine_,
      [&](const torch::optim::SGDParamState& s, size_t b, size_t offset) {
        return s.momentum_buffer().data_ptr() == elementAt(momentum_[b], offset);
      },
      [&](torch::optim::SGDParamState& s, size_t b, const BucketEntry& e) {
        if (!s.momentum_buffer().defined()) return false;
        torch::Tensor view = flat_->view(momentum_[b], e);
        if (s.momentum_buffer().data_ptr() != view.data_ptr()) view.copy_(s.momentum_buffer());
        s.momentum_buffer(view);
        return true;
      });
}

torch::Tensor FusedSgd::step(LossClosure closure) {
  torch::Tensor loss;
  if (closure) {
    torch::AutoGradMode enable(true);
    loss = closure();
  }
  PERENNIAL_CHECK(param_groups().size() == 1, "the fused SGD step takes one parameter group");
  const auto& o = static_cast<const torch::optim::SGDOptions&>(param_groups()[0].options());
  PERENNIAL_CHECK((o.momentum() != 0) == !momentum_.empty(), "the fused SGD step cannot change optim.momentum");
  torch::NoGradGuard noGrad;
  adoptState();
  const bool withMomentum = !momentum_.empty();
  for (size_t b = 0; b < flat_->size(); ++b) {
    const Bucket& bucket = flat_->bucket(b);
    const torch::Tensor& p = flat_->params(b);
    const torch::Tensor& g = flat_->grads(b);
    auto first = [&](const BucketEntry& e) { return withMomentum && mine_[e.param] == nullptr; };
    if (kernelRuns(p)) {
      for (const BucketEntry& e : bucket.entries) {
        if (p.scalar_type() == torch::kFloat32) {
          optim::sgdUpdate(p.data_ptr<float>() + e.offset, g.data_ptr<float>() + e.offset,
                           withMomentum ? momentum_[b].data_ptr<float>() + e.offset : nullptr, e.numel,
                           sgdArgs<float>(o, first(e)), mode_);
        } else {
          optim::sgdUpdate(p.data_ptr<double>() + e.offset, g.data_ptr<double>() + e.offset,
                           withMomentum ? momentum_[b].data_ptr<double>() + e.offset : nullptr, e.numel,
                           sgdArgs<double>(o, first(e)), mode_);
        }
      }
    } else {
      // LibTorch's own operations over runs of entries (SGD::step, per parameter, does the same).
      forEachRun(
          bucket, [&](const BucketEntry& a, const BucketEntry& c) { return first(a) == first(c); },
          [&](size_t i, size_t, int64_t offset, int64_t numel) {
            torch::Tensor pr = p.narrow(0, offset, numel);
            torch::Tensor d = g.narrow(0, offset, numel);
            if (o.weight_decay() != 0) d = d.add(pr, o.weight_decay());
            if (withMomentum) {
              torch::Tensor buf = momentum_[b].narrow(0, offset, numel);
              if (first(bucket.entries[i])) {
                buf.copy_(d);
              } else {
                buf.mul_(o.momentum()).add_(d, 1 - o.dampening());
              }
              d = o.nesterov() ? d.add(buf, o.momentum()) : buf;
            }
            pr.add_(d, -1 * o.lr());
          });
    }
    if (!withMomentum) continue;
    for (const BucketEntry& e : bucket.entries) {
      if (mine_[e.param]) continue;
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(flat_->view(momentum_[b], e));
      mine_[e.param] = s.get();
      state()[optimizerStateKey(flat_->param(e.param))] = std::move(s);
      installed_.reset(mine_);
    }
  }
  return loss;
}

// ---- Adam and AdamW ----

namespace {
template <class Options>
constexpr bool kDecoupled = std::is_same_v<Options, torch::optim::AdamWOptions>;
}  // namespace

template <class Base, class State, class Options>
FusedAdamBase<Base, State, Options>::FusedAdamBase(Options options, std::shared_ptr<FlatBuckets> flat)
    : Base(
          [&] {
            std::vector<torch::Tensor> ps;
            for (size_t i = 0; i < flat->numParams(); ++i) ps.push_back(flat->param(i));
            return ps;
          }(),
          options),
      flat_(std::move(flat)),
      expAvg_(flat_->newState()),
      expAvgSq_(flat_->newState()),
      mine_(flat_->numParams(), nullptr),
      mode_(libTorchMulAdd()) {
  PERENNIAL_CHECK(!options.amsgrad(), "the fused Adam step has no amsgrad");
}

template <class Base, class State, class Options>
void FusedAdamBase<Base, State, Options>::adoptState() {
  adoptStates(
      this->state(), installed_, *flat_, mine_,
      [&](const State& s, size_t b, size_t offset) {
        return s.exp_avg().data_ptr() == elementAt(expAvg_[b], offset) &&
               s.exp_avg_sq().data_ptr() == elementAt(expAvgSq_[b], offset) && !s.max_exp_avg_sq().defined();
      },
      [&](State& s, size_t b, const BucketEntry& e) {
        PERENNIAL_CHECK(s.exp_avg().defined() && s.exp_avg_sq().defined() && !s.max_exp_avg_sq().defined(),
                        "Adam state of parameter " << e.param << " has no exp_avg/exp_avg_sq, or has amsgrad's maximum");
        torch::Tensor avg = flat_->view(expAvg_[b], e), sq = flat_->view(expAvgSq_[b], e);
        if (s.exp_avg().data_ptr() != avg.data_ptr()) avg.copy_(s.exp_avg());
        if (s.exp_avg_sq().data_ptr() != sq.data_ptr()) sq.copy_(s.exp_avg_sq());
        s.exp_avg(avg);
        s.exp_avg_sq(sq);
        return true;
      });
}

template <class Base, class State, class Options>
torch::Tensor FusedAdamBase<Base, State, Options>::step(LossClosure closure) {
  torch::Tensor loss;
  if (closure) {
    torch::AutoGradMode enable(true);
    loss = closure();
  }
  PERENNIAL_CHECK(this->param_groups().size() == 1, "the fused Adam step takes one parameter group");
  const auto& o = static_cast<const Options&>(this->param_groups()[0].options());
  const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
  torch::NoGradGuard noGrad;
  adoptState();
  for (size_t b = 0; b < flat_->size(); ++b) {
    const Bucket& bucket = flat_->bucket(b);
    // State is created at a parameter's first step, zero-filled as LibTorch's zeros_like.
    for (const BucketEntry& e : bucket.entries) {
      if (mine_[e.param]) continue;
      auto s = std::make_unique<State>();
      s->step(0);
      torch::Tensor avg = flat_->view(expAvg_[b], e), sq = flat_->view(expAvgSq_[b], e);
      avg.zero_();
      sq.zero_();
      s->exp_avg(avg);
      s->exp_avg_sq(sq);
      mine_[e.param] = s.get();
      this->state()[optimizerStateKey(flat_->param(e.param))] = std::move(s);
      installed_.reset(mine_);
    }
    for (const BucketEntry& e : bucket.entries) mine_[e.param]->step(mine_[e.param]->step() + 1);
    const torch::Tensor& p = flat_->params(b);
    const torch::Tensor& g = flat_->grads(b);
    auto stepOf = [&](const BucketEntry& e) { return mine_[e.param]->step(); };
    if (kernelRuns(p)) {
      for (const BucketEntry& e : bucket.entries) {
        if (p.scalar_type() == torch::kFloat32) {
          optim::adamUpdate(p.data_ptr<float>() + e.offset, g.data_ptr<float>() + e.offset,
                            expAvg_[b].data_ptr<float>() + e.offset, expAvgSq_[b].data_ptr<float>() + e.offset, e.numel,
                            adamArgs<float>(o.lr(), beta1, beta2, o.eps(), o.weight_decay(), stepOf(e),
                                            kDecoupled<Options>),
                            mode_);
        } else {
          optim::adamUpdate(p.data_ptr<double>() + e.offset, g.data_ptr<double>() + e.offset,
                            expAvg_[b].data_ptr<double>() + e.offset, expAvgSq_[b].data_ptr<double>() + e.offset,
                            e.numel,
                            adamArgs<double>(o.lr(), beta1, beta2, o.eps(), o.weight_decay(), stepOf(e),
                                             kDecoupled<Options>),
                            mode_);
        }
      }
      continue;
    }
    // LibTorch's own operations (Adam::step / AdamW::step, per parameter) over runs of entries
    // at the same step count.
    forEachRun(
        bucket, [&](const BucketEntry& a, const BucketEntry& c) { return stepOf(a) == stepOf(c); },
        [&](size_t i, size_t, int64_t offset, int64_t numel) {
          const int64_t step = stepOf(bucket.entries[i]);
          torch::Tensor pr = p.narrow(0, offset, numel);
          torch::Tensor grad = g.narrow(0, offset, numel);
          torch::Tensor avg = expAvg_[b].narrow(0, offset, numel), sq = expAvgSq_[b].narrow(0, offset, numel);
          if (kDecoupled<Options>) {
            if (o.weight_decay() != 0) pr.mul_(1 - o.lr() * o.weight_decay());
          } else if (o.weight_decay() != 0) {
            grad = grad.add(pr, o.weight_decay());
          }
          const double biasCorrection1 = 1 - std::pow(beta1, step);
          const double biasCorrection2 = 1 - std::pow(beta2, step);
          avg.mul_(beta1).add_(grad, 1 - beta1);
          sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2);
          torch::Tensor denom = (sq.sqrt() / std::sqrt(biasCorrection2)).add_(o.eps());
          pr.addcdiv_(avg, denom, -(o.lr() / biasCorrection1));
        });
  }
  return loss;
}

template class FusedAdamBase<torch::optim::Adam, torch::optim::AdamParamState, torch::optim::AdamOptions>;
template class FusedAdamBase<torch::optim::AdamW, torch::optim::AdamWParamState, torch::optim::AdamWOptions>;

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const TrainConfig& c, const std::vector<torch::Tensor>& params,
                                                       std::shared_ptr<FlatBuckets> flat) {
  const bool fused = c.fusedOptimizer && flat;
  if (fused) {
    PERENNIAL_CHECK(flat->numParams() == params.size(), "flat buckets over other parameters");
    for (size_t i = 0; i < params.size(); ++i) {
      PERENNIAL_CHECK(flat->param(i).unsafeGetTensorImpl() == params[i].unsafeGetTensorImpl(),
                      "flat buckets over other parameters");
    }
  }
  if (c.optimizer == "sgd") {
    const auto o = torch::optim::SGDOptions(c.lr).momentum(c.momentum).weight_decay(c.weightDecay).nesterov(c.nesterov);
    if (fused) return std::make_unique<FusedSgd>(o, flat);
    return std::make_unique<torch::optim::SGD>(params, o);
  }
  if (c.optimizer == "adamw") {
    const auto o = torch::optim::AdamWOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(c.weightDecay);
    if (fused) return std::make_unique<FusedAdamW>(o, flat);
    return std::make_unique<torch::optim::AdamW>(params, o);
  }
  const auto o = torch::optim::AdamOptions(c.lr).betas({c.beta1, c.beta2}).eps(c.eps).weight_decay(c.weightDecay);
  if (fused) return std::make_unique<FusedAdam>(o, flat);
  return std::make_unique<torch::optim::Adam>(params, o);
}

}  // namespace perennial
