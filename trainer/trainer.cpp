#include "trainer/trainer.h"

#include <sched.h>
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <future>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_store.h"
#include "common/elapsed.h"
#include "common/error.h"
#include "common/fault.h"
#include "common/fs_util.h"
#include "common/log.h"
#include "common/sha256.h"
#include "dataset/shard_dataset.h"
#include "perennial/build_config.h"
#include "trainer/blas_info.h"
#include "trainer/checkpoint_staging.h"
#include "trainer/checkpointing.h"
#include "trainer/comm/control_block.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/data/batch_loader.h"
#include "trainer/data/distributed_sampler.h"
#include "trainer/data_identity.h"
#include "trainer/device.h"
#include "trainer/evaluation.h"
#include "trainer/host_memory.h"
#include "trainer/models/model_factory.h"
#include "trainer/optim/fused_optimizer.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/progress.h"
#include "trainer/resume.h"
#include "trainer/run_dir.h"
#include "trainer/run_logs.h"
#include "trainer/run_outputs.h"
#include "trainer/step_timer.h"
#include "trainer/stop_signal.h"
#include "trainer/train_plan.h"

namespace perennial {
namespace {

void checkSameWeights(const std::string& localHash, Communicator& comm) {
  if (comm.size() == 1) return;
  std::vector<char> all(static_cast<size_t>(comm.size()) * 64);
  comm.allGather(localHash.data(), all.data(), 64);
  std::string mismatched;
  for (int r = 0; r < comm.size(); ++r) {
    std::string h(all.data() + r * 64, 64);
    if (h != std::string(all.data(), 64)) mismatched += (mismatched.empty() ? "" : ", ") + std::to_string(r);
  }
  if (!mismatched.empty()) {
    throw InternalError("ranks ended with different weights: rank(s) " + mismatched +
                        " differ from rank 0 (param_sha256 " + std::string(all.data(), 64) +
                        "); data-parallel replicas diverged");
  }
}

// NOTE [Buffers]: buffers (batch norm's running statistics) are updated by each rank's own
// forward passes, so replicas would drift apart. As PyTorch DDP's broadcast_buffers does, rank
// 0's buffers are broadcast to every rank, here after each optimizer step: all ranks then
// evaluate and checkpoint the same model, and a resumed run continues exactly. Models without
// buffers (the built-in ones) pay nothing.
void broadcastBuffers(torch::nn::Module& model, Communicator& comm) {
  if (comm.size() == 1) return;
  torch::NoGradGuard noGrad;
  for (auto& item : model.named_buffers()) {
    torch::Tensor& b = item.value();
    PERENNIAL_CHECK(b.is_contiguous(), "buffer " << item.key() << " is not contiguous");
    broadcastTensor(b, comm, 0);
  }
}

// "node1 (ranks 0-1), node2 (ranks 2-3)": the ranks of each host, in order of first appearance.
std::string ranksByHost(const std::vector<std::string>& hosts) {
  std::vector<std::pair<std::string, std::vector<int>>> groups;
  for (int r = 0; r < static_cast<int>(hosts.size()); ++r) {
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& g) { return g.first == hosts[r]; });
    if (it == groups.end()) it = groups.insert(groups.end(), {hosts[r], {}});
    it->second.push_back(r);
  }
  std::string out;
  for (const auto& [host, ranks] : groups) {
    std::string list;
    for (size_t i = 0; i < ranks.size(); ++i) {
      size_t j = i;
      while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
      list += (list.empty() ? "" : ",") + std::to_string(ranks[i]) + (j > i ? "-" + std::to_string(ranks[j]) : "");
      i = j;
    }
    out += (out.empty() ? "" : ", ") + host + (ranks.size() == 1 ? " (rank " : " (ranks ") + list + ")";
  }
  return out;
}


// The device a rank trains on, and the communicator that carries the model's tensors.
struct Placement {
  RankPlacement where;
  LocalRank local;
  TrainDevice dev;
  std::string determinism;  // configureDeterminism's account, for the log
  // NOTE [Two communicators] (communicator.h): the host communicator carries host values; this one
  // the model's tensors. Null: the host communicator carries both.
  std::unique_ptr<Communicator> tensorComm;
  std::string tensorCommWhy;
};

