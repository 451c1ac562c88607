#pragma once
// The distributed sampler: which samples each rank sees in each epoch.
//
// Each epoch e draws a permutation P_e of [0, N) from (seed, e) alone. With world size W, rank r
// takes P_e[r], P_e[r + W], P_e[r + 2W], ...: floor(N / W) samples, disjoint across ranks; the
// last N mod W entries of P_e are left out of epoch e (a different set each epoch).
//
// Why interleaved: rank r's j-th sample is P_e[j*W + r], so the k-th global batch (B samples per
// rank) is P_e[k*B*W .. (k+1)*B*W) whatever W is. Runs at different world sizes with the same
// global batch see the same samples per step, and a global sample cursor c (samples consumed by
// all ranks together in this epoch) maps to position c / W in every rank's list.
//
// The permutation uses std::mt19937_64 (fully specified by the C++ standard) and its own bounded
// integer draw, never std::uniform_int_distribution (implementation-defined), so the order is the
// same across compilers and standard libraries.
#include <cstdint>
#include <vector>

namespace perennial::data {

class DistributedSampler {
 public:
  DistributedSampler(int64_t numSamples, int worldSize, int rank, uint64_t seed);

  int64_t samplesPerRank() const { return numSamples_ / worldSize_; }
  // This rank's sample indices for EPOCH, in the order they are consumed, starting after the
  // first CURSOR entries of the permutation (samples all ranks together already consumed this
  // epoch): rank r takes P[cursor + r], P[cursor + r + W], ... With cursor 0 that is the list
  // above; with the cursor of a checkpoint it continues it exactly at the same world size, and
  // re-shards the rest of the epoch at another.
  std::vector<int64_t> indices(int64_t epoch, int64_t cursor = 0) const;

  // The full permutation for EPOCH (the same on every rank).
  static std::vector<int64_t> permutation(int64_t n, uint64_t seed, int64_t epoch);

 private:
  int64_t numSamples_;
  int worldSize_;
  int rank_;
  uint64_t seed_;
};

}  // namespace perennial::data
