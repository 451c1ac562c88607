#include "trainer/trainer.h"
#include "trainer/evaluation.h"
#include "trainer/run_dir.h"
#include "common/text.h"

#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <sstream>
#include <tuple>
#include <nlohmann/json.hpp>

#include "checkpoint/checkpoint_store.h"
#include "checkpoint/tensor_file.h"
#include "common/error.h"
#include "common/fs_util.h"
#include "common/read_file.h"
#include "common/log.h"
#include "common/sha256.h"
#include "dataset/snapshot.h"
#include "perennial/build_config.h"
#include "trainer/blas_info.h"
#include "trainer/checkpoint_staging.h"
#include "trainer/checkpointing.h"
#include "trainer/comm/control_block.h"
#include "trainer/comm/gradient_reducer.h"
#include "trainer/data/batch_loader.h"
#include "trainer/data/distributed_sampler.h"
#include "dataset/shard_dataset.h"
#include "trainer/device.h"
#include "trainer/models/model_factory.h"
#include "trainer/optim/fused_optimizer.h"
#include "trainer/optim/lr_schedule.h"
#include "trainer/progress.h"
#include "trainer/step_timer.h"
#include "trainer/run_logs.h"
#include "trainer/stop_signal.h"
#include "trainer/train_plan.h"

namespace perennial {
namespace {

using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// model.pt (NOTE [TorchScript export]), written whole or not at all; a model that cannot be
// exported leaves none (not even one of an earlier run in the same directory).
void saveTorchScriptAtomically(const Model& model, const std::string& path) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::string whyNot;
  if (!saveAsTorchScript(model, tmp, &whyNot)) {
    std::filesystem::remove(path);
    log::get("train")->info("no {}: {}", path, whyNot);
    return;
  }
  fs::fsyncFile(tmp);
  fs::publish(tmp, path);
}

// A finished run's artefacts, written by rank 0 in this order: model.pt (the model as TorchScript
// with its trained weights, so that the run directory and the registry version that copies it are
// self-contained and load in PyTorch and LibTorch), model.h5 (the weights, the configuration and
// the normalization), and result.json last: a result.json means the run is complete.
void writeOutputs(const std::string& runDir, const std::string& arch, const std::string& configText, const Model& model,
                  const Normalization& norm, const std::vector<int64_t>& featureShape, const TrainResult& result) {
  std::vector<checkpoint::TensorView> views;
  std::vector<torch::Tensor> keep;
  for (const auto& [name, value] : stateDict(*model)) {
    torch::Tensor t = value.detach().to(torch::kCPU).contiguous();
    keep.push_back(t);
    views.push_back({name, toDType(t.scalar_type()), t.sizes().vec(), t.data_ptr()});
  }
  std::vector<checkpoint::Group> extra;
  if (norm.active()) extra.push_back(normalizationGroup(featureShape, norm.mean, norm.stdev));
  saveTorchScriptAtomically(model, runDir + "/" + run_dir::kTorchScript);
  checkpoint::writeTensorFile(runDir + "/" + run_dir::kModel, views,
                              {{"arch", arch}, {"param_sha256", result.paramSha256},
                               {"config", configText}, {"perennial_version", PERENNIAL_VERSION}},
                              std::move(extra));
  fs::writeFileAtomic(runDir + "/" + run_dir::kResult, dumpJson(result.toJson(), 2) + "\n");
}

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

}  // namespace

std::string resolveDeviceName(const std::string& setting, const std::string& key) {
  return resolveDevice(setting, key).name();
}