// The device first: determinism settings must precede the first CUDA call. A rank takes the GPU
// of its node-local rank (NOTE [Rank placement]). Collective: every rank must train on the same
// kind of device.
Placement placeRank(const TrainConfig& c, Communicator& comm) {
  auto log = log::get("train");
  const int world = comm.size();
  Placement p{comm.placement(), localRankOf(comm), {}, {}, nullptr, {}};
  p.dev = resolveDevice(c.device, p.local);
  p.determinism = configureDeterminism(p.dev, c.deterministic);
  // Every rank says where it runs: the host, its local rank and the GPU it takes by it, and the
  // interfaces its MPI traffic may use; rank 0 adds the layout of the whole job.
  log->info("on host {}: local rank {} of {} on this node (from {}); {}; MPI over TCP: {}", p.where.host, p.local.rank,
            p.local.size, p.local.source,
            p.dev.cuda() ? "trains on " + p.dev.name()
                         : "device cpu (on GPUs it would take local GPU " + std::to_string(p.local.rank) +
                               ": local rank modulo the GPUs visible)",
            p.where.network);
  if (!p.local.note.empty()) log->warn("{}", p.local.note);
  if (p.dev.cuda() && p.local.size > cudaDeviceCount()) {
    log->warn("{} ranks on this node share {} GPU(s)", p.local.size, cudaDeviceCount());
  }
  if (comm.rank() == 0 && world > 1) {
    log->info("world size {} on {} node(s): {}", world, p.where.nodes(), ranksByHost(p.where.hosts));
  }
  // The generator states gathered at each save, and the tensor communicator, assume one kind.
  int32_t cudaRanks = p.dev.cuda() ? 1 : 0;
  comm.allReduce(&cudaRanks, 1, DType::kInt32, ReduceOp::kSum);
  if (cudaRanks != 0 && cudaRanks != world) {
    throw ConfigError("train.device: " + c.device + " resolved to a GPU on " + std::to_string(cudaRanks) + " of " +
                      std::to_string(world) + " ranks (the others see no GPU); set train.device = cpu or cuda");
  }
  p.tensorComm = makeTensorCommunicator(comm, c.backend, p.dev.cudaIndex(), computeStream(p.dev),
                                        std::chrono::milliseconds(static_cast<int64_t>(c.timeoutS * 1000)),
                                        &p.tensorCommWhy);
  torch::set_num_threads(static_cast<int>(c.threads));
  setBlasThreads(static_cast<int>(c.threads));
  if (comm.rank() == 0) {
    BlasInfo blas = detectBlas();
    log->info("BLAS: {} ({}){}", blas.vendor, blas.library.empty() ? "not loaded" : blas.library,
              blas.config.empty() ? "" : ", " + blas.config);
    if (blas.isReference()) {
      log->warn("the reference BLAS is loaded: training runs about 15x slower; install OpenBLAS "
                "(apt-get install libopenblas0-pthread, or scripts/install-deps.sh)");
    }
  }
  return p;
}

// Initialised on the CPU from the shared seed (the same weights whatever the device), then moved.
Model initialModel(const TrainConfig& c, const data::DatasetSpec& spec, const TrainDevice& dev) {
  torch::manual_seed(c.seed);
  Model model = makeModel(c, modelInput(spec));
  model->to(dev.device);
  return model;
}

ReducerOptions reducerOptions(const TrainConfig& c, int world, size_t controlSlotCount) {
  ReducerOptions o;
  o.capBytes = static_cast<size_t>(c.bucketCapMb * 1024 * 1024);
  o.controlSlots = controlSlotCount;
  o.compression = parseCompression(c.compression);
  o.overlap = c.overlap;
  // NOTE [Shared-memory all-reduce]: auto only where the sum is bitwise MPI's (two ranks).
  o.sharedMemory = c.sharedMemory == "true" || (c.sharedMemory == "auto" && world == 2);
  return o;
}

checkpoint::Retention retentionOf(const TrainConfig& c, const std::string& keepBest) {
  checkpoint::Retention r;
  r.keepLast = c.ckptKeepLast;
  r.bestMetric = keepBest == "none" ? "" : keepBest;
  r.higherIsBetter = keepBest != "test_loss";
  return r;
}

int64_t countParameters(const std::vector<torch::Tensor>& params) {
  int64_t n = 0;
  for (const auto& p : params) n += p.numel();
  return n;
}

std::string sha256Hex(const std::string& text) { return toHex(sha256(text.data(), text.size())); }

