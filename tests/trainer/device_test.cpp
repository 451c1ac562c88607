// The training device (train.device) and what depends on it: device resolution, the choice of
// the tensor communicator, collectives on tensors wherever they live, checkpoints that move
// between devices, and exact resume. The tests run on the best device this build and machine
// have: a GPU where LibTorch has CUDA and one is visible (benchmarks/gpu/device_check.sh runs
// them there), else the CPU, so the device-independent code paths are tested everywhere.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "perennial/build_config.h"
#include "tiny_dataset.h"
#include "trainer/checkpointing.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/comm/mpi/mpi_communicator.h"
#include "trainer/device.h"
#include "trainer/models/model_factory.h"
#include "trainer/trainer.h"

namespace perennial {
namespace {

TrainDevice best() { return resolveDevice("auto"); }

// One rank whose all-reduce adds 1 to every float and whose broadcast writes 7s: what a
// collective did is visible in the values, wherever the caller's tensor lives.
class MarkingComm : public Communicator {
 public:
  explicit MarkingComm(bool device = false) : device_(device) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return device_ ? "device-fake" : "host-fake"; }
  std::string backendVersion() const override { return "0"; }
  bool deviceMemory() const override { return device_; }
  void allReduce(void* data, size_t count, DType, ReduceOp) override {
    auto* f = static_cast<float*>(data);
    for (size_t i = 0; i < count; ++i) f[i] += 1.0f;
  }
  void broadcast(void* data, size_t bytes, int) override { std::memset(data, 7, bytes); }
  void allGather(const void* in, void* out, size_t bytes) override { std::memcpy(out, in, bytes); }
  void barrier() override {}

 private:
  bool device_;
};

// Sets an environment variable for one scope, restoring what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    value ? ::setenv(name, value, 1) : ::unsetenv(name);
  }
  ~ScopedEnv() { had_ ? ::setenv(name_, old_.c_str(), 1) : ::unsetenv(name_); }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(Device, ResolvesTheSettingOrSaysWhatIsMissing) {
  TrainDevice cpu = resolveDevice("cpu");
  EXPECT_FALSE(cpu.cuda());
  EXPECT_EQ(cpu.name(), "cpu");
  EXPECT_EQ(cpu.cudaIndex(), -1);
  try {
    resolveDevice("gpu", "--device");
    FAIL() << "a device setting other than auto, cpu or cuda was accepted";
  } catch (const ConfigError& e) {
    EXPECT_STREQ(e.what(), "--device: must be auto, cpu or cuda (got 'gpu')");
  }
  if (cudaDeviceCount() > 0) {
    EXPECT_TRUE(resolveDevice("auto").cuda());
    EXPECT_TRUE(resolveDevice("cuda").cuda());
    return;
  }
  TrainDevice automatic = resolveDevice("auto");
  EXPECT_FALSE(automatic.cuda());
  EXPECT_EQ(automatic.reason.rfind("auto: ", 0), 0u) << automatic.reason;
  try {
    resolveDevice("cuda");
    FAIL() << "train.device = cuda was accepted without a GPU";
  } catch (const ConfigError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("train.device: 'cuda' is not available: "), std::string::npos) << what;
    EXPECT_NE(what.find(torchHasCuda() ? "sees no GPU" : "LibTorch has no CUDA"), std::string::npos) << what;
    EXPECT_NE(what.find("(available: cpu)"), std::string::npos) << what;
  }
}

TEST(Device, LocalRankComesFromTheLauncher) {
  ScopedEnv ompi("OMPI_COMM_WORLD_LOCAL_RANK", nullptr), slurm("SLURM_LOCALID", nullptr),
      mpich("MPI_LOCALRANKID", nullptr), pmix("PMIX_LOCAL_RANK", nullptr);
  EXPECT_EQ(launcherLocalRank(), 0);
  {
    ScopedEnv s("SLURM_LOCALID", "2");
    EXPECT_EQ(launcherLocalRank(), 2);
    ScopedEnv o("OMPI_COMM_WORLD_LOCAL_RANK", "3");
    EXPECT_EQ(launcherLocalRank(), 3) << "mpirun's variable comes first";
  }
  ScopedEnv bad("OMPI_COMM_WORLD_LOCAL_RANK", "x1");
  EXPECT_EQ(launcherLocalRank(), 0) << "a malformed value is ignored";
}

