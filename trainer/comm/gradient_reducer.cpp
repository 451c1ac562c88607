#include "trainer/comm/gradient_reducer.h"

#include <algorithm>

#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include "common/error.h"
#include "common/log.h"
#include "trainer/host_memory.h"

namespace perennial {

DType toDType(c10::ScalarType t) {
  switch (t) {
    case torch::kFloat32: return DType::kFloat32;
    case torch::kFloat64: return DType::kFloat64;
    case torch::kInt64: return DType::kInt64;
    case torch::kInt32: return DType::kInt32;
    case torch::kUInt8: return DType::kUInt8;
    case torch::kBFloat16: return DType::kBFloat16;
    case torch::kHalf: return DType::kFloat16;
    default: break;
  }
  throw InternalError(std::string("unsupported tensor type for collectives: ") + c10::toString(t));
}

Compression parseCompression(const std::string& value) {
  if (value == "none") return Compression::kNone;
  if (value == "bf16") return Compression::kBFloat16;
  if (value == "fp16") return Compression::kFloat16;
  throw ConfigError("comm.compression: must be one of none|bf16|fp16 (got '" + value + "')");
}

namespace {

// Calls RUN with memory COMM can take that holds T's values, then copies the result back when
// that memory was a staging copy (and BACK asks for it).
template <typename Run>
void onCommMemory(torch::Tensor& t, Communicator& comm, bool back, Run run) {
  PERENNIAL_CHECK(t.is_contiguous(), "collective on a non-contiguous tensor");
  if (t.is_cpu() == !comm.deviceMemory()) {
    run(t.data_ptr());
    return;
  }
  PERENNIAL_CHECK(!t.is_cpu(), "the " << comm.backend() << " communicator takes GPU memory, and the tensor is on the CPU");
  torch::Tensor host = t.to(torch::kCPU);
  run(host.data_ptr());
  if (back) t.copy_(host);
}

}  // namespace

void allReduceTensor(torch::Tensor& t, Communicator& comm, ReduceOp op) {
  onCommMemory(t, comm, true, [&](void* p) {
    comm.allReduce(p, static_cast<size_t>(t.numel()), toDType(t.scalar_type()), op);
  });
}

void broadcastTensor(torch::Tensor& t, Communicator& comm, int root) {
  onCommMemory(t, comm, true, [&](void* p) {
    comm.broadcast(p, static_cast<size_t>(t.numel()) * t.element_size(), root);
  });
}

GradientReducer::GradientReducer(std::vector<torch::Tensor> params, Communicator& comm, size_t capBytes)
    : GradientReducer(std::move(params), comm, ReducerOptions{capBytes}) {}

GradientReducer::GradientReducer(std::vector<torch::Tensor> params, Communicator& comm, const ReducerOptions& options)
    : params_(std::move(params)), comm_(comm), options_(options) {
  std::vector<ParamInfo> infos;
  infos.reserve(params_.size());
  for (const auto& p : params_) {
    PERENNIAL_CHECK(p.is_contiguous(), "parameters must be contiguous");
    infos.push_back(ParamInfo{static_cast<size_t>(p.numel()), toDType(p.scalar_type())});
  }
  plan_ = planBuckets(infos, options_.capBytes);
  PERENNIAL_CHECK(options_.controlSlots == 0 || !plan_.empty(), "control slots need a bucket to ride in");
  torch::NoGradGuard noGrad;
  // The memory a bucket is reduced in: shared by the node's ranks where the communicator offers
  // it (collective: every rank asks for the same buckets in the same order), else a step buffer.
  // Buckets under kMinSharedBytes stay with MPI, whose eager path beats the two-shot's barriers.
  auto reducedIn = [&](int64_t numel, const torch::TensorOptions& o) {
    const size_t bytes = static_cast<size_t>(numel) * c10::elementSize(c10::typeMetaToScalarType(o.dtype()));
    // (The communicator itself declines at world size 1 and for device memory.)
    if (options_.sharedMemory && bytes >= kMinSharedBytes && o.device().is_cpu()) {
      if (void* p = comm_.sharedHostBuffer(bytes)) {
        ++sharedBuckets_;
        return torch::from_blob(p, {numel}, o);  // never freed (the communicator keeps it mapped)
      }
    }
    return stepBufferZeros(numel, o);
  };
  bucketOf_.resize(params_.size());
  for (size_t bi = 0; bi < plan_.size(); ++bi) {
    const Bucket& b = plan_[bi];
    auto type = params_[b.entries.front().param].scalar_type();
    auto device = params_[b.entries.front().param].device();
    const size_t extra = bi + 1 == plan_.size() ? options_.controlSlots : 0;
    PERENNIAL_CHECK(extra == 0 || type == torch::kFloat32 || type == torch::kFloat64,
                    "control slots ride in a float32 or float64 bucket");
    // The memory the all-reduce works in is shared by the node's ranks where it can be (NOTE
    // [Shared-memory all-reduce] in mpi_communicator.cpp); other CPU buffers are on huge pages
    // (NOTE [Huge pages] in trainer/host_memory.h).
    const bool floating = type == torch::kFloat32 || type == torch::kFloat64;
    const bool compressed = options_.compression != Compression::kNone && floating && comm_.size() > 1;
    const auto bufferOptions = torch::TensorOptions().dtype(type).device(device);
    const auto bufferNumel = static_cast<int64_t>(b.numel + extra);
    torch::Tensor buffer = compressed ? stepBufferZeros(bufferNumel, bufferOptions) : reducedIn(bufferNumel, bufferOptions);
    for (const BucketEntry& e : b.entries) {
      torch::Tensor& p = params_[e.param];
      p.mutable_grad() = buffer.narrow(0, static_cast<int64_t>(e.offset), static_cast<int64_t>(e.numel))
                             .view(p.sizes());
      bucketOf_[e.param] = bi;
    }
    // NOTE [Gradient compression]: a floating-point bucket is converted to bfloat16 or half
    // (round to nearest even), all-reduced in that type (every partial sum rounded to it: the
    // MPI communicator adds two values in float32 and rounds, NCCL sums natively), and widened
    // back into the bucket. Gradients are prescaled by 1 / world size before the conversion, so
    // the sum stays in range. Per element the error is about (world size + 1) units of the
    // narrow type's last place: 2^-8 relative for bfloat16, 2^-11 for half, whose range also
    // ends at 65504 (larger sums overflow to infinity) and whose subnormals end at 2^-24 (smaller
    // gradients flush to zero). Same inputs, same bits: the conversions and the sums are
    // deterministic and identical on every rank.
    if (compressed) {
      wire_.push_back(reducedIn(buffer.numel(), buffer.options().dtype(options_.compression == Compression::kBFloat16
                                                                          ? torch::kBFloat16
                                                                          : torch::kHalf)));
    } else {
      wire_.emplace_back();
    }
    buffers_.push_back(std::move(buffer));
  }
  pending_.assign(plan_.size(), 0);
  ready_.assign(plan_.size(), 0);
  if (options_.overlap && comm_.size() > 1 && !plan_.empty()) {
    if (comm_.deviceMemory() || !comm_.callableFromHelperThread()) {
      log::get("comm")->warn("comm.overlap: the {} communicator cannot be driven from a communication thread here; "
                             "gradients are reduced after backward",
                             comm_.backend());
    } else {
      overlap_ = true;
      thread_ = std::thread([this] { commLoop(); });
    }
  }
}

GradientReducer::~GradientReducer() {
  for (auto& [acc, key] : hooks_) static_cast<torch::autograd::Node*>(acc.get())->del_post_hook(key);
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
}

torch::Tensor GradientReducer::control() const {
  if (options_.controlSlots == 0) return torch::Tensor();
  const Bucket& last = plan_.back();
  return buffers_.back().narrow(0, static_cast<int64_t>(last.numel), static_cast<int64_t>(options_.controlSlots));
}

WireType GradientReducer::controlWireType() const {
  if (wire_.back().defined()) {
    return wire_.back().scalar_type() == torch::kBFloat16 ? WireType::kBFloat16 : WireType::kFloat16;
  }
  return buffers_.back().scalar_type() == torch::kFloat64 ? WireType::kFloat64 : WireType::kFloat32;
}

void GradientReducer::zeroGrad() {
  for (auto& b : buffers_) b.zero_();
}

void GradientReducer::reduceBucket(size_t b, bool prescaled) {
  torch::NoGradGuard noGrad;
  const int world = comm_.size();
  torch::Tensor& buf = buffers_[b];
  if (wire_[b].defined()) {
    wire_[b].copy_(buf);
    allReduceTensor(wire_[b], comm_, ReduceOp::kSum);
    buf.copy_(wire_[b]);
  } else {
    allReduceTensor(buf, comm_, ReduceOp::kSum);
  }
  if (!prescaled && world > 1) buf.narrow(0, 0, static_cast<int64_t>(plan_[b].numel)).div_(static_cast<double>(world));
}

void GradientReducer::reduce(bool prescaled) {
  if (armed_) {
    PERENNIAL_CHECK(prescaled == prescaledArmed_, "reduce(prescaled) differs from expectBackward(prescaled)");
    std::unique_lock<std::mutex> lock(mu_);
    readyBeforeReduce_ = static_cast<size_t>(std::count(ready_.begin(), ready_.end(), 1));
    // Buckets whose hooks did not all fire (parameters without a gradient this time) go now.
    std::fill(ready_.begin(), ready_.end(), 1);
    cv_.notify_all();
    cv_.wait(lock, [&] { return next_ == plan_.size(); });
    armed_ = false;
    if (error_) {
      auto e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
    return;
  }
  for (size_t i = 0; i < plan_.size(); ++i) reduceBucket(i, prescaled);
}

// NOTE [Overlap]: as DDP's reducer, a post-hook on each parameter's gradient accumulator counts
// the gradients of its bucket; the hook that completes a bucket marks it ready, and the
// communication thread reduces ready buckets strictly in plan order (a bucket ready early waits
// for its predecessors), so every rank issues the same collectives in the same order whatever
// order its backward finishes in. Hooks are registered on first use, after the parameters have
// taken their final storage (NOTE [Flat parameters]); they only count between expectBackward()
// and reduce(), so the backward passes of earlier micro-batches (gradient accumulation) and any
// other backward leave the buckets alone. The training thread makes no other collective call
// while the buckets are under way (the communicator need only allow calls from one thread at a
// time: MPI_THREAD_SERIALIZED).
void GradientReducer::registerHooks() {
  hooksRegistered_ = true;
  for (size_t i = 0; i < params_.size(); ++i) {
    std::shared_ptr<torch::autograd::Node> acc = torch::autograd::impl::grad_accumulator(params_[i]);
    PERENNIAL_CHECK(acc, "parameter " << i << " has no gradient accumulator (does it require grad?)");
    const uintptr_t key = acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, i](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          onGradReady(i);
          return outputs;
        }));
    hooks_.emplace_back(std::move(acc), key);
  }
}