// One training run, from its set-up to its outputs. The members are declared in the order they
// are built, so the constructor's initializer list reads as the set-up sequence: the device, the
// data and the plan (trainer/train_plan.h), the model, its gradient reducer and optimizer, the
// data's identity, the checkpoint store. train() then calls start(), trainEpoch() until it says
// the training is over, and finish().
class TrainRun {
 public:
  TrainRun(const TrainConfig& c, const std::string& runDir, Communicator& comm, const TrainOptions& options,
           SteadyClock::time_point wallStart)
      : c_(c),
        runDir_(runDir),
        comm_(comm),
        options_(options),
        wallStart_(wallStart),
        rank_(comm.rank()),
        world_(comm.size()),
        lead_(rank_ == 0),
        log_(log::get("train")),
        place_(placeRank(c, comm)),
        dev_(place_.dev),
        tcomm_(place_.tensorComm ? *place_.tensorComm : comm),
        trainSet_(c.trainDir),
        testSet_(c.testDir),
        spec_(trainSet_.spec()),
        plan_(planTraining(c, spec_, testSet_.spec(), trainSet_.size(), world_)),
        sampler_(trainSet_.size(), world_, rank_, c.seed),
        model_(initialModel(c, spec_, dev_)),
        params_(model_->parameters()),
        // NOTE [Control block]: on the CPU (tensors over the host communicator) the stop flag and
        // the loss window ride in the last gradient bucket; a GPU's bucket would need a
        // device-to-host read every step, so there they keep their own small host collectives.
        controlInBucket_(!place_.tensorComm && !dev_.cuda()),
        reducerOptions_(reducerOptions(c, world_, controlInBucket_ ? controlSlots(world_) : 0)),
        reducer_(params_, tcomm_, reducerOptions_),
        // NOTE [Flat parameters]: with optim.fused the parameters move into the reducer's bucket layout.
        optimizer_(makeOptimizer(c, params_,
                                 c.fusedOptimizer
                                     ? std::make_shared<FlatBuckets>(params_, reducer_.buckets(), reducer_.gradBuffers())
                                     : nullptr)),
        numParams_(countParameters(params_)),
        hasBuffers_(!model_->buffers().empty()),
        configText_(c.toIni()),
        configSha_(sha256Hex(configText_)),
        // Every rank: the shards are checked before anything is trained (NOTE [Data identity]).
        identity_(dataIdentity(trainSet_, c.snapshotFile, comm)),
        store_(runDir + "/" + run_dir::kCheckpoints, retentionOf(c, plan_.keepBest)),
        lossOptions_(torch::TensorOptions().dtype(torch::kDouble).device(dev_.device)),
        stepDonePoint_("step-done-rank-" + std::to_string(rank_)),
        staging_(/*pinned=*/dev_.cuda()) {
    PERENNIAL_CHECK(sampler_.samplesPerRank() / plan_.perStep == plan_.stepsPerEpoch,
                    "the plan's steps per epoch differ from the sampler's");
  }

  void start();
  bool trainEpoch();
  TrainResult finish();

 private:
  bool trainStep(data::BatchLoader& loader, const std::vector<std::vector<int64_t>>& logged, int64_t s);
  void endLogWindow(const ControlValues& control, double lr);
  bool agreeToStop(const ControlValues& control);
  void evaluateNow();
  void save(bool allowAsync);
  void checkInflight(bool wait);
  TrainResult baseResult() const;
  void choosePrefetch();
  // The test set is read from its shards: with data.prefetch = auto, kPrefetchAhead ahead.
  size_t evalPrefetch() const {
    return static_cast<size_t>(c_.prefetch == TrainConfig::kPrefetchAuto ? TrainConfig::kPrefetchAhead : c_.prefetch);
  }
  // For the start-up log: where the CPU gradient buckets live (NOTE [Shared-memory all-reduce],
  // NOTE [Huge pages]).
  std::string bucketPages() const {
    const auto& buffers = reducer_.gradBuffers();
    if (reducer_.sharedBuckets() > 0) {
      return fmt::format(" (reduced in memory the node's ranks share, {} of {}: two-shot all-reduce)",
                         reducer_.sharedBuckets(), buffers.size());
    }
    std::string unshared;
    const bool cpuBuckets = world_ > 1 && !buffers.empty() && buffers.front().is_cpu();
    const int nodes = tcomm_.placement().nodes();
    if (cpuBuckets && nodes == 1 && c_.sharedMemory == "auto" && !reducerOptions_.sharedMemory) {
      unshared = " (not in shared memory: comm.shared_memory = auto keeps MPI's order of sums beyond 2 ranks)";
    } else if (cpuBuckets && reducerOptions_.sharedMemory) {
      unshared = nodes > 1 ? fmt::format(" (not in shared memory: the ranks run on {} nodes)", nodes)
                           : fmt::format(" (not in shared memory: buckets under {} KiB, no room in /dev/shm or no window "
                                         "from MPI)", kMinSharedBytes >> 10);
    }
    if (buffers.empty() || !buffers.front().is_cpu() || static_cast<size_t>(buffers.front().nbytes()) < kMinHugePageBytes) {
      return unshared;
    }
    return unshared +
           (onHugePages(buffers.front()) ? " (in huge pages)" : " (in 4 KiB pages: transparent huge pages off or none free)");
  }

