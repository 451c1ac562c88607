#include "trainer/device.h"

#include <ATen/Context.h>
#include <torch/cuda.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common/error.h"
#include "perennial/build_config.h"
#include "trainer/comm/communicator.h"
#include "trainer/config/train_config.h"
#if PERENNIAL_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace perennial {
namespace {

// Sets NAME to VALUE unless the environment already has it; describes what happened.
std::string setDefaultEnv(const char* name, const char* value) {
  if (const char* had = std::getenv(name)) return std::string(name) + "=" + had + " (from the environment)";
  ::setenv(name, value, 0);
  return std::string(name) + "=" + value;
}

at::Generator defaultGenerator(const TrainDevice& d) { return at::globalContext().defaultGenerator(d.device); }

}  // namespace

bool torchHasCuda() { return PERENNIAL_TORCH_CUDA != 0; }

int64_t cudaDeviceCount() { return torchHasCuda() ? static_cast<int64_t>(torch::cuda::device_count()) : 0; }

TrainDevice resolveDevice(const std::string& setting, const std::string& key) {
  LocalRank local;
  local.rank = launcherLocalRank();
  local.source = "the launcher";
  return resolveDevice(setting, local, key);
}

TrainDevice resolveDevice(const std::string& setting, const LocalRank& local, const std::string& key) {
  TrainDevice d;
  checkDeviceSetting(setting, key);
  if (setting == "cpu") {
    d.reason = key + " = cpu";
    return d;
  }
  const int64_t gpus = cudaDeviceCount();
  std::string missing;
  if (!torchHasCuda()) {
    missing = "this build's LibTorch has no CUDA (Debian's libtorch is CPU-only; build against a CUDA LibTorch "
              "with -DTorch_DIR=..., docs/gpu.md)";
  } else if (gpus == 0) {
    const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
    missing = std::string("LibTorch has CUDA, but this process sees no GPU (no driver, or CUDA_VISIBLE_DEVICES=") +
              (visible ? visible : "unset") + ")";
  }
  if (!missing.empty()) {
    if (setting == "cuda") throw ConfigError(key + ": 'cuda' is not available: " + missing + " (available: cpu)");
    d.reason = "auto: " + missing + ", so the CPU";
    return d;
  }
  const int index = gpuForLocalRank(local.rank, gpus);
  d.device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(index));
  d.reason = (setting == "auto" ? "auto: " : key + " = cuda: ") + std::to_string(gpus) + " GPU(s) visible, local rank " +
             std::to_string(local.rank) + " (" + local.source + ") takes cuda:" + std::to_string(index);
  return d;
}

std::string configureDeterminism(const TrainDevice& device, bool deterministic) {
  if (!device.cuda()) return "CPU kernels (deterministic)";
  if (!deterministic) return "train.deterministic = false: LibTorch's and NCCL's fastest algorithms, not reproducible";
  std::string what = setDefaultEnv("CUBLAS_WORKSPACE_CONFIG", ":4096:8");
  what += ", " + setDefaultEnv("NCCL_ALGO", "Ring");
  what += ", " + setDefaultEnv("NCCL_PROTO", "Simple");
  at::globalContext().setDeterministicAlgorithms(true, /*warn_only=*/false);
  at::globalContext().setDeterministicCuDNN(true);
  at::globalContext().setBenchmarkCuDNN(false);
  return "deterministic algorithms, deterministic cuDNN without benchmarking, " + what;
}

void* computeStream(const TrainDevice& device) {
#if PERENNIAL_TORCH_CUDA
  if (device.cuda()) return c10::cuda::getCurrentCUDAStream(device.device.index()).stream();
#else
  (void)device;
#endif
  return nullptr;
}

std::vector<uint8_t> deviceGeneratorState(const TrainDevice& device) {
  if (!device.cuda()) return {};
  at::Generator gen = defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  torch::Tensor s = gen.get_state().contiguous();
  std::vector<uint8_t> out(static_cast<size_t>(s.numel()));
  std::memcpy(out.data(), s.data_ptr(), out.size());
  return out;
}

void setDeviceGeneratorState(const TrainDevice& device, const std::vector<uint8_t>& state) {
  if (!device.cuda()) return;
  torch::Tensor s = torch::empty({static_cast<int64_t>(state.size())}, torch::kUInt8);
  std::memcpy(s.data_ptr(), state.data(), state.size());
  at::Generator gen = defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(s);
}

void seedDeviceGenerator(const TrainDevice& device, uint64_t seed) {
  if (!device.cuda()) return;
  at::Generator gen = defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_current_seed(seed);
}

}  // namespace perennial
