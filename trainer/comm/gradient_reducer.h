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
//    bucket crosses the wire as bfloat16 or half and is widened in place;
//  - overlap (comm.overlap, NOTE [Overlap]): a bucket is all-reduced on the reducer's
//    communication thread as soon as backward has produced its last gradient, while backward goes
//    on with the others. Buckets are reduced in plan order on every rank (NOTE [Bucket order]),
//    with the same collectives on the same bytes as reduce() after backward, so the result is
//    bitwise the same.
#include <torch/types.h>

#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "trainer/comm/bucket_plan.h"
#include "trainer/comm/communicator.h"
#include "trainer/comm/control_block.h"

namespace perennial {

enum class Compression { kNone, kBFloat16, kFloat16 };

// "none" | "bf16" | "fp16" (comm.compression); throws ConfigError naming the key otherwise.
Compression parseCompression(const std::string& value);

// The smallest buffer reduced through shared memory (ReducerOptions::sharedMemory; with
// compression, the 16-bit wire buffer, so a float bucket of twice this): below it, two barriers
// cost more than Open MPI's eager all-reduce (BENCHMARKS.md, "Shared-memory all-reduce").
inline constexpr size_t kMinSharedBytes = size_t{8} << 10;

struct ReducerOptions {
  size_t capBytes = 25u << 20;
  size_t controlSlots = 0;  // elements after the last bucket (NOTE [Control block])
  Compression compression = Compression::kNone;
  bool overlap = false;
  // CPU buckets (or, with compression, their wire buffers) of kMinSharedBytes or more in memory
  // the ranks share, when every rank runs on one node (NOTE [Shared-memory all-reduce]). Off by
  // default: beyond two ranks the sums are then in rank order, not MPI's; the trainer turns it on
  // as comm.shared_memory says.
  bool sharedMemory = false;
};

class GradientReducer {
 public:
  // PARAMS must outlive the reducer and keep their storage; capBytes is the bucket cap.
  GradientReducer(std::vector<torch::Tensor> params, Communicator& comm, size_t capBytes);
  GradientReducer(std::vector<torch::Tensor> params, Communicator& comm, const ReducerOptions& options);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Zeroes every gradient (the bucket buffers) and the control slots.
  void zeroGrad();
  // With overlap: call before the backward pass that completes the step's gradients (the last
  // micro-batch's); its hooks start each bucket's reduction as soon as the bucket is complete.
  // PRESCALED as for reduce(). Without overlap (or at world size 1) it does nothing.
  void expectBackward(bool prescaled);
  // Sums gradients across ranks, bucket by bucket in plan order, and divides by the world size.
  // With PRESCALED, the caller already scaled its loss by 1 / world size (so backward produced
  // gradients divided by it) and the division pass over the buffers is skipped: for a world size
  // that is a power of two the result is bitwise the same, since scaling by 2^-k is exact.
  // After expectBackward(), waits for the buckets already under way and reduces the rest (those
  // whose parameters got no gradient this time). Control slots are summed, never divided.
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
  // Whether reductions run on the communication thread (overlap asked for, possible, world > 1).
  bool overlapping() const { return overlap_; }
  // How many buckets are reduced through memory the ranks share (NOTE [Shared-memory all-reduce]).
  size_t sharedBuckets() const { return sharedBuckets_; }
  // With overlap: how many buckets the hooks had handed to the communication thread when the last
  // reduce() was called (the others went then). For tests and the log.
  size_t bucketsReadyBeforeReduce() const { return readyBeforeReduce_; }

 private:
  void reduceBucket(size_t b, bool prescaled);
  void registerHooks();
  void onGradReady(size_t param);
  void commLoop();

  std::vector<torch::Tensor> params_;
  Communicator& comm_;
  ReducerOptions options_;
  std::vector<Bucket> plan_;
  std::vector<torch::Tensor> buffers_;  // one flat tensor per bucket (+ control slots on the last)
  std::vector<torch::Tensor> wire_;     // per bucket with compression: the narrow copy that is sent

  // NOTE [Overlap] state. The hooks run on the thread that runs backward (the training thread on
  // the CPU); the communication thread reduces buckets in plan order as they become ready.
  bool overlap_ = false;
  size_t sharedBuckets_ = 0;
  bool hooksRegistered_ = false;
  // The hooked gradient accumulators (kept alive) and their hooks' keys, removed on destruction.
  std::vector<std::pair<std::shared_ptr<void>, uintptr_t>> hooks_;
  std::vector<size_t> bucketOf_;                     // per parameter
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> armed_{false};
  bool prescaledArmed_ = true;
  std::vector<size_t> pending_;  // per bucket: gradients still to come
  std::vector<char> ready_;      // per bucket
  size_t next_ = 0;              // the next bucket the communication thread reduces
  size_t readyBeforeReduce_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
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
