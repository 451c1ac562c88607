#include "trainer/comm/gradient_reducer.h"

#include <torch/torch.h>

#include "common/error.h"

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
  for (size_t bi = 0; bi < plan_.size(); ++bi) {
    const Bucket& b = plan_[bi];
    auto type = params_[b.entries.front().param].scalar_type();
    auto device = params_[b.entries.front().param].device();
    const size_t extra = bi + 1 == plan_.size() ? options_.controlSlots : 0;
    PERENNIAL_CHECK(extra == 0 || type == torch::kFloat32 || type == torch::kFloat64,
                    "control slots ride in a float32 or float64 bucket");
    torch::Tensor buffer = torch::zeros({static_cast<int64_t>(b.numel + extra)},
                                        torch::TensorOptions().dtype(type).device(device));
    for (const BucketEntry& e : b.entries) {
      torch::Tensor& p = params_[e.param];
      p.mutable_grad() = buffer.narrow(0, static_cast<int64_t>(e.offset), static_cast<int64_t>(e.numel))
                             .view(p.sizes());
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
    const bool floating = type == torch::kFloat32 || type == torch::kFloat64;
    if (options_.compression != Compression::kNone && floating && comm_.size() > 1) {
      wire_.push_back(torch::empty_like(buffer, options_.compression == Compression::kBFloat16 ? torch::kBFloat16
                                                                                              : torch::kHalf));
    } else {
      wire_.emplace_back();
    }
    buffers_.push_back(std::move(buffer));
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
  for (size_t i = 0; i < plan_.size(); ++i) reduceBucket(i, prescaled);
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
