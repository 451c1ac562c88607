// Collectives and the bucketed reducer at the world size mpiexec gave (1, 2 and 3 from CTest).
// Expectations are in closed form: rank r contributes r (or r + 1), sums are n(n-1)/2.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <utility>

#include "common/error.h"
#include "common/half.h"
#include "trainer/comm/control_block.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/comm/mpi/mpi_communicator.h"
#include "trainer/comm/mpi/sum16.h"
#include "trainer/config/train_config.h"
#include "trainer/data/distributed_sampler.h"
#include "trainer/models/model_factory.h"
#include "trainer/optim/fused_optimizer.h"

namespace perennial {
namespace {

MpiCommunicator& comm() {
  static MpiCommunicator c(std::chrono::seconds(60));
  return c;
}

// Passes collectives through to BASE and counts the all-reduces.
class RecordingCount : public Communicator {
 public:
  explicit RecordingCount(Communicator& base) : base_(base) {}
  int rank() const override { return base_.rank(); }
  int size() const override { return base_.size(); }
  std::string backend() const override { return base_.backend(); }
  std::string backendVersion() const override { return base_.backendVersion(); }
  void allReduce(void* data, size_t count, DType type, ReduceOp op) override {
    ++reduces;
    base_.allReduce(data, count, type, op);
  }
  void broadcast(void* data, size_t bytes, int root) override { base_.broadcast(data, bytes, root); }
  void* sharedHostBuffer(size_t bytes) override { return base_.sharedHostBuffer(bytes); }
  void allGather(const void* in, void* out, size_t bytes) override { base_.allGather(in, out, bytes); }
  void barrier() override { base_.barrier(); }
  size_t reduces = 0;