// A rank that MPI_COMM_TYPE_SHARED places second of two on its node.
class SecondOnNodeComm : public MarkingComm {
 public:
  RankPlacement placement() const override {
    RankPlacement p;
    p.host = "node2";
    p.localRank = 1;
    p.localSize = 2;
    p.hosts = {"node1", "node1", "node2", "node2"};
    return p;
  }
};

TEST(Device, LocalRankFromTheLauncherElseFromMpi) {
  ScopedEnv ompi("OMPI_COMM_WORLD_LOCAL_RANK", nullptr), slurm("SLURM_LOCALID", nullptr),
      mpich("MPI_LOCALRANKID", nullptr), pmix("PMIX_LOCAL_RANK", nullptr);
  SecondOnNodeComm comm;
  EXPECT_EQ(comm.placement().nodes(), 2);
  LocalRank l = localRankOf(comm);
  EXPECT_EQ(l.rank, 1);
  EXPECT_EQ(l.size, 2);
  EXPECT_EQ(l.source, "MPI_COMM_TYPE_SHARED");
  EXPECT_EQ(l.note, "");
  {
    ScopedEnv s("SLURM_LOCALID", "1");
    l = localRankOf(comm);
    EXPECT_EQ(l.rank, 1);
    EXPECT_EQ(l.source, "SLURM_LOCALID");
    EXPECT_EQ(l.note, "") << "they agree";
  }
  ScopedEnv s("SLURM_LOCALID", "0");
  l = localRankOf(comm);
  EXPECT_EQ(l.rank, 0) << "the launcher's local rank wins";
  EXPECT_NE(l.note.find("SLURM_LOCALID=0 but MPI_COMM_TYPE_SHARED gives local rank 1 of 2"), std::string::npos) << l.note;
}

TEST(Device, TheGpuIsTheLocalRankModuloTheGpusVisible) {
  EXPECT_EQ(gpuForLocalRank(0, 2), 0);
  EXPECT_EQ(gpuForLocalRank(1, 2), 1);
  EXPECT_EQ(gpuForLocalRank(3, 2), 1);
  EXPECT_EQ(gpuForLocalRank(3, 4), 3);
  EXPECT_EQ(gpuForLocalRank(5, 1), 0);
  EXPECT_THROW(gpuForLocalRank(0, 0), InternalError);
  if (cudaDeviceCount() > 0) {
    LocalRank local;
    local.rank = 1;
    local.source = "test";
    EXPECT_EQ(resolveDevice("cuda", local).cudaIndex(), gpuForLocalRank(1, cudaDeviceCount()));
  }
}

TEST(Device, TensorCommunicatorFollowsTheDevice) {
  MarkingComm host;
  const auto timeout = std::chrono::seconds(5);
  std::string why;
  EXPECT_EQ(makeTensorCommunicator(host, "auto", -1, nullptr, timeout, &why), nullptr);
  EXPECT_EQ(why, "auto: CPU tensors use MPI");
  EXPECT_EQ(makeTensorCommunicator(host, "mpi", -1, nullptr, timeout, &why), nullptr);
  try {
    makeTensorCommunicator(host, "nccl", -1, nullptr, timeout, &why);
    FAIL() << "NCCL was accepted for CPU tensors";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("comm.backend: 'nccl' reduces GPU tensors"), std::string::npos) << e.what();
  }
  // comm.backend = mpi on a GPU: the host communicator, staging through host memory.
  EXPECT_EQ(makeTensorCommunicator(host, "mpi", 0, nullptr, timeout, &why), nullptr);
  EXPECT_NE(why.find("staged through host memory"), std::string::npos) << why;
  if (!PERENNIAL_HAVE_NCCL) {
    EXPECT_EQ(makeTensorCommunicator(host, "auto", 0, nullptr, timeout, &why), nullptr);
    EXPECT_NE(why.find("this build has no NCCL"), std::string::npos) << why;
    EXPECT_THROW(makeTensorCommunicator(host, "nccl", 0, nullptr, timeout, &why), ConfigError);
  }
}

