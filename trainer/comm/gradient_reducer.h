#pragma once
// Bucketed gradient averaging (the data-parallel core), in the manner of PyTorch DDP's Reducer.
//
// Each parameter's .grad() is a view into its bucket's flat buffer ("gradient as bucket view"),
// so backward accumulates straight into the buffers and reduce() all-reduces them in place:
// no copies in or out. The buffers live on the parameters' device (CPU or one GPU); COMM is the
// tensor communicator for that device (see allReduceTensor). Gradient accumulation over k
// micro-batches is k backward passes followed by one reduce().
//
// Options (ReducerOptions):
//  - control slots (NOTE [Control block], control_block.h): extra elements after the last
//    bucket's gradients, summed by the same collective;
//  - compression (comm.compression, NOTE [Gradient compression] in gradient_reducer.cpp): each
//    bucket crosses the wire as bfloat16 or half and is widened in place.
#include <torch/types.h>

#include <string>
#include <vector>

#include "trainer/comm/bucket_plan.h"
#include "trainer/comm/communicator.h"
#include "trainer/comm/control_block.h"

namespace perennial {

enum class Compression { kNone, kBFloat16, kFloat16 };

// "none" | "bf16" | "fp16" (comm.compression); throws ConfigError naming the key otherwise.
Compression parseCompression(const std::string& value);

struct ReducerOptions {
  size_t capBytes = 25u << 20;
  size_t controlSlots = 0;  // elements after the last bucket (NOTE [Control block])
  Compression compression = Compression::kNone;
};

class GradientReducer {
 public:
  // PARAMS must outlive the reducer and keep their storage; capBytes is the bucket cap.
  GradientReducer(std::vector<torch::Tensor> params, Communicator& comm, size_t capBytes);
  GradientReducer(std::vector<torch::Tensor> params, Communicator& comm, const ReducerOptions& options);

  // Zeroes every gradient (the bucket buffers) and the control slots.
  void zeroGrad();
  // Sums gradients across ranks, bucket by bucket in plan order, and divides by the world size.
  // With PRESCALED, the caller already scaled its loss by 1 / world size (so backward produced
  // gradients divided by it) and the division pass over the buffers is skipped: for a world size
  // that is a power of two the result is bitwise the same, since scaling by 2^-k is exact.
  // Control slots are summed, never divided.
  void reduce(bool prescaled = false);
  // Overwrites every parameter with ROOT's values (bucketed broadcast). Used at start-up.
  void broadcastParameters(int root);

  const std::vector<Bucket>& buckets() const { return plan_; }
  size_t collectivesPerReduce() const { return plan_.size(); }
  // The flat gradient buffer of each bucket (each parameter's .grad() is a view into one); the
  // last one also holds the control slots after its gradients.
  const std::vector<torch::Tensor>& gradBuffers() const { return buffers_; }
  // The control slots (empty when there are none), and the type they cross the wire in.
  torch::Tensor control() const;
  WireType controlWireType() const;

 private:
  void reduceBucket(size_t b, bool prescaled);

  std::vector<torch::Tensor> params_;
  Communicator& comm_;
  ReducerOptions options_;
  std::vector<Bucket> plan_;
  std::vector<torch::Tensor> buffers_;  // one flat tensor per bucket (+ control slots on the last)
  std::vector<torch::Tensor> wire_;     // per bucket with compression: the narrow copy that is sent
};

DType toDType(c10::ScalarType t);

// Collectives on a whole contiguous tensor through COMM. The tensor's memory goes to COMM as it
// is when COMM takes memory where the tensor lives (MPI: CPU tensors; NCCL: CUDA tensors);
// a CUDA tensor given to a host communicator is staged through a CPU copy (comm.backend = mpi
// on a GPU, or a build without NCCL). A CPU tensor given to a device communicator is a usage
// error (InternalError).
void allReduceTensor(torch::Tensor& t, Communicator& comm, ReduceOp op);
void broadcastTensor(torch::Tensor& t, Communicator& comm, int root);

}  // namespace perennial
