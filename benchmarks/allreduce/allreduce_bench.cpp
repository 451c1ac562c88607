// perennial_bench_allreduce: all-reduce bandwidth, in the manner of nccl-tests' all_reduce_perf.
//
//   mpirun -np N build/bin/perennial_bench_allreduce [-b 8] [-e 64M] [-f 4] [-w 5] [-n 20]
//                                                    [--bucket-cap-mb 25] [--shared-memory 1] [--device cpu|cuda]
//                                                    [--json FILE]
//
// For each message size two paths are timed side by side:
//  - "bucketed": perennial::GradientReducer::reduce() over a model-like list of float32
//    tensors totalling that size, through the trainer's tensor communicator (what one training
//    step pays): MpiCommunicator on the CPU, with buckets of kMinSharedBytes and more summed in
//    memory the ranks share when they share a node (NOTE [Shared-memory all-reduce]; 0 with
//    --shared-memory 0, as comm.shared_memory false), NcclCommunicator for GPU tensors (--device cuda);
//  - "raw": one collective on one buffer of the same bytes: a blocking MPI_Allreduce(MPI_IN_PLACE,
//    float, SUM) on MPI_COMM_WORLD on the CPU; on a GPU one ncclAllReduce through the NCCL
//    communicator (what the library can do at best for one buffer).
// The difference between them is the cost of Perennial's layer: bucketing, the private
// communicator, the shared-memory sum where it applies, and the division by N.
//
// This is the only benchmark translation unit that includes LibTorch headers.
#include <torch/torch.h>

#include <mpi.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/comm/mpi/mpi_communicator.h"
#include "trainer/device.h"

namespace po = boost::program_options;
using json = nlohmann::json;

namespace perennial::bench {
namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  size_t minBytes = 8;
  size_t maxBytes = 64ull << 20;
  size_t factor = 4;
  int warmupIters = 5;
  int iters = 20;
  double bucketCapMb = 25.0;
  int threads = 1;
  bool sharedMemory = true;
  std::string device = "cpu";
  bool check = true;
  std::string jsonPath;
};

// Timings and error counts of one path at one size, already combined across ranks.
struct PathResult {
  double medianUs = 0;
  double algBwGBs = 0;
  double busBwGBs = 0;
  int64_t wrong = 0;
};

struct Row {
  size_t bytes = 0;
  size_t count = 0;
  size_t tensors = 0;
  size_t buckets = 0;
  size_t sharedBuckets = 0;  // of them, in shared memory
  PathResult bucketed, raw;
};

// "64M" -> 67108864. Binary suffixes, as nccl-tests uses.
size_t parseSize(const std::string& flag, const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  double scale = 1;
  if (used > 0 && used + 1 == text.size()) {
    switch (text.back()) {
      case 'K': case 'k': scale = 1024.0; break;
      case 'M': case 'm': scale = 1024.0 * 1024; break;
      case 'G': case 'g': scale = 1024.0 * 1024 * 1024; break;
      default: used = 0;
    }
    if (used > 0) ++used;
  }
  if (used != text.size() || !(v > 0)) {
    throw ConfigError(flag + ": expected a positive size such as 8, 128K or 64M (got '" + text + "')");
  }
  return static_cast<size_t>(v * scale);
}