TEST(Device, CollectivesReachTensorsWhereverTheyLive) {
  const TrainDevice dev = best();
  MarkingComm host;
  torch::Tensor t = torch::arange(6, torch::TensorOptions().dtype(torch::kFloat32).device(dev.device));
  allReduceTensor(t, host, ReduceOp::kSum);
  EXPECT_EQ(t.device(), dev.device) << "the tensor stays where it was";
  EXPECT_TRUE(torch::equal(t.cpu(), torch::arange(6, torch::kFloat32) + 1)) << "the result is copied back";
  torch::Tensor b = torch::zeros({3}, torch::TensorOptions().dtype(torch::kUInt8).device(dev.device));
  broadcastTensor(b, host, 0);
  EXPECT_TRUE(torch::equal(b.cpu(), torch::full({3}, 7, torch::kUInt8)));
  // A communicator of GPU memory never gets a CPU pointer.
  MarkingComm deviceComm(/*device=*/true);
  torch::Tensor onCpu = torch::zeros({2});
  EXPECT_THROW(allReduceTensor(onCpu, deviceComm, ReduceOp::kSum), InternalError);
}

// Trains a small MLP one step on DEVICE (so the optimizer has momentum buffers).
struct Trained {
  Model model;
  std::unique_ptr<torch::optim::SGD> optimizer;
};
Trained trainedOneStep(const torch::Device& device) {
  TrainConfig c;
  c.arch = "mlp";
  c.hidden = {8};
  torch::manual_seed(3);
  Trained t{makeModel(c, {{4, 4}, 3}), nullptr};
  t.model->to(device);
  t.optimizer = std::make_unique<torch::optim::SGD>(t.model->parameters(), torch::optim::SGDOptions(0.1).momentum(0.9));
  auto x = torch::randn({8, 4, 4}).to(device);
  auto y = torch::randint(0, 3, {8}, torch::kInt64).to(device);
  torch::nn::functional::cross_entropy(t.model.forward(x), y).backward();
  t.optimizer->step();
  return t;
}

TEST(Device, CheckpointsMoveBetweenDevices) {
  const TrainDevice dev = best();
  for (const auto& [from, to] : {std::pair<torch::Device, torch::Device>{dev.device, torch::kCPU}, {torch::kCPU, dev.device}}) {
    Trained a = trainedOneStep(from);
    CheckpointMeta meta;
    meta.arch = "mlp";
    meta.optimizer = "sgd";
    meta.worldSize = 2;
    meta.rngStates = cpuGeneratorState();
    meta.rngStates.insert(meta.rngStates.end(), meta.rngStates.begin(), meta.rngStates.end());
    meta.deviceRngStates = {1, 2, 3, 4, 5, 6, 7, 8};  // 2 ranks x 4 bytes
    checkpoint::Document doc = captureState(*a.model, *a.optimizer, TrainProgress{0, 1, 8, 8}, meta, /*copy=*/true);

    Trained b = trainedOneStep(to);
    for (auto& p : b.model->parameters()) p.detach().zero_();
    RestoredState r = restoreState(doc, "test", *b.model, *b.optimizer, "sgd", /*rank=*/1, /*worldSize=*/2);
    auto pa = a.model->parameters(), pb = b.model->parameters();
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_EQ(pb[i].device(), to);
      EXPECT_TRUE(torch::equal(pa[i].cpu(), pb[i].cpu())) << "parameter " << i << " from " << from << " to " << to;
    }
    ASSERT_EQ(b.optimizer->state().size(), pa.size()) << "a momentum buffer per parameter";
    for (const auto& kv : b.optimizer->state()) {
      EXPECT_EQ(static_cast<torch::optim::SGDParamState&>(*kv.second).momentum_buffer().device(), to)
          << "momentum lives with its parameter";
    }
    // The momentum came across: one more step with the same gradients moves both alike.
    for (size_t i = 0; i < pa.size(); ++i) {
      pa[i].mutable_grad() = torch::ones_like(pa[i]);
      pb[i].mutable_grad() = torch::ones_like(pb[i]);
    }
    a.optimizer->step();
    b.optimizer->step();
    for (size_t i = 0; i < pa.size(); ++i) {
      EXPECT_TRUE(torch::allclose(pa[i].cpu(), pb[i].cpu(), 1e-6, 1e-7)) << "parameter " << i << " after a step";
    }
    EXPECT_EQ(r.deviceRngState, (std::vector<uint8_t>{5, 6, 7, 8})) << "rank 1's GPU generator state";
    // At another world size the generator states are not restored.
    EXPECT_TRUE(restoreState(doc, "test", *b.model, *b.optimizer, "sgd", 0, 3).deviceRngState.empty());
  }
}

