#pragma once
// Bounded prefetch of batches from a ShardedDataset on a background thread.
//
// The loader reads the batches it is given, in order, at most `depth` ahead of the consumer, so
// memory stays bounded (depth x batch size) and only the rows this rank needs are read. Features
// become float32 on the loader thread (uint8 images scaled to [0, 1]; float32 as stored). A read
// error is re-thrown to the consumer at the batch that failed. With depth 0 there is no thread:
// next() makes each batch on the caller's thread (cheapest when rows come from memory, NOTE [Row
// cache], and the rank has one core: no hand-over between threads).
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "dataset/shard_dataset.h"

namespace perennial::data {

struct Batch {
  int64_t rows = 0;
  std::vector<float> features;  // rows x featureElements (uint8 images scaled to [0, 1])
  std::vector<int64_t> labels;  // classification: one class per row
  std::vector<float> values;    // regression: one target value per row
};

class BatchLoader {
 public:
  // BATCHES: the global sample indices of each batch, consumed in order. DEPTH: batches made
  // ahead on the loader's thread (0: none, no thread).
  BatchLoader(ShardedDataset& dataset, std::vector<std::vector<int64_t>> batches, size_t depth);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // The next batch, or nullopt after the last one.
  std::optional<Batch> next();
  // CPU time the loader's thread has spent making batches so far.
  double threadCpuSeconds() const { return static_cast<double>(cpuNanos_.load()) * 1e-9; }

 private:
  void run();
  Batch make(const std::vector<int64_t>& indices);

  ShardedDataset& dataset_;
  std::vector<std::vector<int64_t>> batches_;
  size_t depth_;
  size_t consumed_ = 0;
  std::vector<uint8_t> raw_;  // uint8 rows before scaling (used by one thread only)

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::atomic<int64_t> cpuNanos_{0};
  std::thread worker_;
};

}  // namespace perennial::data