  // Set up by the constructor, in this order.
  const TrainConfig& c_;
  const std::string runDir_;
  Communicator& comm_;
  const TrainOptions options_;
  const SteadyClock::time_point wallStart_;
  const int rank_, world_;
  const bool lead_;
  const std::shared_ptr<spdlog::logger> log_;
  Placement place_;
  const TrainDevice& dev_;
  Communicator& tcomm_;
  data::ShardedDataset trainSet_, testSet_;
  const data::DatasetSpec& spec_;
  const TrainPlan plan_;
  data::DistributedSampler sampler_;
  Model model_;
  std::vector<torch::Tensor> params_;
  const bool controlInBucket_;
  const ReducerOptions reducerOptions_;
  GradientReducer reducer_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  const int64_t numParams_;
  const bool hasBuffers_;
  const std::string configText_, configSha_;
  const DataIdentity identity_;
  checkpoint::CheckpointStore store_;
  const torch::TensorOptions lossOptions_;
  const std::string stepDonePoint_;  // NOTE [Fault points]: reached after each step

  // Set by start().
  TrainProgress progress_;
  Normalization norm_;
  std::string resumedFrom_;
  int64_t lastSavedStep_ = -1;  // a checkpoint of this step exists: never re-save (and uncommit) it
  LrSchedule schedule_;
  int64_t stopAt_ = 0;
  int64_t samplesBefore_ = 0;  // trained before a resume: not this run's time
  std::optional<MetricsLog> metrics_;
  std::optional<SampleLog> sampleLog_;
  std::optional<Progress> bar_;
  std::optional<StopSignals> signals_;

  // The training's state.
  EvalMetrics lastEval_;
  int64_t lastEvalStep_ = -1;
  double trainSeconds_ = 0;
  bool preempted_ = false;
  StepTimer timer_;
  // The loss is summed where it is computed and read once per log window: on a GPU, reading it
  // every step would make the host wait for the GPU before it could queue the backward pass. On
  // the CPU it is read as it comes (no tensor arithmetic per step).
  torch::Tensor windowLoss_;
  double windowLossHost_ = 0;
  int64_t windowSteps_ = 0;
  SteadyClock::time_point windowStart_;
  double windowPaused_ = 0;  // evaluation and checkpoint time inside the window: not training
  // NOTE [Staging buffers]: allocated at the first asynchronous save. Declared before INFLIGHT_, so
  // that a save still writing from it is waited for (the future's destructor) before it is freed.
  StagingBuffers staging_;
  std::future<void> inflight_;  // at most one asynchronous save, written from STAGING_
  size_t prefetch_ = 0;         // data.prefetch, resolved by choosePrefetch (NOTE [Loader placement])
};

// NOTE [Loader placement]: a loader thread makes batches ahead while the training thread computes,
// which hides reading shards, and costs nothing where a core is free for it. When the rows come
// from memory (data.cache_mb) a batch is a gather and copy of its rows (about 25 us for 64
// Fashion-MNIST rows), and when the rank's CPUs are all taken by its compute threads (one core
// per rank, as `mpirun --bind-to core` gives) the thread only takes that time from compute, plus
// two context switches per batch. data.prefetch = auto therefore makes each batch on the training
// thread (0) in that case: cached rows, a CPU rank, and no more CPUs in its affinity mask than
// train.threads; otherwise kPrefetchAhead (4) ahead. In the throughput benchmark (BENCHMARKS.md) 0 gave 1-2% more
// samples/s there. Batches, and so the weights, are the same either way.
void TrainRun::choosePrefetch() {
  if (c_.prefetch != TrainConfig::kPrefetchAuto) {
    prefetch_ = static_cast<size_t>(c_.prefetch);
    return;
  }
  cpu_set_t mask;
  CPU_ZERO(&mask);
  const int cpus = sched_getaffinity(0, sizeof mask, &mask) == 0 ? CPU_COUNT(&mask) : 0;
  const bool onTrainingThread = trainSet_.cached() && !dev_.cuda() && cpus > 0 && cpus <= c_.threads;
  prefetch_ = onTrainingThread ? 0 : static_cast<size_t>(TrainConfig::kPrefetchAhead);
  if (lead_) {
    const std::string why = !trainSet_.cached() ? "rows read from the shards"
                            : dev_.cuda()       ? "training on a GPU"
                                                : fmt::format("{} CPU(s) for {} compute thread(s)", cpus, c_.threads);
    log_->info("data.prefetch auto: {} ({})",
               onTrainingThread ? std::string("each batch made on the training thread")
                                : fmt::format("{} batches made ahead on a loader thread", TrainConfig::kPrefetchAhead),
               onTrainingThread ? "rows in memory, " + why : why);
  }
}