TrainConfig tinyRun(const std::string& device) {
  TrainConfig c;
  c.arch = "mlp";
  c.trainDir = tinyDataset("device-train", 96);
  c.testDir = tinyDataset("device-test", 24);
  c.hidden = {8};
  c.dropout = 0.2;  // draws from the device's generator: resume must restore it
  c.batchSize = 8;
  c.epochs = 2;
  c.ckptEverySteps = 5;
  c.progress = "none";
  c.device = device;
  return c;
}

// Exact resume on the best device: a run stopped mid-epoch by train.max_steps and resumed ends
// with the same weights as an uninterrupted one; its model then evaluates on the CPU.
TEST(Device, ExactResumeAndCpuEvaluation) {
  const TrainDevice dev = best();
  MpiCommunicator comm(std::chrono::seconds(60));
  const std::string base = tinyDataset("device-runs", 1);
  TrainConfig c = tinyRun(dev.cuda() ? "cuda" : "cpu");
  const TrainResult whole = train(c, base + "/whole", comm);
  EXPECT_EQ(whole.steps, 24);
  TrainConfig stopped = c;
  stopped.maxSteps = 7;
  EXPECT_EQ(train(stopped, base + "/resumed", comm).steps, 7);
  TrainOptions resume;
  resume.resume = "auto";
  const TrainResult resumed = train(c, base + "/resumed", comm, resume);
  EXPECT_EQ(resumed.paramSha256, whole.paramSha256) << "resume on " << dev.name() << " is not exact";
  // Throughput counts only what this run trained: 17 steps of 8 samples.
  EXPECT_NEAR(resumed.samplesPerSecond * resumed.trainSeconds, 17 * 8, 1e-6);
  const TrainResult again = train(c, base + "/again", comm);
  EXPECT_EQ(again.paramSha256, whole.paramSha256) << "training on " << dev.name() << " is not repeatable";

  EvalSummary e = evaluateWeights(base + "/whole/model.h5", c.testDir, comm, 100, 0);
  EXPECT_EQ(e.paramSha256, whole.paramSha256) << "the CPU reads the weights the device wrote";
  EXPECT_NEAR(e.metrics.loss, whole.test.loss, 1e-4) << "CPU evaluation of weights trained on " << dev.name();
  EXPECT_EQ(e.device, "cpu");
  // perennial eval --device auto: the same numbers on the best device.
  EvalSummary onDevice = evaluateWeights(base + "/whole/model.h5", c.testDir, comm, 100, 2, true, "auto");
  EXPECT_EQ(onDevice.device, dev.name());
  EXPECT_EQ(onDevice.paramSha256, e.paramSha256);
  EXPECT_EQ(onDevice.metrics.samples, e.metrics.samples);
  EXPECT_NEAR(onDevice.metrics.loss, e.metrics.loss, 1e-4) << "evaluation on " << dev.name() << " against the CPU's";
  EXPECT_NEAR(onDevice.metrics.accuracy, e.metrics.accuracy, 1.0 / static_cast<double>(e.metrics.samples) + 1e-12);
  ASSERT_EQ(onDevice.logits.size(), 2u);
  EvalSummary cpuLogits = evaluateWeights(base + "/whole/model.h5", c.testDir, comm, 100, 2, true, "cpu");
  for (size_t i = 0; i < 2; ++i) {
    ASSERT_EQ(onDevice.logits[i].size(), cpuLogits.logits[i].size());
    for (size_t k = 0; k < cpuLogits.logits[i].size(); ++k) EXPECT_NEAR(onDevice.logits[i][k], cpuLogits.logits[i][k], 1e-4);
  }
  if (dev.cuda()) {
    // A run stopped on the GPU continues on the CPU from its checkpoint.
    EXPECT_EQ(train(stopped, base + "/gpu-then-cpu", comm).steps, 7);
    TrainConfig onCpu = c;
    onCpu.device = "cpu";
    EXPECT_EQ(train(onCpu, base + "/gpu-then-cpu", comm, resume).steps, 24);
  }
  std::filesystem::remove_all(base);
}

}  // namespace
}  // namespace perennial