 private:
  Communicator& base_;
};

TEST(Mpi, AllReduceSumMaxMinInClosedForm) {
  const int n = comm().size(), r = comm().rank();
  std::vector<float> f(1000, static_cast<float>(r));
  comm().allReduceSum(f.data(), f.size());
  for (float v : f) ASSERT_EQ(v, static_cast<float>(n * (n - 1) / 2));
  std::vector<int64_t> i{r, 10 * r};
  comm().allReduce(i.data(), 2, DType::kInt64, ReduceOp::kMax);
  EXPECT_EQ(i[0], n - 1);
  EXPECT_EQ(i[1], 10 * (n - 1));
  double d = r + 0.5;
  comm().allReduce(&d, 1, DType::kFloat64, ReduceOp::kMin);
  EXPECT_EQ(d, 0.5);
}

TEST(Mpi, BroadcastAndAllGather) {
  const int n = comm().size(), r = comm().rank();
  std::vector<int32_t> v(17, r == n - 1 ? 42 : -1);
  comm().broadcast(v.data(), v.size() * sizeof(int32_t), n - 1);
  for (int32_t x : v) ASSERT_EQ(x, 42);
  int32_t mine = 100 + r;
  std::vector<int32_t> all(static_cast<size_t>(n));
  comm().allGather(&mine, all.data(), sizeof(int32_t));
  for (int k = 0; k < n; ++k) EXPECT_EQ(all[k], 100 + k);
  comm().barrier();
}

TEST(Mpi, ReducerAveragesEveryBucket) {
  const int n = comm().size(), r = comm().rank();
  // Parameters of assorted sizes, one above the 1 KiB cap: several buckets.
  std::vector<torch::Tensor> params;
  for (int64_t size : {3, 300, 1, 700, 50}) params.push_back(torch::zeros({size}).requires_grad_());
  ReducerOptions o;
  o.capBytes = 1024;
  o.sharedMemory = true;  // asked for, but every bucket is under kMinSharedBytes
  GradientReducer reducer(params, comm(), o);
  EXPECT_GE(reducer.buckets().size(), 2u);
  reducer.zeroGrad();
  for (size_t k = 0; k < params.size(); ++k) {
    // grad = r + k on rank r: the average is (n - 1) / 2 + k.
    (params[k] * static_cast<float>(r + static_cast<int>(k))).sum().backward();
  }
  reducer.reduce();
  EXPECT_EQ(reducer.sharedBuckets(), 0u) << "buckets under kMinSharedBytes stay with MPI";
  for (size_t k = 0; k < params.size(); ++k) {
    const float want = static_cast<float>(n - 1) / 2.0f + static_cast<float>(k);
    EXPECT_TRUE(torch::allclose(params[k].grad(), torch::full_like(params[k], want)))
        << "param " << k << " got " << params[k].grad()[0].item<float>() << " want " << want;
  }
}

TEST(Mpi, BroadcastParametersMakesReplicasEqual) {
  const int r = comm().rank();
  std::vector<torch::Tensor> params{torch::full({5, 3}, static_cast<float>(r)), torch::full({7}, static_cast<float>(r) * 2)};
  GradientReducer reducer(params, comm(), 32);
  reducer.broadcastParameters(0);
  EXPECT_TRUE(torch::equal(params[0], torch::zeros({5, 3})));
  EXPECT_TRUE(torch::equal(params[1], torch::zeros({7})));
}

TEST(Mpi, SamplerSlicesAreDisjointAcrossRealRanks) {
  const int n = comm().size(), r = comm().rank();
  const int64_t samples = 1003;
  data::DistributedSampler sampler(samples, n, r, 11);
  auto mine = sampler.indices(4);
  std::vector<int64_t> all(mine.size() * static_cast<size_t>(n));
  comm().allGather(mine.data(), all.data(), mine.size() * sizeof(int64_t));
  std::vector<int> hits(samples, 0);
  for (int64_t i : all) ++hits[i];
  int64_t covered = 0;
  for (int h : hits) {
    ASSERT_LE(h, 1);
    covered += h;
  }
  EXPECT_EQ(covered, samples / n * n);
}

// bfloat16 and half all-reduce (comm.compression) in closed form: rank r contributes r + 1 (exact
// in both types for these world sizes), and a value below the narrow type's precision is rounded.
TEST(Mpi, SixteenBitSumsInClosedForm) {
  const int n = comm().size(), r = comm().rank();
  const float want = static_cast<float>(n * (n + 1) / 2);
  std::vector<uint16_t> b(37, floatToBf16(static_cast<float>(r + 1)));
  comm().allReduce(b.data(), b.size(), DType::kBFloat16, ReduceOp::kSum);
  for (uint16_t v : b) ASSERT_EQ(bf16ToFloat(v), want);
  std::vector<uint16_t> h(37, floatToHalf(static_cast<float>(r + 1)));
  comm().allReduce(h.data(), h.size(), DType::kFloat16, ReduceOp::kSum);
  for (uint16_t v : h) ASSERT_EQ(halfToFloat(v), want);
  EXPECT_THROW(comm().allReduce(h.data(), h.size(), DType::kFloat16, ReduceOp::kMax), InternalError);
}

// Parameters p_k (k = 0..4) whose gradient on rank r is r + k + 1/3 (not exact in 16 bits); on
// ranks > 0 parameter 3 takes no part (its bucket must still be reduced, with zeros from them).
struct ToyGrads {
  std::vector<torch::Tensor> params;
  ToyGrads() {
    for (int64_t size : {3, 300, 1, 700, 50}) params.push_back(torch::zeros({size}).requires_grad_());
  }
  torch::Tensor loss(int rank) const {
    torch::Tensor l = torch::zeros({});
    for (size_t k = 0; k < params.size(); ++k) {
      if (k == 3 && rank > 0) continue;
      l = l + (params[k] * (static_cast<float>(rank + static_cast<int>(k)) + 1.0f / 3.0f)).sum();
    }
    return l;
  }
};

// comm.overlap: buckets reduced by the hooks during backward come out bitwise as reduce() after
// backward gives them, with compression or without, and the step after behaves the same.
TEST(Mpi, OverlappedReductionIsBitwiseReductionAfterBackward) {
  for (const Compression compression : {Compression::kNone, Compression::kBFloat16}) {
    ToyGrads plain, overlapped;
    ReducerOptions o;
    o.capBytes = 1024;
    o.compression = compression;
    GradientReducer after(plain.params, comm(), o);
    o.overlap = true;
    GradientReducer during(overlapped.params, comm(), o);
    ASSERT_GE(after.buckets().size(), 2u);
    EXPECT_EQ(during.overlapping(), comm().size() > 1);
    for (int step = 0; step < 3; ++step) {
      after.zeroGrad();
      during.zeroGrad();
      plain.loss(comm().rank()).backward();
      after.reduce(/*prescaled=*/true);
      during.expectBackward(/*prescaled=*/true);
      overlapped.loss(comm().rank()).backward();
      during.reduce(/*prescaled=*/true);
      if (during.overlapping()) {
        // The hooks, not the end of backward, started every bucket whose gradients all came: all
        // of them on rank 0, all but parameter 3's elsewhere.
        size_t complete = 0;
        for (const Bucket& b : during.buckets()) {
          bool all = true;
          for (const BucketEntry& e : b.entries) all = all && !(e.param == 3 && comm().rank() > 0);
          complete += all;
        }
        EXPECT_EQ(during.bucketsReadyBeforeReduce(), complete);
      }
      for (size_t k = 0; k < plain.params.size(); ++k) {
        const torch::Tensor& a = plain.params[k].grad();
        const torch::Tensor& b = overlapped.params[k].grad();
        ASSERT_EQ(std::memcmp(a.data_ptr(), b.data_ptr(), static_cast<size_t>(a.numel()) * 4), 0)
            << "parameter " << k << ", step " << step << ", compression " << static_cast<int>(compression);
      }
    }
    // The sums are those of the narrow type when compressed: the sum over ranks of r + k + 1/3.
    const int n = comm().size();
    for (size_t k = 0; k < plain.params.size(); ++k) {
      double exact = 0;
      for (int r = 0; r < n; ++r) exact += (k == 3 && r > 0) ? 0.0 : r + static_cast<double>(k) + 1.0 / 3.0;
      const double got = plain.params[k].grad()[0].item<float>();
      const double tolerance = compression == Compression::kNone || n == 1 ? 1e-5 : (2.0 * n) * std::ldexp(exact, -8);
      EXPECT_NEAR(got, exact, tolerance) << "parameter " << k;
    }
  }
}

// The hooks also fire once the parameters live in flat buckets (NOTE [Flat parameters]: set_()
// re-homes them after the reducer was built), and the fused step after an overlapped reduction
// gives the weights of one after a plain reduction.
TEST(Mpi, OverlapHooksFireOnFlatParameters) {
  TrainConfig c;
  c.hidden = {13};
  c.momentum = 0.9;
  std::vector<torch::Tensor> weights;
  for (const bool overlap : {false, true}) {
    torch::manual_seed(5);
    Model m = makeModel(c, ModelInput{{3, 5}, 4});
    ReducerOptions o;
    o.capBytes = 64 * 4;  // several buckets
    o.overlap = overlap;
    GradientReducer reducer(m->parameters(), comm(), o);
    auto opt = makeOptimizer(c, m->parameters(),
                             std::make_shared<FlatBuckets>(m->parameters(), reducer.buckets(), reducer.gradBuffers()));
    torch::manual_seed(100 + comm().rank());
    for (int step = 0; step < 3; ++step) {
      reducer.zeroGrad();
      torch::Tensor loss = torch::nn::functional::cross_entropy(m.forward(torch::randn({6, 3, 5})),
                                                               torch::randint(0, 4, {6}, torch::kInt64)) /
                           static_cast<double>(comm().size());
      reducer.expectBackward(/*prescaled=*/true);
      loss.backward();
      reducer.reduce(/*prescaled=*/true);
      if (reducer.overlapping()) {
        EXPECT_EQ(reducer.bucketsReadyBeforeReduce(), reducer.buckets().size());
      }
      opt->step();
    }
    torch::Tensor flat = torch::cat([&] {
      std::vector<torch::Tensor> ps;
      for (const auto& p : m->parameters()) ps.push_back(p.detach().reshape({-1}));
      return ps;
    }());
    weights.push_back(flat.clone());
  }
  EXPECT_TRUE(torch::equal(weights[0], weights[1]));
}

// NOTE [Control block]: the stop flag of one rank reaches all, each rank's loss arrives exact
// (float32 wire) or to 24 bits (bfloat16 wire), in the same collective as the gradients.
TEST(Mpi, ControlBlockRidesInTheLastBucket) {
  const int n = comm().size(), r = comm().rank();
  for (const Compression compression : {Compression::kNone, Compression::kBFloat16, Compression::kFloat16}) {
    ToyGrads toy;
    ReducerOptions o;
    o.capBytes = 1024;
    o.compression = compression;
    o.controlSlots = controlSlots(n);
    RecordingCount counting(comm());
    GradientReducer reducer(toy.params, counting, o);
    reducer.zeroGrad();
    const double mine = 1000.0 * r + 0.123456789;
    torch::Tensor ctl = reducer.control();
    ASSERT_EQ(static_cast<size_t>(ctl.numel()), controlSlots(n));
    encodeControl(ctl.data_ptr<float>(), n, r, /*stop=*/r == n - 1, mine, reducer.controlWireType());
    toy.loss(r).backward();
    reducer.reduce(/*prescaled=*/true);
    EXPECT_EQ(counting.reduces, reducer.buckets().size()) << "no collective beyond the buckets'";
    const ControlValues v = decodeControl(ctl.data_ptr<float>(), n);
    EXPECT_TRUE(v.stop);
    double want = 0;
    for (int k = 0; k < n; ++k) want += 1000.0 * k + 0.123456789;
    if (compression == Compression::kNone || n == 1) {
      EXPECT_EQ(v.lossSum, want);
    } else {
      EXPECT_NEAR(v.lossSum, want, std::ldexp(std::abs(want), -22));
    }
    // The gradients around the block are unaffected by it.
    const double grad0 = n * (n - 1) / 2.0 + n / 3.0;
    EXPECT_NEAR(toy.params[0].grad()[0].item<float>(), grad0, std::ldexp(grad0, -6));
  }
}

// NOTE [Shared-memory all-reduce]. Rank R's contribution: values in [-1, 1) that few sums
// represent exactly, the same wherever they are computed.
std::vector<float> contributionOf(int rank, size_t count) {
  std::mt19937 gen(1234u + static_cast<unsigned>(rank));
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> v(count);
  for (float& x : v) x = dist(gen);
  return v;
}

// Where the shared-memory path is switched off for the test (CTest's mpi.np2.no_shared_memory
// runs with Open MPI's osc/sm component excluded), sharedHostBuffer must give nullptr everywhere.
bool sharedMemoryExpected() {
  const char* osc = std::getenv("OMPI_MCA_osc");
  return comm().size() > 1 && !(osc && std::string(osc) == "^sm");
}

// Sums COUNT values of type T at OFFSET elements into a shared window, with guards either side,
// and checks them against the rank-order sum (ADD(in, inout): inout = in + inout) computed here
// from every rank's contribution; at two ranks also against MPI_Allreduce of the same values in
// ordinary memory. Checks never return early: every rank makes the same collective calls.
template <typename T, typename From, typename Add>
void checkSharedSum(DType type, size_t count, size_t offset, From from, Add add) {
  const int n = comm().size(), r = comm().rank();
  const uint64_t before = comm().sharedReductions();
  void* mem = comm().sharedHostBuffer((offset + count + 1) * sizeof(T));
  if (!sharedMemoryExpected()) {
    EXPECT_EQ(mem, nullptr) << "no shared memory at world size 1 or without osc/sm";
    return;
  }
  if (mem == nullptr) {  // the same on every rank: they agree on it
    ADD_FAILURE() << "every rank of this test runs on one host, yet no shared memory";
    return;
  }
  T* part = static_cast<T*>(mem);
  EXPECT_EQ(std::count(part, part + offset + count + 1, T(0)), static_cast<std::ptrdiff_t>(offset + count + 1))
      << "the memory comes zeroed";
  auto convert = [&](int rank) {
    std::vector<T> v;
    for (float x : contributionOf(rank, count)) v.push_back(from(x));
    return v;
  };
  const std::vector<T> mine = convert(r);
  std::copy(mine.begin(), mine.end(), part + offset);
  if (offset > 0) part[offset - 1] = from(-7.0f);
  part[offset + count] = from(-9.0f);
  comm().allReduce(part + offset, count, type, ReduceOp::kSum);
  EXPECT_EQ(comm().sharedReductions(), before + 1) << "the sum took the shared-memory path";

  std::vector<T> want = convert(0);
  for (int q = 1; q < n; ++q) add(convert(q).data(), want.data(), count);
  EXPECT_EQ(std::memcmp(part + offset, want.data(), count * sizeof(T)), 0) << "rank order, bit for bit, count " << count;
  if (offset > 0) {
    EXPECT_EQ(part[offset - 1], from(-7.0f)) << "memory before the range is left alone";
  }
  EXPECT_EQ(part[offset + count], from(-9.0f)) << "memory after the range is left alone";
  if (n == 2) {
    std::vector<T> plain = mine;
    comm().allReduce(plain.data(), count, type, ReduceOp::kSum);  // ordinary memory: MPI_Allreduce
    EXPECT_EQ(std::memcmp(part + offset, plain.data(), count * sizeof(T)), 0) << "two ranks: MPI's bits";
  }
  // Every rank holds what rank 0 holds.
  std::vector<T> all(count * static_cast<size_t>(n));
  comm().allGather(part + offset, all.data(), count * sizeof(T));
  for (int q = 1; q < n; ++q) {
    EXPECT_EQ(std::memcmp(all.data(), all.data() + count * static_cast<size_t>(q), count * sizeof(T)), 0);
  }
}

TEST(Mpi, SharedMemorySumIsRankOrderOnEveryRank) {
  auto addFloats = [](const auto* in, auto* inout, size_t k) {
    for (size_t i = 0; i < k; ++i) inout[i] = in[i] + inout[i];
  };
  // An odd count (shares end inside cache lines), at an offset that is no multiple of a line;
  // counts smaller than a line per rank (some shares empty); the whole part.
  for (const auto& [count, offset] : {std::pair<size_t, size_t>{10007, 5}, {7, 3}, {1, 0}, {40, 16}, {4096, 0}}) {
    checkSharedSum<float>(DType::kFloat32, count, offset, [](float x) { return x; }, addFloats);
    checkSharedSum<double>(DType::kFloat64, count, offset, [](float x) { return static_cast<double>(x) / 3.0; },
                           addFloats);
    checkSharedSum<uint16_t>(DType::kBFloat16, count, offset, floatToBf16, sumBf16Scalar);
    checkSharedSum<uint16_t>(DType::kFloat16, count, offset, floatToHalf, sumHalfScalar);
  }
}

// A reducer whose buckets are in shared memory gives the gradients a reducer through
// MPI_Allreduce gives (bitwise at two ranks; beyond, to rounding), after backward or during it
// (comm.overlap), with or without compression, with the control block riding along and no
// collective beyond one per bucket.
TEST(Mpi, SharedMemoryReducerMatchesMpiAllreduce) {
  const int n = comm().size(), r = comm().rank();
  struct Grads {
    std::vector<torch::Tensor> params;
    Grads() {
      for (int64_t size : {6000, 5, 5000, 1}) params.push_back(torch::zeros({size}).requires_grad_());
    }
    void backward(int rank) const {
      torch::Tensor l = torch::zeros({});
      for (size_t k = 0; k < params.size(); ++k) {
        l = l + (params[k] * torch::linspace(-1.0, 1.0, params[k].numel()) * (rank + static_cast<double>(k) + 1.0 / 3.0))
                    .sum();
      }
      l.backward();
    }
  };
  for (const Compression compression : {Compression::kNone, Compression::kBFloat16}) {
    for (const bool overlap : {false, true}) {
      Grads viaMpi, viaShared;
      ReducerOptions o;
      o.capBytes = 24 << 10;  // two buckets of 24 KB and 20 KB: compressed too, above kMinSharedBytes
      o.compression = compression;
      o.sharedMemory = false;
      GradientReducer plain(viaMpi.params, comm(), o);
      o.sharedMemory = true;
      o.overlap = overlap;
      o.controlSlots = controlSlots(n);
      RecordingCount counting(comm());
      GradientReducer shared(viaShared.params, counting, o);
      EXPECT_EQ(shared.buckets().size(), 2u);
      EXPECT_EQ(plain.sharedBuckets(), 0u);
      EXPECT_EQ(shared.sharedBuckets(), sharedMemoryExpected() ? 2u : 0u);
      for (int step = 0; step < 2; ++step) {
        plain.zeroGrad();
        shared.zeroGrad();
        encodeControl(shared.control().data_ptr<float>(), n, r, /*stop=*/false, 0.5 * r, shared.controlWireType());
        viaMpi.backward(r);
        plain.reduce(/*prescaled=*/true);
        counting.reduces = 0;
        const uint64_t sharedBefore = comm().sharedReductions();
        shared.expectBackward(/*prescaled=*/true);
        viaShared.backward(r);
        shared.reduce(/*prescaled=*/true);
        if (n > 1) {
          EXPECT_EQ(counting.reduces, 2u) << "one collective per bucket";
        }
        EXPECT_EQ(comm().sharedReductions() - sharedBefore, sharedMemoryExpected() ? 2u : 0u)
            << "the buckets were summed in shared memory";
        EXPECT_NEAR(decodeControl(shared.control().data_ptr<float>(), n).lossSum, 0.25 * n * (n - 1), 1e-6);
        for (size_t k = 0; k < viaMpi.params.size(); ++k) {
          const torch::Tensor& a = viaMpi.params[k].grad();
          const torch::Tensor& b = viaShared.params[k].grad();
          if (n <= 2) {
            EXPECT_TRUE(torch::equal(a, b)) << "param " << k << ", compression " << static_cast<int>(compression)
                                            << ", overlap " << overlap;
          } else {
            EXPECT_TRUE(torch::allclose(a, b, compression == Compression::kNone ? 1e-6 : 2e-2, 1e-6)) << "param " << k;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace perennial