// Resume or warm start, equal replicas, normalization, generators; then the run directory's
// config.ini, the logs, and the signal handlers.
void TrainRun::start() {
  // NOTE [Row cache]: after the identity check, so the rows cached are the bytes checked.
  if (c_.cacheMb > 0) {
    const auto t0 = SteadyClock::now();
    if (trainSet_.cacheInMemory(static_cast<size_t>(c_.cacheMb) << 20) && lead_) {
      log_->info("training set read into memory ({} rows, {:.2f} s; data.cache_mb)", trainSet_.size(), secondsSince(t0));
    }
  }
  choosePrefetch();
  const StartingPoint from =
      startingPoint(options_.resume, c_, plan_, trainSet_.size(), spec_, dev_, {configText_, configSha_, identity_.snapshot},
                    store_, *model_, *optimizer_, norm_, comm_);
  progress_ = from.progress;
  resumedFrom_ = from.resumedFrom;
  if (!resumedFrom_.empty()) lastSavedStep_ = progress_.step;
  reducer_.broadcastParameters(0);
  broadcastBuffers(*model_, tcomm_);
  if (!norm_.active() && wantsNormalization(c_, spec_)) {
    const auto t0 = SteadyClock::now();
    computeNormalization(trainSet_, comm_, norm_);
    if (lead_) log_->info("feature normalization from {} training samples ({:.2f} s)", trainSet_.size(), secondsSince(t0));
  }
  norm_.moveTo(dev_.device);
  // Per-rank stream for dropout; initialisation above used the shared seed on every rank.
  // torch::manual_seed seeds the CPU generator and every GPU's; a checkpoint restores the CPU
  // generator, and the GPU's when it was written on one.
  const uint64_t rankSeed =
      c_.seed * 1000003ULL + static_cast<uint64_t>(rank_) + 1 + static_cast<uint64_t>(progress_.step) * 7919ULL;
  if (!from.rngRestored) {
    torch::manual_seed(rankSeed);
  } else if (dev_.cuda() && !from.deviceRngRestored) {
    seedDeviceGenerator(dev_, rankSeed);
  }

  schedule_ = LrSchedule{c_.schedule, c_.lr, c_.warmupSteps, c_.stepSize, c_.gamma, c_.minLr, from.scheduleSteps};
  stopAt_ = c_.maxSteps > 0 ? std::min(from.scheduleSteps, c_.maxSteps) : from.scheduleSteps;
  if (lead_) {
    std::filesystem::create_directories(runDir_);
    fs::writeFileAtomic(runDir_ + "/" + run_dir::kConfig, configText_);
    log_->info("{} with {} parameters; {} training / {} test samples; world size {}, global batch {} "
               "({} per rank x {} micro-batches); {} steps per epoch, {} steps; {} gradient bucket(s)",
               c_.arch, numParams_, trainSet_.size(), testSet_.size(), world_, plan_.globalBatch, plan_.localBatch,
               c_.gradAccum, plan_.stepsPerEpoch, stopAt_, reducer_.buckets().size());
    log_->info("device {} ({}); {}; tensors over {} ({}, {})", dev_.name(), dev_.reason, place_.determinism,
               tcomm_.backend(), tcomm_.backendVersion(), place_.tensorCommWhy);
    log_->info("optimizer {} ({}); gradient buckets{} sent as {}, reduced {}; stop flag and loss window {}", c_.optimizer,
               c_.fusedOptimizer ? "fused step over flat buckets" : "LibTorch's step", bucketPages(),
               c_.compression == "none" ? "they are" : c_.compression,
               reducer_.overlapping() ? "during backward (comm.overlap)" : "after backward",
               controlInBucket_ ? "in the last bucket" : "in collectives of their own");
  }
  metrics_.emplace(runDir_ + "/" + run_dir::kMetrics, lead_, /*append=*/!resumedFrom_.empty(), progress_.step);
  sampleLog_.emplace(options_.logSamples, runDir_ + "/" + run_dir::kSamples, comm_,
                     resumedFrom_.empty() ? -1 : progress_.step);
  bar_.emplace(c_.progress, stopAt_, c_.epochs, lead_);
  signals_.emplace();
  samplesBefore_ = progress_.samplesSeen;
  windowLoss_ = torch::zeros({}, lossOptions_);
  windowStart_ = SteadyClock::now();
}

