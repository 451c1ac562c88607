#pragma once
// Bounded prefetch of batches from a ShardedDataset on a background thread.
//
// The loader reads the batches it is given, in order, at most `depth` ahead of the consumer, so
// memory stays bounded (depth x batch size) and only the rows this rank needs are read. Features
// become float32 on the loader thread (uint8 images scaled to [0, 1]; float32 as stored). A read error is re-thrown to the
// consumer at the batch that failed.
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "trainer/data/shard_dataset.h"

namespace perennial::data {

struct Batch {
  int64_t rows = 0;
  std::vector<float> features;  // rows x featureElements (uint8 images scaled to [0, 1])
  std::vector<int64_t> labels;  // classification: one class per row
  std::vector<float> values;    // regression: one target value per row
};

class BatchLoader {
 public:
  // BATCHES: the global sample indices of each batch, consumed in order. DEPTH >= 1.
  BatchLoader(ShardedDataset& dataset, std::vector<std::vector<int64_t>> batches, size_t depth);
  ~BatchLoader();
  BatchLoader(const BatchLoader&) = delete;
  BatchLoader& operator=(const BatchLoader&) = delete;

  // The next batch, or nullopt after the last one.
  std::optional<Batch> next();

 private:
  void run();

  ShardedDataset& dataset_;
  std::vector<std::vector<int64_t>> batches_;
  size_t depth_;
  size_t consumed_ = 0;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Batch> ready_;
  std::exception_ptr error_;
  bool stop_ = false;
  std::thread worker_;
};

}  // namespace perennial::data
