#pragma once
// Host memory that asynchronous checkpoints copy the training state into (checkpoint.async).
//
// NOTE [Staging buffers]: an asynchronous save stalls training only while the state is copied;
// the write then runs on a background thread from the copy. Copying into freshly allocated memory
// runs at the speed the kernel can fault pages in (about 250 MB/s on the benchmark machine), not
// at memory speed. So the copy goes into one buffer allocated and touched once per run, at the
// first save, and reused by every later one (grown only if the state grows); when training on a
// GPU it is page-locked, so that device-to-host copies run at full speed without a bounce buffer.
// A buffer is reused only after the previous save has finished reading it: the trainer waits for
// the save in flight before it captures the next one.
#include <torch/types.h>

#include <cstddef>

namespace perennial {

class StagingBuffers {
 public:
  // PINNED: page-locked memory (needs CUDA); else ordinary host memory.
  explicit StagingBuffers(bool pinned) : pinned_(pinned) {}

  // Makes room for BYTES (plus alignment) and rewinds to the start: the tensors handed out since
  // the last begin() may be overwritten from now on.
  void begin(size_t bytes);
  // A host copy of T (any device, contiguous or not) in the staging memory. GPU copies are
  // asynchronous until finish().
  torch::Tensor copy(const torch::Tensor& t);
  // Waits for the asynchronous device-to-host copies (none on the CPU).
  void finish();

  size_t capacity() const { return static_cast<size_t>(buffer_.defined() ? buffer_.numel() : 0); }
  // Times the buffer was (re)allocated: 1 for a run whose state never grows.
  int allocations() const { return allocations_; }

  // Bytes copy() takes for T, with the alignment it keeps.
  static size_t footprint(const torch::Tensor& t);

 private:
  bool pinned_;
  torch::Tensor buffer_;  // uint8
  size_t used_ = 0;
  int allocations_ = 0;
  bool deviceCopies_ = false;
};

}  // namespace perennial
