#include "trainer/data/distributed_sampler.h"

#include <random>

#include "common/error.h"

namespace perennial::data {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Uniform integer in [0, bound) by rejection: unbiased and fully specified.
uint64_t bounded(std::mt19937_64& g, uint64_t bound) {
  const uint64_t limit = UINT64_MAX - (UINT64_MAX % bound);
  uint64_t x;
  do {
    x = g();
  } while (x >= limit);
  return x % bound;
}

}  // namespace

DistributedSampler::DistributedSampler(int64_t numSamples, int worldSize, int rank, uint64_t seed)
    : numSamples_(numSamples), worldSize_(worldSize), rank_(rank), seed_(seed) {
  PERENNIAL_CHECK(numSamples >= 0, "numSamples " << numSamples);
  PERENNIAL_CHECK(worldSize >= 1 && rank >= 0 && rank < worldSize,
                  "rank " << rank << " of world size " << worldSize);
}

std::vector<int64_t> DistributedSampler::permutation(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  std::mt19937_64 g(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(epoch) + 1)));
  for (int64_t i = n - 1; i > 0; --i) {
    auto j = static_cast<int64_t>(bounded(g, static_cast<uint64_t>(i) + 1));
    std::swap(p[i], p[j]);
  }
  return p;
}

std::vector<int64_t> DistributedSampler::indices(int64_t epoch, int64_t cursor) const {
  PERENNIAL_CHECK(cursor >= 0 && cursor <= numSamples_, "cursor " << cursor << " of " << numSamples_);
  std::vector<int64_t> perm = permutation(numSamples_, seed_, epoch);
  std::vector<int64_t> out(static_cast<size_t>((numSamples_ - cursor) / worldSize_));
  for (size_t j = 0; j < out.size(); ++j) out[j] = perm[cursor + j * worldSize_ + rank_];
  return out;
}

std::vector<std::vector<int64_t>> DistributedSampler::microBatches(const std::vector<int64_t>& mine, int64_t steps,
                                                                   int64_t accum, int64_t batch) {
  PERENNIAL_CHECK(steps >= 0 && accum >= 1 && batch >= 1 && steps * accum * batch <= static_cast<int64_t>(mine.size()),
                  steps << " steps of " << accum << " x " << batch << " from " << mine.size() << " indices");
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(steps * accum));
  for (int64_t s = 0; s < steps; ++s) {
    for (int64_t m = 0; m < accum; ++m) {
      std::vector<int64_t>& micro = out[static_cast<size_t>(s * accum + m)];
      micro.reserve(static_cast<size_t>(batch));
      for (int64_t i = 0; i < batch; ++i) micro.push_back(mine[static_cast<size_t>(s * accum * batch + i * accum + m)]);
    }
  }
  return out;
}

}  // namespace perennial::data
