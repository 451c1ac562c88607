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
    default: break;
  }
  throw InternalError(std::string("unsupported tensor type for collectives: ") + c10::toString(t));
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

GradientReducer::GradientReducer(std::vector<torch::Tensor> params, Communicator& comm,
                                 size_t capBytes)
    : params_(std::move(params)), comm_(comm) {
  std::vector<ParamInfo> infos;
  infos.reserve(params_.size());
  for (const auto& p : params_) {
    PERENNIAL_CHECK(p.is_contiguous(), "parameters must be contiguous");
    infos.push_back(ParamInfo{static_cast<size_t>(p.numel()), toDType(p.scalar_type())});
  }
  plan_ = planBuckets(infos, capBytes);
  torch::NoGradGuard noGrad;
  for (const Bucket& b : plan_) {
    auto type = params_[b.entries.front().param].scalar_type();
    auto device = params_[b.entries.front().param].device();
    torch::Tensor buffer = torch::zeros({static_cast<int64_t>(b.numel)},
                                        torch::TensorOptions().dtype(type).device(device));
    for (const BucketEntry& e : b.entries) {
      torch::Tensor& p = params_[e.param];
      p.mutable_grad() = buffer.narrow(0, static_cast<int64_t>(e.offset), static_cast<int64_t>(e.numel))
                             .view(p.sizes());
    }
    buffers_.push_back(std::move(buffer));
  }
}

void GradientReducer::zeroGrad() {
  for (auto& b : buffers_) b.zero_();
}

void GradientReducer::reduce(bool prescaled) {
  const int world = comm_.size();
  for (size_t i = 0; i < plan_.size(); ++i) {
    torch::Tensor& buf = buffers_[i];
    allReduceTensor(buf, comm_, ReduceOp::kSum);
    if (world > 1 && !prescaled) buf.div_(static_cast<double>(world));
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
