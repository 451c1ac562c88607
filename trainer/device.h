#pragma once
// The device a rank trains on (train.device), and what goes with it: determinism settings, the
// stream the tensor communicator enqueues on, and the device's random-generator state.
//
// NOTE [GPU determinism]: with train.deterministic = true (the default) a CUDA run sets what
// LibTorch allows before the first CUDA call: deterministic algorithms (an operation without a
// deterministic CUDA implementation then fails with LibTorch's message naming it, instead of
// silently varying), deterministic cuDNN with benchmarking off, CUBLAS_WORKSPACE_CONFIG=:4096:8
// (cuBLAS's reproducibility requirement), and NCCL_ALGO=Ring, NCCL_PROTO=Simple (so NCCL's
// tuning cannot pick a different reduction order from one run to the next). Variables already
// set in the environment win. The same run on the same GPU model, driver, library versions and
// world size then gives the same param_sha256; a CPU run and a GPU run of one configuration
// give different ones (different kernels), and checkpoints move freely between them.
#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "trainer/comm/communicator.h"

namespace perennial {

struct TrainDevice {
  torch::Device device{torch::kCPU};
  std::string reason;  // why this device, for the log

  bool cuda() const { return device.is_cuda(); }
  int cudaIndex() const { return cuda() ? device.index() : -1; }  // -1 on the CPU
  std::string name() const { return device.str(); }               // "cpu", "cuda:0"
};

// Resolves a device setting (auto | cpu | cuda), train.device or KEY. cuda takes the GPU of the
// rank's node-local index LOCAL (gpuForLocalRank: LOCAL.rank modulo the visible GPUs; NOTE [Rank
// placement]). Throws ConfigError naming KEY, and what is missing when cuda is asked for and
// unavailable (a LibTorch without CUDA, or no GPU visible), or the values allowed; auto falls
// back to the CPU and says why in `reason`.
TrainDevice resolveDevice(const std::string& setting, const LocalRank& local, const std::string& key = "train.device");
// The same with the launcher's local rank (launcherLocalRank()), for single-process commands.
TrainDevice resolveDevice(const std::string& setting, const std::string& key = "train.device");

// Applies NOTE [GPU determinism] for DEVICE (nothing on the CPU, whose kernels are deterministic
// already). Returns a description of what was set, for the log.
std::string configureDeterminism(const TrainDevice& device, bool deterministic);

// The cudaStream_t LibTorch computes on for DEVICE (its current stream), or nullptr: the CPU, or
// a LibTorch whose CUDA headers this build does not use (then the default stream, LibTorch's
// own default).
void* computeStream(const TrainDevice& device);

// The state of DEVICE's default generator (dropout on a GPU draws from it); empty on the CPU.
std::vector<uint8_t> deviceGeneratorState(const TrainDevice& device);
void setDeviceGeneratorState(const TrainDevice& device, const std::vector<uint8_t>& state);
// Seeds DEVICE's default generator alone (a run resumed on a GPU from a checkpoint without GPU
// generator state: its CPU generator is restored, the GPU's starts from SEED).
void seedDeviceGenerator(const TrainDevice& device, uint64_t seed);

// Whether this build's LibTorch has CUDA (PERENNIAL_TORCH_CUDA), and its GPU count (0 without).
bool torchHasCuda();
int64_t cudaDeviceCount();

}  // namespace perennial