// Trains what is left of the current epoch, then evaluates and saves at its end. False when the
// training is over: the schedule or train.max_steps is reached, or a signal asked to stop.
bool TrainRun::trainEpoch() {
  if (progress_.epoch >= c_.epochs || progress_.step >= stopAt_ || preempted_) return false;
  const std::vector<int64_t> mine = sampler_.indices(progress_.epoch, progress_.cursor);
  const int64_t stepsLeftInEpoch = static_cast<int64_t>(mine.size()) / plan_.perStep;
  const int64_t stepsThisEpoch = std::min(stepsLeftInEpoch, stopAt_ - progress_.step);
  std::vector<std::vector<int64_t>> batches =
      data::DistributedSampler::microBatches(mine, stepsThisEpoch, c_.gradAccum, plan_.localBatch);
  std::vector<std::vector<int64_t>> logged;  // the micro-batches again, for the sample log
  if (options_.logSamples) logged = batches;
  model_->train();
  auto epochStart = SteadyClock::now();
  {
    data::BatchLoader loader(trainSet_, std::move(batches), prefetch_);
    timer_.resume();
    for (int64_t s = 0; s < stepsThisEpoch; ++s) {
      if (trainStep(loader, logged, s)) {
        preempted_ = true;
        break;
      }
      // The epoch's last step is saved by the epoch-end save when one follows (with metrics).
      const bool epochEndSave = s + 1 == stepsLeftInEpoch && c_.ckptEveryEpochs > 0 &&
                                (progress_.epoch + 1) % c_.ckptEveryEpochs == 0 && progress_.epoch + 1 < c_.epochs;
      if (c_.ckptEverySteps > 0 && progress_.step % c_.ckptEverySteps == 0 && progress_.step < stopAt_ &&
          !epochEndSave) {
        trainSeconds_ += secondsSince(epochStart);
        const auto pauseStart = SteadyClock::now();
        save(true);
        windowPaused_ += secondsSince(pauseStart);
        epochStart = SteadyClock::now();
        timer_.resume();
      }
      fault::reached(stepDonePoint_);  // NOTE [Fault points]
    }
    timer_.addLoaderCpu(loader.threadCpuSeconds());
  }
  trainSeconds_ += secondsSince(epochStart);
  if (preempted_) return false;
  // The epoch is over when what is left of it cannot fill another step on every rank.
  const bool epochDone = (trainSet_.size() - progress_.cursor) / world_ / plan_.perStep == 0;
  if (!epochDone) return false;  // stopped early by train.max_steps
  const auto pauseStart = SteadyClock::now();
  evaluateNow();
  if (lead_) {
    bar_->message("epoch " + std::to_string(progress_.epoch + 1) + ": " + describe(lastEval_));
    metrics_->write(evalRecord(lastEval_, progress_));
  }
  ++progress_.epoch;
  progress_.cursor = 0;
  if (c_.ckptEveryEpochs > 0 && progress_.epoch % c_.ckptEveryEpochs == 0 && progress_.epoch < c_.epochs &&
      progress_.step < stopAt_ && lastSavedStep_ != progress_.step) {
    save(true);
  }
  windowPaused_ += secondsSince(pauseStart);
  return true;
}

// One optimizer step: its micro-batches' forward and backward passes, the gradients' all-reduce,
// the update, the loss window. S: the step's index in the epoch's batches (LOGGED, for the sample
// log). True when the ranks agreed to stop after it.
bool TrainRun::trainStep(data::BatchLoader& loader, const std::vector<std::vector<int64_t>>& logged, int64_t s) {
  reducer_.zeroGrad();
  const bool windowEnds = (progress_.step + 1) % c_.logEvery == 0 || progress_.step + 1 == stopAt_;
  torch::Tensor stepLoss = dev_.cuda() ? torch::zeros({}, lossOptions_) : torch::Tensor();
  double stepLossHost = 0;
  for (int64_t m = 0; m < c_.gradAccum; ++m) {
    timer_.lap(StepTimer::kOther);
    auto batch = loader.next();
    PERENNIAL_CHECK(batch.has_value(), "loader ran out of batches at step " << progress_.step);
    timer_.lap(StepTimer::kLoader);
    torch::Tensor out = predict(model_, featureTensor(*batch, spec_, norm_, dev_.device), spec_, c_.arch);
    torch::Tensor loss = batchLoss(out, *batch, spec_);
    if (dev_.cuda()) {
      stepLoss += loss.detach().to(torch::kDouble) / static_cast<double>(c_.gradAccum);
    } else {
      stepLossHost += static_cast<double>(loss.item<float>()) / static_cast<double>(c_.gradAccum);
    }
    // NOTE [Prescaled gradients]: dividing the loss by (micro-batches x world size) makes
    // backward produce the averaged gradient's share directly, so the all-reduce's sum is
    // the average and no division pass over the buckets is needed.
    if (plan_.lossScale != 1.0) loss = loss / plan_.lossScale;
    if (m + 1 == c_.gradAccum) {
      // Before the backward pass that completes the gradients: with comm.overlap its hooks
      // start the all-reduce of the last bucket, which carries the control block.
      if (dev_.cuda()) {
        windowLoss_ += stepLoss;
      } else {
        windowLossHost_ += stepLossHost;
      }
      ++windowSteps_;
      if (controlInBucket_) {
        const double mineLoss = windowEnds ? windowLossHost_ : 0;
        torch::Tensor ctl = reducer_.control();
        if (ctl.scalar_type() == torch::kFloat32) {
          encodeControl(ctl.data_ptr<float>(), world_, rank_, signals_->requested(), mineLoss, reducer_.controlWireType());
        } else {
          encodeControl(ctl.data_ptr<double>(), world_, rank_, signals_->requested(), mineLoss, reducer_.controlWireType());
        }
      }
      reducer_.expectBackward(/*prescaled=*/true);
    }
    timer_.lap(StepTimer::kForward);
    loss.backward();
    timer_.lap(StepTimer::kBackward);
  }
  reducer_.reduce(/*prescaled=*/true);
  ControlValues control;
  if (controlInBucket_) {
    torch::Tensor ctl = reducer_.control();
    control = ctl.scalar_type() == torch::kFloat32 ? decodeControl(ctl.data_ptr<float>(), world_)
                                                   : decodeControl(ctl.data_ptr<double>(), world_);
  }
  timer_.lap(StepTimer::kReduce);
  const double lr = schedule_.at(progress_.step);
  for (auto& group : optimizer_->param_groups()) group.options().set_lr(lr);
  optimizer_->step();
  timer_.lap(StepTimer::kOptimizer);
  timer_.countStep();
  if (hasBuffers_) broadcastBuffers(*model_, tcomm_);
  ++progress_.step;
  progress_.cursor += plan_.globalBatch;
  progress_.samplesSeen += plan_.globalBatch;
  if (options_.logSamples) {
    const auto first = logged.begin() + s * c_.gradAccum;
    sampleLog_->write(progress_.epoch, progress_.step, {first, first + c_.gradAccum});
  }
  if (windowEnds) endLogWindow(control, lr);
  if (lead_) checkInflight(false);
  return agreeToStop(control);
}

