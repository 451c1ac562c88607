// The bare LibTorch peer of `perennial train` for the throughput benchmark: the same MLP
// (784-256-10, nn::Sequential(Flatten, Linear, ReLU, Linear)), batch, optimiser (torch::optim::SGD,
// lr 0.05, momentum 0.9) and data, in the shortest loop LibTorch allows: zero_grad, forward,
// cross-entropy, backward, step. No data loading (the training set is read and shuffled once
// before the clock starts; each batch is a view of 64 consecutive rows), no communication, no
// bookkeeping beyond reading the loss. Timed in windows of --log-every steps like Perennial's
// metrics.jsonl, with the same step-time breakdown as result.json's step_time_ms.
//
// usage: perennial_bench_bare_loop --data DIR [--steps 3000] [--batch-size 64] [--hidden 256]
//        [--log-every 100] [--lr 0.05] [--momentum 0.9] [--seed 42] --out FILE
// Run it pinned to one core (taskset -c 0) with OMP_NUM_THREADS=OPENBLAS_NUM_THREADS=1, as
// benchmarks/throughput/run.sh does.
#include <torch/torch.h>
#include <torch/version.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainer/blas_info.h"
#include "dataset/shard_dataset.h"
#include "trainer/step_timer.h"

namespace {

using Clock = std::chrono::steady_clock;

const char* kUsage =
    "usage: perennial_bench_bare_loop --data DIR [--steps 3000] [--batch-size 64] [--hidden 256] [--log-every 100]\n"
    "                                 [--lr 0.05] [--momentum 0.9] [--seed 42] --out FILE\n"
    "Trains the MLP 784-HIDDEN-10 with LibTorch alone on DIR/train (Perennial shards) and writes its\n"
    "timing windows to FILE (JSON). See BENCHMARKS.md.\n";

}  // namespace

int main(int argc, char** argv) {
  std::string data, out;
  int64_t steps = 3000, batch = 64, hidden = 256, logEvery = 100, seed = 42;
  double lr = 0.05, momentum = 0.9;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      std::printf("%s", kUsage);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "perennial_bench_bare_loop: %s needs a value\n%s", a.c_str(), kUsage);
      return 2;
    }
    const std::string v = argv[++i];
    try {
      if (a == "--data") data = v;
      else if (a == "--out") out = v;
      else if (a == "--steps") steps = std::stoll(v);
      else if (a == "--batch-size") batch = std::stoll(v);
      else if (a == "--hidden") hidden = std::stoll(v);
      else if (a == "--log-every") logEvery = std::stoll(v);
      else if (a == "--seed") seed = std::stoll(v);
      else if (a == "--lr") lr = std::stod(v);
      else if (a == "--momentum") momentum = std::stod(v);
      else {
        std::fprintf(stderr, "perennial_bench_bare_loop: unknown option %s\n%s", a.c_str(), kUsage);
        return 2;
      }
    } catch (const std::exception&) {
      std::fprintf(stderr, "perennial_bench_bare_loop: %s: not a number: %s\n", a.c_str(), v.c_str());
      return 2;
    }
  }
  if (data.empty() || out.empty() || steps < 1 || batch < 1 || hidden < 1 || logEvery < 1) {
    std::fprintf(stderr, "perennial_bench_bare_loop: --data and --out are required; counts must be >= 1\n%s", kUsage);
    return 2;
  }
  torch::set_num_threads(1);
  perennial::setBlasThreads(1);

  // The whole training set, scaled to [0, 1] and shuffled once (outside the timed loop).
  perennial::data::ShardedDataset ds(data + "/train");
  const int64_t n = ds.size(), fe = ds.spec().featureElements();
  std::vector<uint8_t> raw(static_cast<size_t>(n * fe));
  torch::Tensor labels = torch::empty({n}, torch::kInt64);
  ds.readRange(0, n, raw.data(), labels.data_ptr<int64_t>());
  std::vector<int64_t> shape{n};
  shape.insert(shape.end(), ds.spec().featureShape.begin(), ds.spec().featureShape.end());
  torch::Tensor images = torch::from_blob(raw.data(), shape, torch::kUInt8).to(torch::kFloat32).div_(255.0);
  torch::manual_seed(static_cast<uint64_t>(seed));
  torch::Tensor order = torch::randperm(n, torch::kInt64);
  images = images.index_select(0, order).contiguous();
  labels = labels.index_select(0, order).contiguous();
  const int64_t perEpoch = n / batch;

  torch::nn::Sequential model(torch::nn::Flatten(), torch::nn::Linear(fe, hidden), torch::nn::ReLU(),
                              torch::nn::Linear(hidden, ds.spec().numClasses));
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(lr).momentum(momentum));

  perennial::StepTimer timer;
  nlohmann::json windows = nlohmann::json::array();
  double windowLoss = 0;
  int64_t windowSteps = 0;
  auto windowStart = Clock::now();
  timer.resume();
  for (int64_t step = 0; step < steps; ++step) {
    const int64_t at = (step % perEpoch) * batch;
    torch::Tensor x = images.narrow(0, at, batch), y = labels.narrow(0, at, batch);
    timer.lap(perennial::StepTimer::kLoader);
    opt.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(x), y);
    timer.lap(perennial::StepTimer::kForward);
    loss.backward();
    timer.lap(perennial::StepTimer::kBackward);
    opt.step();
    timer.lap(perennial::StepTimer::kOptimizer);
    timer.countStep();
    windowLoss += loss.item<float>();
    ++windowSteps;
    if ((step + 1) % logEvery == 0 || step + 1 == steps) {
      const double secs = std::chrono::duration<double>(Clock::now() - windowStart).count();
      windows.push_back({{"first_step", step + 2 - windowSteps},
                         {"last_step", step + 1},
                         {"seconds", secs},
                         {"samples_per_second", static_cast<double>(windowSteps * batch) / secs},
                         {"loss", windowLoss / static_cast<double>(windowSteps)},
                         {"crosses_epoch", false}});
      windowLoss = 0;
      windowSteps = 0;
      windowStart = Clock::now();
    }
    timer.lap(perennial::StepTimer::kOther);
  }
  nlohmann::json breakdown = nlohmann::json::object();
  for (const auto& [phase, ms] : timer.millisecondsPerStep()) breakdown[phase] = ms;
  const perennial::BlasInfo blas = perennial::detectBlas();
  nlohmann::json result = {{"system", "bare-libtorch"},
                           {"torch_version", TORCH_VERSION},
                           {"ranks", 1},
                           {"steps", steps},
                           {"batch_size", batch},
                           {"global_batch", batch},
                           {"hidden", hidden},
                           {"log_every", logEvery},
                           {"lr", lr},
                           {"momentum", momentum},
                           {"torch_threads", torch::get_num_threads()},
                           {"blas", blas.vendor + " " + blas.library},
                           {"train_samples", n},
                           {"step_time_ms", breakdown},
                           {"windows", windows}};
  std::ofstream(out) << result.dump(1) << "\n";
  return 0;
}