namespace {

// Lines "key = value" of two resolved configs that differ, for a resume warning.
std::string configDiff(const std::string& before, const std::string& after) {
  auto parse = [](const std::string& text) {
    std::map<std::string, std::string> kv;
    std::istringstream in(text);
    std::string line, section;
    while (std::getline(in, line)) {
      if (line.size() > 2 && line.front() == '[') {
        section = line.substr(1, line.size() - 2);
      } else if (auto eq = line.find(" = "); eq != std::string::npos) {
        kv[section + "." + line.substr(0, eq)] = line.substr(eq + 3);
      }
    }
    return kv;
  };
  auto a = parse(before), b = parse(after);
  std::string out;
  for (const auto& [k, v] : b) {
    auto it = a.find(k);
    const std::string old = it == a.end() ? "(unset)" : it->second;
    if (old != v) out += (out.empty() ? "" : ", ") + k + " " + old + " -> " + v;
  }
  return out;
}

// Broadcasts a string from rank 0.
std::string broadcastString(Communicator& comm, std::string value) {
  int64_t n = static_cast<int64_t>(value.size());
  comm.broadcast(&n, sizeof(n), 0);
  value.resize(static_cast<size_t>(n));
  comm.broadcast(value.data(), value.size(), 0);
  return value;
}

// NOTE [Data identity]: every run start hashes each training shard once (SHA-256 of its bytes,
// read through the descriptor the rows are read from), the ranks sharing the work: shards are
// dealt out largest first to the rank with the fewest bytes so far (sizes from rank 0, so every
// rank deals the same way), and the digests are summed across ranks (each is non-zero on its
// owner only). The snapshot id is dataset/snapshot.h's recipe over them, the scheduler's, so a
// scheduler run's result.json, checkpoints and lineage hold one id, the catalog's. With
// data.snapshot the shards are checked against it (NOTE [Snapshot check], shard_dataset.h) on
// every rank, which all stop with the same DataError on a mismatch.
struct DataIdentity {
  std::string snapshot;  // the id
  std::string shards;    // "SHA-256 FILE-NAME" per line, for checkpoints
};

DataIdentity dataIdentity(const data::ShardedDataset& ds, const std::string& snapshotFile, Communicator& comm) {
  std::error_code missing;
  if (!snapshotFile.empty() && !std::filesystem::is_regular_file(snapshotFile, missing)) {
    throw ConfigError("data.snapshot: " + snapshotFile + ": no such file");  // before any hashing
  }
  const auto t0 = Clock::now();
  const size_t n = ds.numShards();
  const int world = comm.size(), rank = comm.rank();
  std::vector<int64_t> sizes(n, 0);
  if (rank == 0) {
    for (size_t i = 0; i < n; ++i) {
      std::error_code ec;
      const auto bytes = std::filesystem::file_size(ds.shardPaths()[i], ec);
      sizes[i] = ec ? 0 : static_cast<int64_t>(bytes);
    }
  }
  if (world > 1 && n > 0) comm.broadcast(sizes.data(), n * sizeof(int64_t), 0);
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sizes[a] > sizes[b]; });
  std::vector<int64_t> load(static_cast<size_t>(world), 0);
  std::vector<int> owner(n, 0);
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[static_cast<size_t>(r)] += std::max<int64_t>(sizes[i], 1);
  }
  // 32 bytes per digest as 8 words of 32 bits, summed as int64 (exact; zero off the owner).
  std::vector<int64_t> words(n * 8, 0);
  for (size_t i = 0; i < n; ++i) {
    if (owner[i] != rank) continue;
    const Digest d = ds.hashShard(i);
    for (size_t k = 0; k < 8; ++k) {
      words[i * 8 + k] = (int64_t{d[4 * k]} << 24) | (int64_t{d[4 * k + 1]} << 16) | (int64_t{d[4 * k + 2]} << 8) |
                         int64_t{d[4 * k + 3]};
    }
  }
  const double mine = secondsSince(t0);
  if (world > 1 && n > 0) comm.allReduceSum(words.data(), words.size());
  std::vector<data::ShardIdentity> found(n);
  data::SnapshotIdBuilder id;
  DataIdentity out;
  int64_t bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    Digest d{};
    for (size_t k = 0; k < 8; ++k) {
      const auto w = static_cast<uint32_t>(words[i * 8 + k]);
      d[4 * k] = static_cast<uint8_t>(w >> 24);
      d[4 * k + 1] = static_cast<uint8_t>(w >> 16);
      d[4 * k + 2] = static_cast<uint8_t>(w >> 8);
      d[4 * k + 3] = static_cast<uint8_t>(w);
    }
    found[i] = {ds.shardPaths()[i], toHex(d), ds.shardRows(i)};
    id.add(found[i].sha256);
    out.shards += found[i].sha256 + " " + std::filesystem::path(found[i].path).filename().string() + "\n";
    bytes += sizes[i];
  }
  out.snapshot = id.finish();
  auto log = log::get("train");
  char line[256];
  std::snprintf(line, sizeof(line), "hashed %zu training shards (%.1f MiB) in %.2f s on %d rank(s) (rank 0's share: %.2f s)",
                n, static_cast<double>(bytes) / (1 << 20), secondsSince(t0), world, mine);
  if (snapshotFile.empty()) {
    if (rank == 0) log->info("{}; data snapshot {}", line, out.snapshot);
    return out;
  }
  data::checkSnapshot(snapshotFile, found);  // throws on every rank alike
  if (rank == 0) log->info("{}; all match {} (snapshot {})", line, snapshotFile, out.snapshot);
  return out;
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

}  // namespace

