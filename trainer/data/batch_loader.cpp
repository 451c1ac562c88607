#include "trainer/data/batch_loader.h"

#include "common/error.h"

namespace perennial::data {

BatchLoader::BatchLoader(ShardedDataset& dataset, std::vector<std::vector<int64_t>> batches,
                         size_t depth)
    : dataset_(dataset), batches_(std::move(batches)), depth_(depth) {
  PERENNIAL_CHECK(depth_ >= 1, "prefetch depth must be at least 1");
  worker_ = std::thread([this] { run(); });
}

BatchLoader::~BatchLoader() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

void BatchLoader::run() {
  const DatasetSpec& spec = dataset_.spec();
  const int64_t fe = spec.featureElements();
  std::vector<uint8_t> raw;
  for (const auto& indices : batches_) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || ready_.size() < depth_; });
      if (stop_) return;
    }
    Batch b;
    try {
      b.rows = static_cast<int64_t>(indices.size());
      const size_t n = indices.size() * static_cast<size_t>(fe);
      void* targets = nullptr;
      if (spec.regression()) {
        b.values.resize(indices.size());
        targets = b.values.data();
      } else {
        b.labels.resize(indices.size());
        targets = b.labels.data();
      }
      if (spec.featureType == DType::kFloat32) {
        b.features.resize(n);
        dataset_.readRows(indices, b.features.data(), targets);
      } else {
        raw.resize(n);
        dataset_.readRows(indices, raw.data(), targets);
        b.features.resize(n);
        constexpr float kScale = 1.0f / 255.0f;
        for (size_t i = 0; i < n; ++i) b.features[i] = static_cast<float>(raw[i]) * kScale;
      }
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.push_back(std::move(b));
    }
    cv_.notify_all();
  }
}

std::optional<Batch> BatchLoader::next() {
  if (consumed_ == batches_.size()) return std::nullopt;
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !ready_.empty() || error_; });
  if (ready_.empty() && error_) std::rethrow_exception(error_);
  Batch b = std::move(ready_.front());
  ready_.pop_front();
  ++consumed_;
  lock.unlock();
  cv_.notify_all();
  return b;
}

}  // namespace perennial::data