// The mean loss over the window, across all ranks (from the control block, or one small
// all-reduce per window), to the progress bar and the metrics log.
void TrainRun::endLogWindow(const ControlValues& control, double lr) {
  double meanLoss = 0;
  if (controlInBucket_) {
    meanLoss = control.lossSum / static_cast<double>(world_ * windowSteps_);
  } else {
    double agg[2] = {dev_.cuda() ? windowLoss_.item<double>() : windowLossHost_, static_cast<double>(windowSteps_)};
    comm_.allReduceSum(agg, 2);
    meanLoss = agg[0] / agg[1];
  }
  const double windowSecs = secondsSince(windowStart_) - windowPaused_;
  const double sps = windowSecs > 0 ? static_cast<double>(windowSteps_ * plan_.globalBatch) / windowSecs : 0;
  bar_->update(progress_.epoch, progress_.step, meanLoss, lr, sps);
  metrics_->write({{"kind", "train"}, {"epoch", progress_.epoch}, {"step", progress_.step}, {"loss", meanLoss},
                   {"lr", lr}, {"samples_per_second", sps}});
  if (dev_.cuda()) windowLoss_.zero_();
  windowLossHost_ = 0;
  windowSteps_ = 0;
  windowStart_ = SteadyClock::now();
  windowPaused_ = 0;
}

// NOTE [Stop agreement]: a signal reaches ranks at different moments; the flag, summed over the
// ranks each step (in the control block, or by its own all-reduce), makes every rank stop after
// the same step.
bool TrainRun::agreeToStop(const ControlValues& control) {
  if (controlInBucket_) return control.stop;
  int32_t flag = signals_->requested() ? 1 : 0;
  comm_.allReduce(&flag, 1, DType::kInt32, ReduceOp::kMax);
  return flag != 0;
}

void TrainRun::evaluateNow() {
  lastEval_ = evaluate(model_, testSet_, comm_, c_.evalBatchSize, evalPrefetch(), norm_, c_.arch,
                       dev_.device);
  lastEvalStep_ = progress_.step;
}

void TrainRun::checkInflight(bool wait) {
  if (!inflight_.valid()) return;
  if (wait || inflight_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    inflight_.get();  // rethrows a failed save here, at the next step
  }
}

// Every rank calls save() at the same points (the generator states are gathered); rank 0 writes.
void TrainRun::save(bool allowAsync) {
  auto gatherStates = [&](const std::vector<uint8_t>& mine) {
    std::vector<uint8_t> all(mine.size() * static_cast<size_t>(world_));
    if (!mine.empty()) comm_.allGather(mine.data(), all.data(), mine.size());
    return all;
  };
  std::vector<uint8_t> all = gatherStates(cpuGeneratorState());
  std::vector<uint8_t> allDevice = gatherStates(deviceGeneratorState(dev_));
  lastSavedStep_ = progress_.step;
  if (!lead_) return;
  checkInflight(true);
  CheckpointMeta meta{c_.arch, c_.optimizer, configText_, configSha_, /*paramSha256=*/"", identity_.snapshot,
                      identity_.shards, c_.seed, world_, plan_.globalBatch, reducerOptions_.capBytes,
                      reducer_.buckets(), std::move(all), {}, spec_.featureShape, norm_.mean, norm_.stdev,
                      std::move(allDevice)};
  // Metrics belong to a checkpoint only if they were measured on its weights.
  nlohmann::json m = nlohmann::json::object();
  if (lastEvalStep_ == progress_.step) {
    meta.metrics = lastEval_.testMetrics();
    for (const auto& [k, v] : meta.metrics) m[k] = v;
  }
  const bool async = allowAsync && c_.ckptAsync;
  const auto t0 = SteadyClock::now();
  checkpoint::Document doc = captureState(*model_, *optimizer_, progress_, meta, /*copy=*/async, &staging_);
  const int64_t step = progress_.step, epoch = progress_.epoch;
  if (async) {
    const double copySecs = secondsSince(t0);
    inflight_ = std::async(std::launch::async, [this, doc = std::move(doc), step, epoch, m]() {
      store_.save(doc, step, epoch, m, resumedFrom_);
    });
    log_->debug("checkpoint at step {}: state copied in {:.3f} s, writing in the background", step, copySecs);
  } else {
    auto info = store_.save(doc, step, epoch, m, resumedFrom_);
    log_->info("checkpoint {} (step {}, {:.2f} s)", info.path, step, secondsSince(t0));
  }
}