void GradientReducer::expectBackward(bool prescaled) {
  if (!overlap_) return;
  if (!hooksRegistered_) registerHooks();
  std::lock_guard<std::mutex> lock(mu_);
  PERENNIAL_CHECK(next_ == plan_.size() || !armed_, "expectBackward() while buckets are under way");
  for (size_t b = 0; b < plan_.size(); ++b) {
    pending_[b] = plan_[b].entries.size();
    ready_[b] = 0;
  }
  next_ = 0;
  prescaledArmed_ = prescaled;
  armed_ = true;
}

void GradientReducer::onGradReady(size_t param) {
  if (!armed_) return;
  const size_t b = bucketOf_[param];
  std::lock_guard<std::mutex> lock(mu_);
  if (pending_[b] > 0 && --pending_[b] == 0) {
    ready_[b] = 1;
    cv_.notify_all();
  }
}

void GradientReducer::commLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || (armed_ && next_ < plan_.size() && ready_[next_]); });
    if (stop_) return;
    const size_t b = next_;
    const bool prescaled = prescaledArmed_;
    const bool skip = error_ != nullptr;  // a failed collective ends the run; do not start more
    lock.unlock();
    if (!skip) {
      try {
        reduceBucket(b, prescaled);
      } catch (...) {
        lock.lock();
        error_ = std::current_exception();
        lock.unlock();
      }
    }
    lock.lock();
    ++next_;
    cv_.notify_all();
  }
}

void GradientReducer::broadcastParameters(int root) {
  torch::NoGradGuard noGrad;
  for (const Bucket& b : plan_) {
    const torch::Tensor& first = params_[b.entries.front().param];
    torch::Tensor flat = torch::empty({static_cast<int64_t>(b.numel)},
                                      torch::TensorOptions().dtype(first.scalar_type()).device(first.device()));
    for (const BucketEntry& e : b.entries) {
      flat.narrow(0, static_cast<int64_t>(e.offset), static_cast<int64_t>(e.numel))
          .copy_(params_[e.param].reshape({-1}));
    }
    broadcastTensor(flat, comm_, root);
    for (const BucketEntry& e : b.entries) {
      params_[e.param].copy_(
          flat.narrow(0, static_cast<int64_t>(e.offset), static_cast<int64_t>(e.numel))
              .view(params_[e.param].sizes()));
    }
  }
}

}  // namespace perennial
