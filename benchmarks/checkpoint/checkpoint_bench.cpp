// Checkpoint I/O benchmark: save and load throughput of a >= 100M-parameter model's training
// state beside a raw sequential write/read of the same number of bytes (with fsync) and
// torch::save/torch::load, in the same run; and the training stall per save in sync and async
// mode beside one in-memory copy of the state, into fresh memory (clone) and into warm memory (a
// memcpy into a buffer allocated and touched beforehand, what an asynchronous save's staging
// buffers reach: NOTE [Staging buffers] in trainer/checkpoint_staging.h).
//
// usage: perennial_bench_checkpoint [--dir DIR] [--hidden 4096] [--layers 6] [--reps 3] [--json FILE]
// Reads are cold: after each write the file's pages are dropped with posix_fadvise(DONTNEED).
#include <fcntl.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_store.h"
#include "common/sha256.h"
#include "trainer/checkpoint_staging.h"
#include "trainer/checkpointing.h"

namespace {

using Clock = std::chrono::steady_clock;
namespace stdfs = std::filesystem;

// Each timed operation starts from a clean page cache state (no dirty pages waiting for the
// disk), so one measurement's write-back does not throttle the next one's writes.
double seconds(const std::function<void()>& f) {
  ::sync();
  auto t0 = Clock::now();
  f();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void dropCache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

void fsyncPath(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

void rawWrite(const std::string& path, const std::vector<char>& buf) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  size_t off = 0;
  while (off < buf.size()) {
    ssize_t n = ::write(fd, buf.data() + off, std::min<size_t>(buf.size() - off, 64 << 20));
    if (n <= 0) break;
    off += static_cast<size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
}

void rawRead(const std::string& path, std::vector<char>& buf) {
  int fd = ::open(path.c_str(), O_RDONLY);
  size_t off = 0;
  ssize_t n;
  while ((n = ::read(fd, buf.data() + off, std::min<size_t>(buf.size() - off, 64 << 20))) > 0) off += static_cast<size_t>(n);
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = stdfs::temp_directory_path() / "perennial-ckpt-bench", jsonOut;
  int64_t hidden = 4096, layers = 6;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--help" || std::string(argv[i]) == "-h") {
      std::printf("usage: perennial_bench_checkpoint [--dir DIR] [--hidden 4096] [--layers 6] [--reps 3 (>= 2)] "
                  "[--json FILE]\n");
      return 0;
    }
  }
  if (argc % 2 == 0) {
    std::fprintf(stderr, "perennial_bench_checkpoint: option %s needs a value (see --help)\n", argv[argc - 1]);
    return 2;
  }
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--dir") dir = argv[i + 1];
    else if (a == "--hidden") hidden = std::stoll(argv[i + 1]);
    else if (a == "--layers") layers = std::stoll(argv[i + 1]);
    else if (a == "--reps") reps = std::max(2, std::stoi(argv[i + 1]));
    else if (a == "--json") jsonOut = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  stdfs::remove_all(dir);
  stdfs::create_directories(dir);
  torch::set_num_threads(1);
  torch::manual_seed(0);
  torch::nn::Sequential model;
  for (int64_t l = 0; l < layers; ++l) model->push_back(torch::nn::Linear(hidden, hidden));
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();
  torch::optim::SGD opt(model->parameters(), torch::optim::SGDOptions(0.01).momentum(0.9));
  for (auto& p : model->parameters()) p.mutable_grad() = torch::full_like(p, 1e-3);
  opt.step();  // creates the momentum buffers: the state is parameters + momentum

  perennial::TrainProgress progress{1, 100, 0, 12800};
  perennial::CheckpointMeta meta;
  meta.arch = "mlp";
  meta.optimizer = "sgd";
  meta.configText = "[model]\narch = mlp\n";
  meta.configSha256 = meta.dataSnapshot = std::string(64, '0');  // param_sha256: computed, as in training
  meta.rngStates = perennial::cpuGeneratorState();

  std::vector<torch::Tensor> state;
  for (const auto& p : model->parameters()) state.push_back(p.detach());
  for (auto& [key, s] : opt.state()) state.push_back(static_cast<torch::optim::SGDParamState&>(*s).momentum_buffer());
  size_t stateBytes = 0;
  for (const auto& t : state) stateBytes += static_cast<size_t>(t.numel()) * 4;

  perennial::checkpoint::Retention keepAll;
  keepAll.keepLast = 1000;
  perennial::checkpoint::CheckpointStore store(dir + "/ckpts", keepAll);
  std::vector<double> tSave, tRawW, tTorchS, tLoad, tRawR, tTorchL, tStallSync, tStallAsync, tCopy, tWarmCopy, tSha;
  // The trainer's asynchronous saves reuse one staging buffer per run; so does this benchmark (the
  // first repetition allocates it: its stall is reported apart, the median covers the rest).
  perennial::StagingBuffers staging(/*pinned=*/false);
  std::vector<char> warm(stateBytes + 64 * state.size(), 1);  // allocated and touched once
  size_t fileBytes = 0;
  for (int r = 0; r < reps; ++r) {
    // Sync save: the stall is everything (capture without copy + write + hash + manifest).
    perennial::checkpoint::CheckpointInfo info;
    tSave.push_back(seconds([&] {
      auto doc = perennial::captureState(*model, opt, progress, meta, /*copy=*/false);
      info = store.save(doc, 100 + r, 1, {});
    }));
    tStallSync.push_back(tSave.back());
    fileBytes = stdfs::file_size(info.path);
    dropCache(info.path);

    std::vector<char> buf(fileBytes, 1);
    const std::string raw = dir + "/raw.bin";
    tRawW.push_back(seconds([&] { rawWrite(raw, buf); }));
    // What one core hashes: a save computes SHA-256 over the parameters and over the whole file.
    tSha.push_back(seconds([&] { perennial::sha256(buf.data(), buf.size()); }));
    dropCache(raw);
    tRawR.push_back(seconds([&] { rawRead(raw, buf); }));

    const std::string tp = dir + "/torch.pt";
    tTorchS.push_back(seconds([&] {
      torch::save(state, tp);
      fsyncPath(tp);
    }));
    dropCache(tp);
    tTorchL.push_back(seconds([&] {
      std::vector<torch::Tensor> loaded;
      torch::load(loaded, tp);
    }));

    tLoad.push_back(seconds([&] { perennial::loadCheckpoint(info.path, *model, opt, "sgd", 0, 1); }));

    // Async: the stall is the capture with a copy; the write happens on another thread.
    tCopy.push_back(seconds([&] {
      std::vector<torch::Tensor> copies;
      for (const auto& t : state) copies.push_back(t.clone());
    }));
    tWarmCopy.push_back(seconds([&] {
      size_t off = 0;
      for (const auto& t : state) {
        const size_t n = static_cast<size_t>(t.numel()) * t.element_size();
        std::memcpy(warm.data() + off, t.data_ptr(), n);
        off += n;
      }
    }));
    perennial::checkpoint::Document doc;
    tStallAsync.push_back(
        seconds([&] { doc = perennial::captureState(*model, opt, progress, meta, /*copy=*/true, &staging); }));
    store.save(doc, 200 + r, 1, {});
    stdfs::remove(raw);
    stdfs::remove(tp);
  }
  const double mb = static_cast<double>(fileBytes) / 1e6;
  nlohmann::json j = {
      {"parameters", params}, {"state_bytes", stateBytes}, {"file_bytes", fileBytes}, {"reps", reps},
      {"save_MBps", mb / median(tSave)}, {"raw_write_MBps", mb / median(tRawW)}, {"sha256_MBps", mb / median(tSha)}, {"torch_save_MBps", mb / median(tTorchS)},
      {"load_MBps", mb / median(tLoad)}, {"raw_read_MBps", mb / median(tRawR)}, {"torch_load_MBps", mb / median(tTorchL)},
      {"stall_sync_s", median(tStallSync)}, {"stall_async_s", median(tStallAsync)}, {"state_copy_s", median(tCopy)}};
  j["save_vs_raw_write"] = j["save_MBps"].get<double>() / j["raw_write_MBps"].get<double>();
  // The first async save allocates the staging buffer; later ones reuse it (the steady state).
  std::vector<double> warmStalls(tStallAsync.begin() + (tStallAsync.size() > 1 ? 1 : 0), tStallAsync.end());
  j["stall_async_first_s"] = tStallAsync.front();
  j["stall_async_s"] = median(warmStalls);
  j["state_warm_copy_s"] = median(tWarmCopy);
  j["staging_allocations"] = staging.allocations();
  j["async_stall_vs_copy"] = j["stall_async_s"].get<double>() / j["state_copy_s"].get<double>();
  j["async_stall_vs_warm_copy"] = j["stall_async_s"].get<double>() / j["state_warm_copy_s"].get<double>();
  std::printf("model: %lld parameters (%d x Linear(%lld, %lld)), state %.0f MB (parameters + SGD momentum), file %.0f MB, "
              "median of %d\n",
              (long long)params, (int)layers, (long long)hidden, (long long)hidden, stateBytes / 1e6, mb, reps);
  std::printf("%-34s %10s %10s\n", "", "MB/s", "seconds");
  std::printf("%-34s %10.0f %10.3f\n", "raw write + fsync", j["raw_write_MBps"].get<double>(), median(tRawW));
  std::printf("%-34s %10.0f %10.3f\n", "perennial save (sync, committed)", j["save_MBps"].get<double>(), median(tSave));
  std::printf("%-34s %10.0f %10.3f\n", "torch::save + fsync", j["torch_save_MBps"].get<double>(), median(tTorchS));
  std::printf("%-34s %10.0f %10.3f\n", "SHA-256 of the same bytes (1 core)", j["sha256_MBps"].get<double>(), median(tSha));
  std::printf("%-34s %10.0f %10.3f\n", "raw read (cold)", j["raw_read_MBps"].get<double>(), median(tRawR));
  std::printf("%-34s %10.0f %10.3f\n", "perennial load (verify + restore)", j["load_MBps"].get<double>(), median(tLoad));
  std::printf("%-34s %10.0f %10.3f\n", "torch::load (cold)", j["torch_load_MBps"].get<double>(), median(tTorchL));
  std::printf("save / raw write: %.2f (target >= 0.80)\n", j["save_vs_raw_write"].get<double>());
  std::printf("training stall per save: sync %.3f s, async %.3f s (median of saves 2..%d; the first, which allocates "
              "the staging buffer: %.3f s)\n",
              median(tStallSync), j["stall_async_s"].get<double>(), reps, tStallAsync.front());
  std::printf("one in-memory copy of the state: into fresh memory (clone) %.3f s, into warm memory (memcpy) %.3f s\n",
              median(tCopy), median(tWarmCopy));
  std::printf("async stall / warm copy = %.2f (target <= 1.50); async stall / fresh copy = %.2f\n",
              j["async_stall_vs_warm_copy"].get<double>(), j["async_stall_vs_copy"].get<double>());
  if (!jsonOut.empty()) std::ofstream(jsonOut) << j.dump(2) << "\n";
  stdfs::remove_all(dir);
  return 0;
}
