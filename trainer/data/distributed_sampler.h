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

  // NOTE [Micro-batches]: the micro-batches of STEPS optimizer steps drawn from MINE (a rank's
  // indices()), ACCUM micro-batches of BATCH samples per step, in training order. Step s uses
  // MINE[s*A*B, (s+1)*A*B) (A = ACCUM, B = BATCH), one batch of A*B samples split by taking every
  // A-th: micro-batch m gets MINE[s*A*B + i*A + m], i < B. So with W ranks, micro-batch m of rank
  // r trains exactly the samples that rank m*W + r of a world of A*W ranks without accumulation
  // trains in the same step, and A micro-batches of B update like one batch of A*B: the same
  // samples, the gradient averaged the same way. Only the order of the floating-point sums
  // differs, and with A*W = 2 not even that (a sum of two terms does not depend on its order):
  // 1 rank x 2 micro-batches and 2 ranks x 1 give the same weights bit for bit.
  static std::vector<std::vector<int64_t>> microBatches(const std::vector<int64_t>& mine, int64_t steps, int64_t accum,
                                                        int64_t batch);

 private:
  int64_t numSamples_;
  int worldSize_;
  int rank_;
  uint64_t seed_;
};

}  // namespace perennial::data