// Returns false when the program should exit without running (--help).
bool parseOptions(int argc, char** argv, Options& o, std::string& helpText) {
  po::options_description desc(
      "usage: mpirun -np N perennial_bench_allreduce [options]\n\n"
      "Times GradientReducer::reduce() (bucketed) against one MPI_Allreduce (raw) per size");
  std::string minText = "8", maxText = "64M";
  desc.add_options()
      ("help,h", "print this help")
      ("minbytes,b", po::value<std::string>(&minText)->default_value(minText), "smallest size in bytes (K/M/G suffixes)")
      ("maxbytes,e", po::value<std::string>(&maxText)->default_value(maxText), "largest size in bytes; always measured")
      ("stepfactor,f", po::value<size_t>(&o.factor)->default_value(o.factor), "multiply the size by this each step (>= 2)")
      ("warmup_iters,w", po::value<int>(&o.warmupIters)->default_value(o.warmupIters), "untimed iterations per size and path")
      ("iters,n", po::value<int>(&o.iters)->default_value(o.iters), "timed iterations per size and path (median reported)")
      ("check,c", po::value<int>()->default_value(1), "check results (1) or not (0)")
      ("bucket-cap-mb", po::value<double>(&o.bucketCapMb)->default_value(o.bucketCapMb, "25"), "GradientReducer bucket cap in MiB (PyTorch DDP uses 25)")
      ("threads", po::value<int>(&o.threads)->default_value(o.threads), "LibTorch intra-op threads per rank (the trainer's default is 1)")
      ("shared-memory", po::value<bool>(&o.sharedMemory)->default_value(o.sharedMemory, "1"), "reducer buckets in memory the ranks of one node share (1) or reduced by MPI_Allreduce (0): comm.shared_memory true or false")
      ("device", po::value<std::string>(&o.device)->default_value(o.device), "cpu | cuda: where the tensors live (cuda: through NCCL when built with it)")
      ("json", po::value<std::string>(&o.jsonPath), "also write the results as JSON to this file (rank 0)");
  po::variables_map vm;
  try {
    po::store(po::parse_command_line(argc, argv, desc), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    throw ConfigError(std::string("command line: ") + e.what());
  }
  if (vm.count("help")) {
    std::ostringstream os;
    os << desc;
    helpText = os.str();
    return false;
  }
  o.minBytes = parseSize("-b", minText);
  o.maxBytes = parseSize("-e", maxText);
  o.check = vm["check"].as<int>() != 0;
  if (o.minBytes % sizeof(float) != 0 || o.maxBytes % sizeof(float) != 0) {
    throw ConfigError("-b/-e: sizes must be multiples of 4 bytes (float32 elements)");
  }
  if (o.minBytes > o.maxBytes) throw ConfigError("-b: must not exceed -e");
  // MPI counts are int; the reducer's buckets are at most this too.
  if (o.maxBytes / sizeof(float) > static_cast<size_t>(INT32_MAX)) throw ConfigError("-e: too large for an int count");
  if (o.factor < 2) throw ConfigError("-f: must be at least 2");
  if (o.warmupIters < 0) throw ConfigError("-w: must be >= 0");
  if (o.iters < 1) throw ConfigError("-n: must be >= 1");
  if (!(o.bucketCapMb > 0)) throw ConfigError("--bucket-cap-mb: must be positive");
  if (o.threads < 1) throw ConfigError("--threads: must be >= 1");
  if (o.device != "cpu" && o.device != "cuda") throw ConfigError("--device: must be cpu or cuda (got '" + o.device + "')");
  return true;
}

std::vector<size_t> sweepSizes(const Options& o) {
  std::vector<size_t> sizes;
  for (size_t s = o.minBytes; s <= o.maxBytes; s *= o.factor) {
    sizes.push_back(s);
    if (s > o.maxBytes / o.factor) break;  // the next step would overflow or pass the end
  }
  // The end of the range is always measured, even when it is not min * factor^k
  // (8 B .. 64 MiB by 4 ends at 32 MiB otherwise).
  if (sizes.back() != o.maxBytes) sizes.push_back(o.maxBytes);
  return sizes;
}

// Splits COUNT elements into the parameter sizes of a plausible model: a stack of layers whose
// weights shrink geometrically (a few large matrices dominate, as in real networks), each
// followed by a bias of about sqrt(weight) elements. Mixed sizes matter: they exercise the
// bucket packing, and the largest tensors can exceed the cap and get buckets of their own.
std::vector<size_t> modelLikeSplit(size_t count) {
  constexpr int kLayers = 12;
  constexpr double kShrink = 0.7;
  double total = 0;
  for (int i = 0; i < kLayers; ++i) total += std::pow(kShrink, i);
  std::vector<size_t> wanted;
  for (int i = 0; i < kLayers; ++i) {
    const auto weight = static_cast<size_t>(static_cast<double>(count) * std::pow(kShrink, i) / total);
    if (weight == 0) continue;
    wanted.push_back(weight);
    wanted.push_back(std::max<size_t>(1, static_cast<size_t>(std::sqrt(static_cast<double>(weight)))));
  }
  // Rounding leaves the sum a little off COUNT: trim to fit, then give any remainder to the
  // first (largest) tensor, so the total is exact and every tensor is non-empty.
  std::vector<size_t> sizes;
  size_t left = count;
  for (size_t w : wanted) {
    if (left == 0) break;
    const size_t take = std::min(w, left);
    sizes.push_back(take);
    left -= take;
  }
  if (sizes.empty()) sizes.push_back(0);
  sizes.front() += left;
  return sizes;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Before MPI starts, the rank is only known from the launcher's environment.
bool leadByEnvironment() {
  for (const char* var : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"}) {
    if (const char* v = std::getenv(var)) return std::string(v) == "0";
  }
  return true;
}

double microsSince(Clock::time_point t) {
  return std::chrono::duration<double, std::micro>(Clock::now() - t).count();
}

// Combines one path's per-rank results: the slowest rank's median time (a collective is done
// when its last rank is), and wrong elements summed over ranks and iterations.
PathResult combine(const std::vector<double>& timesUs, int64_t wrong, size_t bytes, int world) {
  double t = median(timesUs);
  MPI_Allreduce(MPI_IN_PLACE, &t, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, &wrong, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  PathResult r;
  r.medianUs = t;
  r.algBwGBs = t > 0 ? static_cast<double>(bytes) / (t * 1e-6) / 1e9 : 0;
  // nccl-tests' bus bandwidth for all-reduce: each rank sends and receives 2(n-1)/n of the
  // buffer in a ring, so this is comparable across rank counts and with link speeds.
  r.busBwGBs = r.algBwGBs * 2.0 * (world - 1) / world;
  r.wrong = wrong;
  return r;
}

// Waits for the kernels queued on DEVICE (the fills), so that a timing covers the collective only.
void settle(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// COMM is the host (MPI) communicator; TCOMM the tensor communicator for DEVICE (the same one on
// the CPU).
Row measureSize(size_t bytes, const Options& o, MpiCommunicator& comm, Communicator& tcomm, const torch::Device& device) {
  const int world = comm.size();
  const int rank = comm.rank();
  const size_t count = bytes / sizeof(float);
  const float fill = static_cast<float>(rank + 1);
  // Closed forms: sum over ranks of (r + 1) is n(n+1)/2, exact in float for any sane n; the
  // reducer then divides by n, and (n+1)/2 is exact too (an integer or a half).
  const float expectSum = static_cast<float>(world) * static_cast<float>(world + 1) / 2.0f;
  const float expectMean = world > 1 ? expectSum / static_cast<float>(world) : fill;

  torch::NoGradGuard noGrad;
  std::vector<torch::Tensor> params;
  for (size_t n : modelLikeSplit(count)) {
    params.push_back(torch::zeros({static_cast<int64_t>(n)}, torch::TensorOptions().dtype(torch::kFloat32).device(device))
                         .set_requires_grad(true));
  }
  ReducerOptions ro;
  ro.capBytes = static_cast<size_t>(o.bucketCapMb * 1024 * 1024);
  ro.sharedMemory = o.sharedMemory;
  GradientReducer reducer(params, tcomm, ro);
  std::vector<float> raw(device.is_cpu() ? count : 0);
  torch::Tensor rawDevice = device.is_cpu() ? torch::Tensor()
                                            : torch::empty({static_cast<int64_t>(count)}, torch::TensorOptions().device(device));

  Row row;
  row.bytes = bytes;
  row.count = count;
  row.tensors = params.size();
  row.buckets = reducer.buckets().size();
  row.sharedBuckets = reducer.sharedBuckets();
  std::vector<double> bucketedUs, rawUs;
  int64_t bucketedWrong = 0, rawWrong = 0;
  // The two paths alternate within each iteration so that load from other processes on a
  // shared machine lands on both alike rather than on whichever ran second.
  for (int it = 0; it < o.warmupIters + o.iters; ++it) {
    const bool timed = it >= o.warmupIters;

    for (auto& p : params) p.mutable_grad().fill_(fill);
    settle(device);
    MPI_Barrier(MPI_COMM_WORLD);  // start together: time the collective, not rank skew
    auto t0 = Clock::now();
    reducer.reduce();
    if (timed) bucketedUs.push_back(microsSince(t0));
    if (o.check) {
      for (auto& p : params) bucketedWrong += p.grad().ne(expectMean).sum().item<int64_t>();
    }

    if (device.is_cpu()) {
      std::fill(raw.begin(), raw.end(), fill);
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = Clock::now();
      MPI_Allreduce(MPI_IN_PLACE, raw.data(), static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      if (timed) rawUs.push_back(microsSince(t0));
      if (o.check) rawWrong += std::count_if(raw.begin(), raw.end(), [&](float v) { return v != expectSum; });
    } else {
      rawDevice.fill_(fill);
      settle(device);
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = Clock::now();
      allReduceTensor(rawDevice, tcomm, ReduceOp::kSum);  // returns when the stream has finished it
      if (timed) rawUs.push_back(microsSince(t0));
      if (o.check) rawWrong += rawDevice.ne(expectSum).sum().item<int64_t>();
    }
  }
  row.bucketed = combine(bucketedUs, bucketedWrong, bytes, world);
  row.raw = combine(rawUs, rawWrong, bytes, world);
  return row;
}

void printHeader(const Options& o, Communicator& comm) {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  std::printf("# perennial_bench_allreduce: %d rank(s), %s (%s) on %s, %s tensors\n", comm.size(),
              comm.backend().c_str(), comm.backendVersion().c_str(), host, o.device.c_str());
  std::printf("# minBytes %zu maxBytes %zu step x%zu warmup %d iters %d check %d bucket cap %g MiB, "
              "%d torch thread(s) per rank\n",
              o.minBytes, o.maxBytes, o.factor, o.warmupIters, o.iters, o.check ? 1 : 0,
              o.bucketCapMb, o.threads);
  std::printf("# bucketed: GradientReducer::reduce() over a model-like tensor list via the %s communicator "
              "(sum, then / n); buckets of %zu bytes and more in shared memory where the ranks share a node: %s\n",
              comm.backend().c_str(), kMinSharedBytes, o.sharedMemory ? "yes (--shared-memory 1)" : "no (--shared-memory 0)");
  std::printf("# raw:      %s\n", o.device == "cpu" ? "one blocking MPI_Allreduce(MPI_IN_PLACE, MPI_FLOAT, MPI_SUM) on MPI_COMM_WORLD"
                                                      : "one all-reduce of one device buffer through the same communicator");
  std::printf("# time: median over iterations of the slowest rank; busbw = algbw * 2(n-1)/n; "
              "#wrong: over all ranks and iterations\n#\n");
  // Group labels centred over each path's four columns (data columns 55-87 and 88-120).
  std::printf("#%54s%-33s%-33s\n", "", " ------ bucketed (reducer) ------", " ------- raw MPI_Allreduce -------");
  std::printf("# %10s %12s %7s %5s %7s %7s %9s %7s %7s %6s %9s %7s %7s %6s\n", "size", "count", "type",
              "redop", "tensors", "buckets", "time", "algbw", "busbw", "#wrong", "time", "algbw",
              "busbw", "#wrong");
  std::printf("# %10s %12s %7s %5s %7s %7s %9s %7s %7s %6s %9s %7s %7s %6s\n", "(B)", "(elements)", "",
              "", "", "", "(us)", "(GB/s)", "(GB/s)", "", "(us)", "(GB/s)", "(GB/s)", "");
  std::fflush(stdout);
}

void printRow(const Row& r) {
  std::printf("  %10zu %12zu %7s %5s %7zu %7zu %9.1f %7.2f %7.2f %6lld %9.1f %7.2f %7.2f %6lld\n",
              r.bytes, r.count, "float", "sum", r.tensors, r.buckets, r.bucketed.medianUs,
              r.bucketed.algBwGBs, r.bucketed.busBwGBs, static_cast<long long>(r.bucketed.wrong),
              r.raw.medianUs, r.raw.algBwGBs, r.raw.busBwGBs, static_cast<long long>(r.raw.wrong));
  std::fflush(stdout);
}

std::string utcNow() {
  std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

json toJson(const PathResult& p) {
  return {{"time_us", p.medianUs}, {"algbw_gbs", p.algBwGBs}, {"busbw_gbs", p.busBwGBs}, {"wrong", p.wrong}};
}

void writeJson(const std::string& path, const Options& o, Communicator& comm, const std::vector<Row>& rows) {
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  json j = {{"benchmark", "allreduce"},
            {"date", utcNow()},
            {"host", host},
            {"ranks", comm.size()},
            {"backend", comm.backend()},
            {"backend_version", comm.backendVersion()},
            {"type", "float32"},
            {"redop", "sum"},
            {"warmup_iters", o.warmupIters},
            {"iters", o.iters},
            {"bucket_cap_mb", o.bucketCapMb},
            {"threads", o.threads},
            {"shared_memory", o.sharedMemory},
            {"device", o.device},
            {"time", "median over iterations of the slowest rank, microseconds"},
            {"rows", json::array()}};
  for (const Row& r : rows) {
    j["rows"].push_back({{"bytes", r.bytes},
                         {"count", r.count},
                         {"tensors", r.tensors},
                         {"buckets", r.buckets},
                         {"shared_buckets", r.sharedBuckets},
                         {"bucketed", toJson(r.bucketed)},
                         {"raw", toJson(r.raw)}});
  }
  std::ofstream out(path, std::ios::trunc);
  out << j.dump(2) << "\n";
  if (!out) throw IoError(path + ": cannot write the JSON results");
}

int run(int argc, char** argv) {
  Options o;
  std::string helpText;
  // Every rank parses the same arguments, so all of them agree on whether to go on.
  if (!parseOptions(argc, argv, o, helpText)) {
    if (leadByEnvironment()) std::cout << helpText << "\n";
    return 0;
  }
  MpiCommunicator comm(std::chrono::minutes(10));
  const bool lead = comm.rank() == 0;
  torch::set_num_threads(o.threads);
  // The tensor communicator the trainer would use for this device (trainer/device.h).
  const TrainDevice dev = resolveDevice(o.device);
  std::unique_ptr<Communicator> owned =
      makeTensorCommunicator(comm, "auto", dev.cudaIndex(), computeStream(dev), std::chrono::minutes(10), nullptr);
  Communicator& tcomm = owned ? *owned : comm;
  if (lead) printHeader(o, tcomm);

  std::vector<Row> rows;
  for (size_t bytes : sweepSizes(o)) {
    rows.push_back(measureSize(bytes, o, comm, tcomm, dev.device));
    if (lead) printRow(rows.back());
  }
  int64_t wrong = 0;
  double bucketedBus = 0, rawBus = 0;
  for (const Row& r : rows) {
    wrong += r.bucketed.wrong + r.raw.wrong;
    bucketedBus += r.bucketed.busBwGBs;
    rawBus += r.raw.busBwGBs;
  }
  if (lead) {
    std::printf("# Out of bounds values : %lld %s\n", static_cast<long long>(wrong), wrong ? "FAILED" : "OK");
    std::printf("# Avg bus bandwidth    : bucketed %.4f GB/s, raw %.4f GB/s\n#\n",
                bucketedBus / static_cast<double>(rows.size()), rawBus / static_cast<double>(rows.size()));
    if (!o.jsonPath.empty()) writeJson(o.jsonPath, o, tcomm, rows);
  }
  return wrong == 0 ? 0 : 1;
}

}  // namespace
}  // namespace perennial::bench

int main(int argc, char** argv) {
  try {
    return perennial::bench::run(argc, argv);
  } catch (const perennial::ConfigError& e) {
    // Bad flags fail identically on every rank (before MPI starts): one message is enough.
    if (perennial::bench::leadByEnvironment()) std::cerr << "perennial_bench_allreduce: error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "perennial_bench_allreduce: error: " << e.what() << "\n";
    // The other ranks may be blocked in a collective this rank will never join.
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
  }
}
