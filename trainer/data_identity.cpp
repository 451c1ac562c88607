#include "trainer/data_identity.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <vector>

#include "common/elapsed.h"
#include "common/error.h"
#include "common/log.h"
#include "common/sha256.h"
#include "dataset/snapshot.h"

namespace perennial {

DataIdentity dataIdentity(const data::ShardedDataset& ds, const std::string& snapshotFile, Communicator& comm) {
  std::error_code missing;
  if (!snapshotFile.empty() && !std::filesystem::is_regular_file(snapshotFile, missing)) {
    throw ConfigError("data.snapshot: " + snapshotFile + ": no such file");  // before any hashing
  }
  const auto t0 = SteadyClock::now();
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

}  // namespace perennial