TrainResult train(const TrainConfig& c, const std::string& runDir, Communicator& comm,
                  const TrainOptions& options) {
  const auto wallStart = Clock::now();
  const int rank = comm.rank(), world = comm.size();
  const bool lead = rank == 0;
  auto log = log::get("train");

  requireRegisteredModel(c.arch);  // before any data are read
  // The device first: determinism settings must precede the first CUDA call. A rank takes the
  // GPU of its node-local rank (NOTE [Rank placement]).
  const RankPlacement where = comm.placement();
  const LocalRank local = localRankOf(comm);
  const TrainDevice dev = resolveDevice(c.device, local);
  const std::string determinism = configureDeterminism(dev, c.deterministic);
  // Every rank says where it runs: the host, its local rank and the GPU it takes by it, and the
  // interfaces its MPI traffic may use; rank 0 adds the layout of the whole job.
  log->info("on host {}: local rank {} of {} on this node (from {}); {}; MPI over TCP: {}", where.host, local.rank,
            local.size, local.source,
            dev.cuda() ? "trains on " + dev.name()
                       : "device cpu (on GPUs it would take local GPU " + std::to_string(local.rank) +
                             ": local rank modulo the GPUs visible)",
            where.network);
  if (!local.note.empty()) log->warn("{}", local.note);
  if (dev.cuda() && local.size > cudaDeviceCount()) {
    log->warn("{} ranks on this node share {} GPU(s)", local.size, cudaDeviceCount());
  }
  if (lead && world > 1) log->info("world size {} on {} node(s): {}", world, where.nodes(), ranksByHost(where.hosts));
  {
    // Every rank must train on the same kind of device (the generator states gathered at each
    // save, and the tensor communicator, assume it).
    int32_t cudaRanks = dev.cuda() ? 1 : 0;
    comm.allReduce(&cudaRanks, 1, DType::kInt32, ReduceOp::kSum);
    if (cudaRanks != 0 && cudaRanks != world) {
      throw ConfigError("train.device: " + c.device + " resolved to a GPU on " + std::to_string(cudaRanks) + " of " +
                        std::to_string(world) + " ranks (the others see no GPU); set train.device = cpu or cuda");
    }
  }
  // NOTE [Two communicators] (communicator.h): COMM carries host values; TCOMM the model's tensors.
  std::string tensorCommWhy;
  std::unique_ptr<Communicator> tensorComm =
      makeTensorCommunicator(comm, c.backend, dev.cudaIndex(), computeStream(dev),
                             std::chrono::milliseconds(static_cast<int64_t>(c.timeoutS * 1000)), &tensorCommWhy);
  Communicator& tcomm = tensorComm ? *tensorComm : comm;
  torch::set_num_threads(static_cast<int>(c.threads));
  setBlasThreads(static_cast<int>(c.threads));
  if (lead) {
    BlasInfo blas = detectBlas();
    log->info("BLAS: {} ({}){}", blas.vendor, blas.library.empty() ? "not loaded" : blas.library,
              blas.config.empty() ? "" : ", " + blas.config);
    if (blas.isReference()) {
      log->warn("the reference BLAS is loaded: training runs about 15x slower; install OpenBLAS "
                "(apt-get install libopenblas0-pthread, or scripts/install-deps.sh)");
    }
  }

  data::ShardedDataset trainSet(c.trainDir);
  data::ShardedDataset testSet(c.testDir);
  const data::DatasetSpec& spec = trainSet.spec();
  // The checks that need the data, and the step arithmetic (trainer/train_plan.h).
  const TrainPlan plan = planTraining(c, spec, testSet.spec(), trainSet.size(), world);
  const std::string& keepBest = plan.keepBest;
  const int64_t localBatch = plan.localBatch, perStep = plan.perStep, globalBatch = plan.globalBatch;
  const int64_t stepsPerEpoch = plan.stepsPerEpoch;
  int64_t scheduleSteps = plan.scheduleSteps;  // shortened by a resharded resume below
  const double lossScale = plan.lossScale;
  data::DistributedSampler sampler(trainSet.size(), world, rank, c.seed);
  PERENNIAL_CHECK(sampler.samplesPerRank() / perStep == stepsPerEpoch, "the plan's steps per epoch differ from the sampler's");

  // Initialised on the CPU from the shared seed (the same weights whatever the device), then moved.
  torch::manual_seed(c.seed);
  Model model = makeModel(c, modelInput(spec));
  model->to(dev.device);
  std::vector<torch::Tensor> params = model->parameters();
  const auto capBytes = static_cast<size_t>(c.bucketCapMb * 1024 * 1024);
  // NOTE [Control block]: on the CPU (tensors over the host communicator) the stop flag and the
  // loss window ride in the last gradient bucket; a GPU's bucket would need a device-to-host
  // read every step, so there they keep their own small host collectives.
  const bool controlInBucket = !tensorComm && !dev.cuda();
  ReducerOptions reducerOptions;
  reducerOptions.capBytes = capBytes;
  reducerOptions.controlSlots = controlInBucket ? controlSlots(world) : 0;
  reducerOptions.compression = parseCompression(c.compression);
  reducerOptions.overlap = c.overlap;
  GradientReducer reducer(params, tcomm, reducerOptions);
  // NOTE [Flat parameters]: with optim.fused the parameters move into the reducer's bucket layout.
  auto optimizer = makeOptimizer(
      c, params, c.fusedOptimizer ? std::make_shared<FlatBuckets>(params, reducer.buckets(), reducer.gradBuffers()) : nullptr);
  int64_t numParams = 0;
  for (const auto& p : params) numParams += p.numel();

  const std::string configText = c.toIni();
  const std::string configSha = toHex(sha256(configText.data(), configText.size()));
  // Every rank: the shards are checked before anything is trained (NOTE [Data identity]).
  const DataIdentity identity = dataIdentity(trainSet, c.snapshotFile, comm);
  // NOTE [Row cache]: after the identity check, so the rows cached are the bytes checked.
  if (c.cacheMb > 0) {
    const auto t0 = Clock::now();
    if (trainSet.cacheInMemory(static_cast<size_t>(c.cacheMb) << 20) && lead) {
      log->info("training set read into memory ({} rows, {:.2f} s; data.cache_mb)", trainSet.size(), secondsSince(t0));
    }
  }
  const std::string& dataSnapshot = identity.snapshot;
  const std::string& dataShards = identity.shards;

  checkpoint::Retention retention;
  retention.keepLast = c.ckptKeepLast;
  retention.bestMetric = keepBest == "none" ? "" : keepBest;
  retention.higherIsBetter = keepBest != "test_loss";
  checkpoint::CheckpointStore store(runDir + "/" + run_dir::kCheckpoints, retention);

  // Resume: rank 0 picks the checkpoint, every rank loads it (a shared file system is assumed,
  // as on any cluster).
  TrainProgress progress;
  Normalization norm;
  int64_t lastSavedStep = -1;
  std::string resumedFrom;
  bool rngRestored = false, deviceRngRestored = false;
  if (options.resume != "none") {
    std::string chosen;
    if (lead) {
      if (options.resume == "auto") {
        std::vector<std::string> skipped;
        auto found = store.newestValid(&skipped);
        for (const auto& why : skipped) log->warn("skipping checkpoint that does not verify: {}", why);
        if (found) {
          chosen = found->path;
        } else {
          log->info("--resume auto: no valid checkpoint in {}; starting from scratch", store.dir());
        }
      } else {
        chosen = options.resume;
      }
    }
    chosen = broadcastString(comm, chosen);
    if (!chosen.empty()) {
      RestoredState restored = loadCheckpoint(chosen, *model, *optimizer, c.optimizer, rank, world);
      progress = restored.progress;
      if (progress.epoch < c.epochs) {
        // NOTE [Resharded resume]: the schedule ends after the steps left: the rest of the
        // interrupted epoch (re-sharded by the sample cursor at another world size), then the
        // remaining whole epochs. At the world size the whole run had, that is epochs x steps per
        // epoch, as without a resume; but steps taken at another world size took another global
        // batch, and counting them as this world's steps made a run resumed on more ranks find
        // its step already past the end and skip the rest of its data.
        const int64_t restOfEpoch = (trainSet.size() - std::min(progress.cursor, trainSet.size())) / world / perStep;
        scheduleSteps = progress.step + restOfEpoch + (c.epochs - progress.epoch - 1) * stepsPerEpoch;
      }
      if (dev.cuda() && !restored.deviceRngState.empty()) {
        setDeviceGeneratorState(dev, restored.deviceRngState);
        deviceRngRestored = true;
      }
      if (!restored.normMean.empty()) {
        if (static_cast<int64_t>(restored.normMean.size()) != spec.featureElements()) {
          throw DataError(chosen + ": normalization has " + std::to_string(restored.normMean.size()) +
                          " values, the data " + std::to_string(spec.featureElements()) + " features");
        }
        norm.set(std::move(restored.normMean), std::move(restored.normStd), spec.featureShape);
      }
      lastSavedStep = progress.step;  // that checkpoint exists: never re-save (and uncommit) it
      rngRestored = restored.rngRestored;
      resumedFrom = chosen;
      if (lead) {
        log->info("resuming from {} at epoch {}, step {} (sample cursor {})", chosen, progress.epoch + 1,
                  progress.step, progress.cursor);
        if (restored.worldSize != world) {
          log->warn("the checkpoint was written at world size {}, this run has {}: the rest of the epoch is "
                    "re-sharded by the global sample cursor ({} steps left in all); results will not be bitwise "
                    "identical to an uninterrupted run", restored.worldSize, world, scheduleSteps - progress.step);
        }
        if (restored.configSha256 != configSha) {
          log->warn("resuming with a changed configuration: {}", configDiff(restored.configText, configText));
        }
        if (restored.dataSnapshot != dataSnapshot) {
          log->warn("the training data differ from the checkpoint's (snapshot {} now {})", restored.dataSnapshot, dataSnapshot);
        }
      }
      if (progress.cursor % globalBatch != 0 && restored.worldSize == world) {
        throw DataError(chosen + ": sample cursor " + std::to_string(progress.cursor) +
                        " is not a multiple of the global batch " + std::to_string(globalBatch));
      }
    }
  }
  if (resumedFrom.empty() && !c.initFrom.empty()) {
    // Warm start: every rank reads the same file, so the replicas start equal.
    checkpoint::TensorFile init = checkpoint::readTensorFile(c.initFrom);
    copyWeights(init, c.initFrom, c.arch, *model);
    if (lead) log->info("initialised the weights from {} (param_sha256 {})", c.initFrom, paramSha256(*model).substr(0, 16));
  }
  reducer.broadcastParameters(0);
  broadcastBuffers(*model, tcomm);
  if (!norm.active() && wantsNormalization(c, spec)) {
    const auto t0 = Clock::now();
    computeNormalization(trainSet, comm, norm);
    if (lead) log->info("feature normalization from {} training samples ({:.2f} s)", trainSet.size(), secondsSince(t0));
  }
  norm.moveTo(dev.device);
  // Per-rank stream for dropout; initialisation above used the shared seed on every rank.
  // torch::manual_seed seeds the CPU generator and every GPU's; a checkpoint restores the CPU
  // generator, and the GPU's when it was written on one.
  const uint64_t rankSeed =
      c.seed * 1000003ULL + static_cast<uint64_t>(rank) + 1 + static_cast<uint64_t>(progress.step) * 7919ULL;
  if (!rngRestored) {
    torch::manual_seed(rankSeed);
  } else if (dev.cuda() && !deviceRngRestored) {
    seedDeviceGenerator(dev, rankSeed);
  }

  LrSchedule schedule{c.schedule, c.lr, c.warmupSteps, c.stepSize, c.gamma, c.minLr, scheduleSteps};
  const int64_t stopAt = c.maxSteps > 0 ? std::min(scheduleSteps, c.maxSteps) : scheduleSteps;

  TrainResult result;
  result.worldSize = world;
  result.configSha256 = configSha;
  result.globalBatch = globalBatch;
  result.arch = c.arch;
  result.parameters = numParams;
  result.perennialVersion = PERENNIAL_VERSION;
  if (lead) {
    std::filesystem::create_directories(runDir);
    fs::writeFileAtomic(runDir + "/" + run_dir::kConfig, configText);
    log->info("{} with {} parameters; {} training / {} test samples; world size {}, global batch {} "
              "({} per rank x {} micro-batches); {} steps per epoch, {} steps; {} gradient bucket(s)",
              c.arch, numParams, trainSet.size(), testSet.size(), world, globalBatch, localBatch,
              c.gradAccum, stepsPerEpoch, stopAt, reducer.buckets().size());
    log->info("device {} ({}); {}; tensors over {} ({}, {})", dev.name(), dev.reason, determinism, tcomm.backend(),
              tcomm.backendVersion(), tensorCommWhy);
    log->info("optimizer {} ({}); gradient buckets sent as {}, reduced {}; stop flag and loss window {}", c.optimizer,
              c.fusedOptimizer ? "fused step over flat buckets" : "LibTorch's step", c.compression == "none" ? "they are" : c.compression,
              reducer.overlapping() ? "during backward (comm.overlap)" : "after backward",
              controlInBucket ? "in the last bucket" : "in collectives of their own");
  }
  MetricsLog metrics(runDir + "/" + run_dir::kMetrics, lead, /*append=*/!resumedFrom.empty(), progress.step);
  SampleLog sampleLog(options.logSamples, runDir + "/" + run_dir::kSamples, comm, resumedFrom.empty() ? -1 : progress.step);
  Progress bar(c.progress, stopAt, c.epochs, lead);
  StopSignals signals;

  EvalMetrics lastEval;
  int64_t lastEvalStep = -1;
  // NOTE [Staging buffers]: allocated at the first asynchronous save. Declared before INFLIGHT, so
  // that a save still writing from it is waited for (the future's destructor) before it is freed.
  StagingBuffers staging(/*pinned=*/dev.cuda());
  std::future<void> inflight;  // at most one asynchronous save, written from STAGING
  auto checkInflight = [&](bool wait) {
    if (!inflight.valid()) return;
    if (wait || inflight.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      inflight.get();  // rethrows a failed save here, at the next step
    }
  };
  // Every rank calls save() at the same points (the generator states are gathered); rank 0 writes.
  auto gatherStates = [&](const std::vector<uint8_t>& mine) {
    std::vector<uint8_t> all(mine.size() * static_cast<size_t>(world));
    if (!mine.empty()) comm.allGather(mine.data(), all.data(), mine.size());
    return all;
  };
  auto save = [&](bool allowAsync) {
    std::vector<uint8_t> all = gatherStates(cpuGeneratorState());
    std::vector<uint8_t> allDevice = gatherStates(deviceGeneratorState(dev));
    lastSavedStep = progress.step;
    if (!lead) return;
    checkInflight(true);
    CheckpointMeta meta{c.arch, c.optimizer, configText, configSha, /*paramSha256=*/"", dataSnapshot, dataShards,
                        c.seed, world, globalBatch, capBytes, reducer.buckets(), std::move(all),
                        {}, spec.featureShape, norm.mean, norm.stdev, std::move(allDevice)};
    // Metrics belong to a checkpoint only if they were measured on its weights.
    nlohmann::json m = nlohmann::json::object();
    if (lastEvalStep == progress.step) {
      meta.metrics = lastEval.testMetrics();
      for (const auto& [k, v] : meta.metrics) m[k] = v;
    }
    const bool async = allowAsync && c.ckptAsync;
    const auto t0 = Clock::now();
    checkpoint::Document doc = captureState(*model, *optimizer, progress, meta, /*copy=*/async, &staging);
    const int64_t step = progress.step, epoch = progress.epoch;
    if (async) {
      const double copySecs = secondsSince(t0);
      inflight = std::async(std::launch::async, [&store, doc = std::move(doc), step, epoch, m, resumedFrom]() {
        store.save(doc, step, epoch, m, resumedFrom);
      });
      log->debug("checkpoint at step {}: state copied in {:.3f} s, writing in the background", step, copySecs);
    } else {
      auto info = store.save(doc, step, epoch, m, resumedFrom);
      log->info("checkpoint {} (step {}, {:.2f} s)", info.path, step, secondsSince(t0));
    }
  };

  double trainSeconds = 0;
  const int64_t samplesBefore = progress.samplesSeen;  // trained before a resume: not this run's time
  // The loss is summed where it is computed and read once per log window: on a GPU, reading it
  // every step would make the host wait for the GPU before it could queue the backward pass. On
  // the CPU it is read as it comes (no tensor arithmetic per step).
  const auto lossOptions = torch::TensorOptions().dtype(torch::kDouble).device(dev.device);
  torch::Tensor windowLoss = torch::zeros({}, lossOptions);
  double windowLossHost = 0;
  int64_t windowSteps = 0;
  auto windowStart = Clock::now();
  double windowPaused = 0;  // evaluation and checkpoint time inside the window: not training
  bool preempted = false;
  const bool hasBuffers = !model->buffers().empty();
  StepTimer timer;
  for (; progress.epoch < c.epochs && progress.step < stopAt && !preempted; ) {
    const std::vector<int64_t> mine = sampler.indices(progress.epoch, progress.cursor);
    const int64_t stepsLeftInEpoch = static_cast<int64_t>(mine.size()) / perStep;
    const int64_t stepsThisEpoch = std::min(stepsLeftInEpoch, stopAt - progress.step);
    std::vector<std::vector<int64_t>> batches =
        data::DistributedSampler::microBatches(mine, stepsThisEpoch, c.gradAccum, localBatch);
    std::vector<std::vector<int64_t>> logged;  // the micro-batches again, for the sample log
    if (options.logSamples) logged = batches;
    model->train();
    auto epochStart = Clock::now();
    {
      data::BatchLoader loader(trainSet, std::move(batches), static_cast<size_t>(c.prefetch));
      timer.resume();
      for (int64_t s = 0; s < stepsThisEpoch; ++s) {
        reducer.zeroGrad();
        const bool windowEnds = (progress.step + 1) % c.logEvery == 0 || progress.step + 1 == stopAt;
        torch::Tensor stepLoss = dev.cuda() ? torch::zeros({}, lossOptions) : torch::Tensor();
        double stepLossHost = 0;
        for (int64_t m = 0; m < c.gradAccum; ++m) {
          timer.lap(StepTimer::kOther);
          auto batch = loader.next();
          PERENNIAL_CHECK(batch.has_value(), "loader ran out of batches at step " << progress.step);
          timer.lap(StepTimer::kLoader);
          torch::Tensor out = predict(model, featureTensor(*batch, spec, norm, dev.device), spec, c.arch);
          torch::Tensor loss = batchLoss(out, *batch, spec);
          if (dev.cuda()) {
            stepLoss += loss.detach().to(torch::kDouble) / static_cast<double>(c.gradAccum);
          } else {
            stepLossHost += static_cast<double>(loss.item<float>()) / static_cast<double>(c.gradAccum);
          }
          // NOTE [Prescaled gradients]: dividing the loss by (micro-batches x world size) makes
          // backward produce the averaged gradient's share directly, so the all-reduce's sum is
          // the average and no division pass over the buckets is needed.
          if (lossScale != 1.0) loss = loss / lossScale;
          if (m + 1 == c.gradAccum) {
            // Before the backward pass that completes the gradients: with comm.overlap its hooks
            // start the all-reduce of the last bucket, which carries the control block.
            if (dev.cuda()) {
              windowLoss += stepLoss;
            } else {
              windowLossHost += stepLossHost;
            }
            ++windowSteps;
            if (controlInBucket) {
              const double mineLoss = windowEnds ? windowLossHost : 0;
              torch::Tensor ctl = reducer.control();
              if (ctl.scalar_type() == torch::kFloat32) {
                encodeControl(ctl.data_ptr<float>(), world, rank, signals.requested(), mineLoss, reducer.controlWireType());
              } else {
                encodeControl(ctl.data_ptr<double>(), world, rank, signals.requested(), mineLoss, reducer.controlWireType());
              }
            }
            reducer.expectBackward(/*prescaled=*/true);
          }
          timer.lap(StepTimer::kForward);
          loss.backward();
          timer.lap(StepTimer::kBackward);
        }
        reducer.reduce(/*prescaled=*/true);
        ControlValues control;
        if (controlInBucket) {
          torch::Tensor ctl = reducer.control();
          control = ctl.scalar_type() == torch::kFloat32 ? decodeControl(ctl.data_ptr<float>(), world)
                                                         : decodeControl(ctl.data_ptr<double>(), world);
        }
        timer.lap(StepTimer::kReduce);
        const double lr = schedule.at(progress.step);
        for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
        optimizer->step();
        timer.lap(StepTimer::kOptimizer);
        timer.countStep();
        if (hasBuffers) broadcastBuffers(*model, tcomm);
        ++progress.step;
        progress.cursor += globalBatch;
        progress.samplesSeen += globalBatch;
        if (options.logSamples) {
          const auto first = logged.begin() + s * c.gradAccum;
          sampleLog.write(progress.epoch, progress.step, {first, first + c.gradAccum});
        }
        if (windowEnds) {
          // The mean loss over the window, across all ranks: from the control block, or one
          // small all-reduce per window.
          double meanLoss = 0;
          if (controlInBucket) {
            meanLoss = control.lossSum / static_cast<double>(world * windowSteps);
          } else {
            double agg[2] = {dev.cuda() ? windowLoss.item<double>() : windowLossHost, static_cast<double>(windowSteps)};
            comm.allReduceSum(agg, 2);
            meanLoss = agg[0] / agg[1];
          }
          const double windowSecs = secondsSince(windowStart) - windowPaused;
          const double sps = windowSecs > 0 ? static_cast<double>(windowSteps * globalBatch) / windowSecs : 0;
          bar.update(progress.epoch, progress.step, meanLoss, lr, sps);
          metrics.write({{"kind", "train"}, {"epoch", progress.epoch}, {"step", progress.step}, {"loss", meanLoss},
                         {"lr", lr}, {"samples_per_second", sps}});
          if (dev.cuda()) windowLoss.zero_();
          windowLossHost = 0;
          windowSteps = 0;
          windowStart = Clock::now();
          windowPaused = 0;
        }
        if (lead) checkInflight(false);
        // NOTE [Stop agreement]: a signal reaches ranks at different moments; the flag, summed
        // over the ranks each step (in the control block, or by its own all-reduce), makes every
        // rank stop after the same step.
        bool stop = control.stop;
        if (!controlInBucket) {
          int32_t flag = signals.requested() ? 1 : 0;
          comm.allReduce(&flag, 1, DType::kInt32, ReduceOp::kMax);
          stop = flag != 0;
        }
        if (stop) {
          preempted = true;
          break;
        }
        // The epoch's last step is saved by the epoch-end save when one follows (with metrics).
        const bool epochEndSave = s + 1 == stepsLeftInEpoch && c.ckptEveryEpochs > 0 &&
                                  (progress.epoch + 1) % c.ckptEveryEpochs == 0 && progress.epoch + 1 < c.epochs;
        if (c.ckptEverySteps > 0 && progress.step % c.ckptEverySteps == 0 && progress.step < stopAt && !epochEndSave) {
          trainSeconds += secondsSince(epochStart);
          const auto pauseStart = Clock::now();
          save(true);
          windowPaused += secondsSince(pauseStart);
          epochStart = Clock::now();
          timer.resume();
        }
      }
      timer.addLoaderCpu(loader.threadCpuSeconds());
    }
    trainSeconds += secondsSince(epochStart);
    if (preempted) break;
    // The epoch is over when what is left of it cannot fill another step on every rank.
    const bool epochDone = (trainSet.size() - progress.cursor) / world / perStep == 0;
    if (!epochDone) break;  // stopped early by train.max_steps
    const auto pauseStart = Clock::now();
    lastEval = evaluate(model, testSet, comm, c.evalBatchSize, static_cast<size_t>(c.prefetch), norm, c.arch, dev.device);
    lastEvalStep = progress.step;
    if (lead) {
      bar.message("epoch " + std::to_string(progress.epoch + 1) + ": " + describe(lastEval));
      metrics.write(evalRecord(lastEval, progress));
    }
    ++progress.epoch;
    progress.cursor = 0;
    if (c.ckptEveryEpochs > 0 && progress.epoch % c.ckptEveryEpochs == 0 && progress.epoch < c.epochs &&
        progress.step < stopAt && lastSavedStep != progress.step) {
      save(true);
    }
    windowPaused += secondsSince(pauseStart);
  }
  bar.finish();

  if (preempted) {
    if (lead) log->warn("signal {} received: checkpointing at step {} and exiting for requeue", signals.signal(), progress.step);
    if (lead) checkInflight(true);
    save(false);
    comm.barrier();
    result.preempted = true;
    result.steps = progress.step;
    result.wallSeconds = secondsSince(wallStart);
    return result;
  }

  // A run stopped mid-epoch (train.max_steps), or resumed with nothing left to do, has not
  // evaluated its final weights yet.
  if (lastEval.samples == 0 || progress.cursor != 0) {
    lastEval = evaluate(model, testSet, comm, c.evalBatchSize, static_cast<size_t>(c.prefetch), norm, c.arch, dev.device);
    lastEvalStep = progress.step;
    if (!metrics.hasEvalAt(progress.step)) metrics.write(evalRecord(lastEval, progress));
  }
  if (lead) checkInflight(true);
  if (lastSavedStep != progress.step) save(false);

  result.paramSha256 = paramSha256(*model);
  checkSameWeights(result.paramSha256, comm);
  result.test = lastEval;
  result.epochs = progress.epoch + (progress.cursor > 0 ? 1 : 0);
  result.steps = progress.step;
  result.samplesSeen = progress.samplesSeen;
  result.trainSeconds = trainSeconds;
  result.samplesPerSecond =
      trainSeconds > 0 ? static_cast<double>(result.samplesSeen - samplesBefore) / trainSeconds : 0;
  result.dataSnapshot = dataSnapshot;
  result.resumedFrom = resumedFrom;
  result.hosts = where.hosts;
  result.nodes = where.nodes();
  result.commBackend = tcomm.backend();
  result.device = dev.name();
  result.deterministic = c.deterministic || !dev.cuda();

  // Where the training steps' time went (StepTimer): result.json and the log.
  std::string stepTimesText;
  for (const auto& [phase, ms] : timer.millisecondsPerStep()) {
    result.stepTimeMs[phase] = ms;
    char part[64];
    std::snprintf(part, sizeof(part), "%s%s %.3f", stepTimesText.empty() ? "" : ", ", phase.c_str(), ms);
    stepTimesText += part;
  }
  if (lead && timer.steps() > 0) log->info("step time (ms per step, rank 0, {} steps): {}", timer.steps(), stepTimesText);
  if (lead) {
    result.wallSeconds = secondsSince(wallStart);
    writeOutputs(runDir, c.arch, configText, model, norm, spec.featureShape, result);
    log->info("done: {}, {} steps, {:.0f} samples/s, param_sha256 {}", describe(lastEval), result.steps,
              result.samplesPerSecond, result.paramSha256);
  }
  result.wallSeconds = secondsSince(wallStart);
  return result;
}

}  // namespace perennial