TrainResult TrainRun::baseResult() const {
  TrainResult result;
  result.worldSize = world_;
  result.configSha256 = configSha_;
  result.globalBatch = plan_.globalBatch;
  result.arch = c_.arch;
  result.parameters = numParams_;
  result.perennialVersion = PERENNIAL_VERSION;
  result.steps = progress_.step;
  return result;
}

// A preempted run saves where it stopped and says so; a finished one evaluates its final weights
// (unless the last epoch's end did), saves them, checks that every replica holds the same, and
// writes its outputs (trainer/run_outputs.h).
TrainResult TrainRun::finish() {
  bar_->finish();
  TrainResult result = baseResult();
  if (preempted_) {
    if (lead_) {
      log_->warn("signal {} received: checkpointing at step {} and exiting for requeue", signals_->signal(),
                 progress_.step);
      checkInflight(true);
    }
    save(false);
    comm_.barrier();
    result.preempted = true;
    result.wallSeconds = secondsSince(wallStart_);
    return result;
  }
  // A run stopped mid-epoch (train.max_steps), or resumed with nothing left to do, has not
  // evaluated its final weights yet.
  if (lastEval_.samples == 0 || progress_.cursor != 0) {
    evaluateNow();
    if (!metrics_->hasEvalAt(progress_.step)) metrics_->write(evalRecord(lastEval_, progress_));
  }
  if (lead_) checkInflight(true);
  if (lastSavedStep_ != progress_.step) save(false);

  result.paramSha256 = paramSha256(*model_);
  checkSameWeights(result.paramSha256, comm_);
  result.test = lastEval_;
  result.epochs = progress_.epoch + (progress_.cursor > 0 ? 1 : 0);
  result.samplesSeen = progress_.samplesSeen;
  result.trainSeconds = trainSeconds_;
  result.samplesPerSecond =
      trainSeconds_ > 0 ? static_cast<double>(result.samplesSeen - samplesBefore_) / trainSeconds_ : 0;
  result.dataSnapshot = identity_.snapshot;
  result.resumedFrom = resumedFrom_;
  result.hosts = place_.where.hosts;
  result.nodes = place_.where.nodes();
  result.commBackend = tcomm_.backend();
  result.device = dev_.name();
  result.deterministic = c_.deterministic || !dev_.cuda();

  // Where the training steps' time went (StepTimer): result.json and the log.
  std::string stepTimesText;
  for (const auto& [phase, ms] : timer_.millisecondsPerStep()) {
    result.stepTimeMs[phase] = ms;
    char part[64];
    std::snprintf(part, sizeof(part), "%s%s %.3f", stepTimesText.empty() ? "" : ", ", phase.c_str(), ms);
    stepTimesText += part;
  }
  if (lead_ && timer_.steps() > 0) {
    log_->info("step time (ms per step, rank 0, {} steps): {}", timer_.steps(), stepTimesText);
  }
  if (lead_) {
    result.wallSeconds = secondsSince(wallStart_);
    writeOutputs(runDir_, c_.arch, configText_, model_, norm_, spec_.featureShape, result);
    log_->info("done: {}, {} steps, {:.0f} samples/s, param_sha256 {}", describe(lastEval_), result.steps,
               result.samplesPerSecond, result.paramSha256);
  }
  result.wallSeconds = secondsSince(wallStart_);
  return result;
}

}  // namespace

std::string resolveDeviceName(const std::string& setting, const std::string& key) {
  return resolveDevice(setting, key).name();
}

TrainResult train(const TrainConfig& c, const std::string& runDir, Communicator& comm, const TrainOptions& options) {
  const auto wallStart = SteadyClock::now();
  requireRegisteredModel(c.arch);  // before any data are read
  TrainRun run(c, runDir, comm, options, wallStart);
  run.start();
  while (run.trainEpoch()) {
  }
  return run.finish();
}

}  // namespace perennial
