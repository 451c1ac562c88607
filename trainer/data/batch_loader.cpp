#include "trainer/data/batch_loader.h"

#include <time.h>

#include "common/error.h"

namespace perennial::data {
namespace {

int64_t threadCpuNanos() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

}  // namespace

BatchLoader::BatchLoader(ShardedDataset& dataset, std::vector<std::vector<int64_t>> batches,
                         size_t depth)
    : dataset_(dataset), batches_(std::move(batches)), depth_(depth) {
  if (depth_ > 0) worker_ = std::thread([this] { run(); });
}

BatchLoader::~BatchLoader() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

Batch BatchLoader::make(const std::vector<int64_t>& indices) {
  const DatasetSpec& spec = dataset_.spec();
  const int64_t fe = spec.featureElements();
  Batch b;
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
    raw_.resize(n);
    dataset_.readRows(indices, raw_.data(), targets);
    b.features.resize(n);
    constexpr float kScale = 1.0f / 255.0f;
    for (size_t i = 0; i < n; ++i) b.features[i] = static_cast<float>(raw_[i]) * kScale;
  }
  return b;
}

void BatchLoader::run() {
  for (const auto& indices : batches_) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || ready_.size() < depth_; });
      if (stop_) return;
    }
    const int64_t cpuStart = threadCpuNanos();
    Batch b;
    try {
      b = make(indices);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      error_ = std::current_exception();
      cv_.notify_all();
      return;
    }
    cpuNanos_ += threadCpuNanos() - cpuStart;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.push_back(std::move(b));
    }
    cv_.notify_all();
  }
}

std::optional<Batch> BatchLoader::next() {
  if (consumed_ == batches_.size()) return std::nullopt;
  if (depth_ == 0) return make(batches_[consumed_++]);
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
