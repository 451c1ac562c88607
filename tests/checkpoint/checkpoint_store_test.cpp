#include "checkpoint/checkpoint_store.h"
#include "checkpoint/file_image.h"
#include "common/fault.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"
#include "common/sha256.h"

namespace perennial::checkpoint {
namespace {

namespace stdfs = std::filesystem;

stdfs::path freshDir(const std::string& name) {
  auto d = stdfs::temp_directory_path() / ("perennial-store-" + name + "-" + std::to_string(::getpid()));
  stdfs::remove_all(d);
  stdfs::create_directories(d);
  return d;
}

// A small but complete checkpoint document whose values depend on STEP.
Document makeDoc(int64_t step, int tensors = 16) {
  Document doc;
  doc.format = kCheckpointFormat;
  doc.formatVersion = kCheckpointFormatVersion;
  doc.strings = {{"config", "[train]\nepochs = 1\n"}, {"config_sha256", "c"}, {"param_sha256", "p"},
                 {"optimizer.name", "sgd"}};
  doc.ints = {{"progress.step", step}, {"progress.epoch", 0}, {"progress.sample_cursor", step * 8}, {"world.size", 1}};
  Group g{"state_dict", {}};
  for (int i = 0; i < tensors; ++i) {
    Tensor t{std::to_string(i) + ".weight", DType::kFloat32, {16, 8}, {}, nullptr};
    std::vector<float> v(128);
    for (size_t k = 0; k < v.size(); ++k) v[k] = static_cast<float>(step) + 0.001f * static_cast<float>(k + 100 * i);
    t.bytes.resize(v.size() * 4);
    std::memcpy(t.bytes.data(), v.data(), t.bytes.size());
    g.tensors.push_back(std::move(t));
  }
  doc.groups.push_back(std::move(g));
  return doc;
}

TEST(CheckpointStore, SaveCommitsAndRetentionKeepsLastAndBest) {
  auto dir = freshDir("retention");
  Retention r;
  r.keepLast = 2;
  r.bestMetric = "test_accuracy";
  CheckpointStore store(dir.string(), r);
  store.save(makeDoc(10), 10, 0, {{"test_accuracy", 0.5}});
  store.save(makeDoc(20), 20, 0, {{"test_accuracy", 0.9}});  // the best
  store.save(makeDoc(30), 30, 0, {{"test_accuracy", 0.6}});
  store.save(makeDoc(40), 40, 0, {{"test_accuracy", 0.7}});
  std::vector<int64_t> steps;
  for (const auto& c : store.committed()) steps.push_back(c.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{20, 30, 40}));
  EXPECT_FALSE(stdfs::exists(dir / "ckpt-0000000010.h5"));
  auto newest = store.newestValid();
  ASSERT_TRUE(newest.has_value());
  EXPECT_EQ(newest->step, 40);
  EXPECT_EQ(newest->sha256, toHex(sha256File(newest->path)));
}

TEST(CheckpointStore, ProtectedCheckpointSurvivesRetention) {
  auto dir = freshDir("protect");
  Retention r;
  r.keepLast = 1;
  CheckpointStore store(dir.string(), r);
  auto first = store.save(makeDoc(1), 1, 0, {});
  store.save(makeDoc(2), 2, 0, {}, first.path);
  store.save(makeDoc(3), 3, 0, {}, first.path);
  std::vector<int64_t> steps;
  for (const auto& c : store.committed()) steps.push_back(c.step);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 3}));
}

TEST(CheckpointStore, SameDocumentSameBytes) {
  auto a = freshDir("bytes-a"), b = freshDir("bytes-b");
  CheckpointStore sa(a.string(), {}), sb(b.string(), {});
  auto ia = sa.save(makeDoc(5), 5, 0, {});
  sleep(1);
  auto ib = sb.save(makeDoc(5), 5, 0, {});
  EXPECT_EQ(ia.sha256, ib.sha256);
}

// Corruptions of the newest checkpoint: verify refuses each, and newestValid falls back.
TEST(CheckpointStore, CorruptFilesAreRefusedAndSkipped) {
  struct Case {
    std::string name;
    std::function<void(std::string&)> corrupt;
    bool keepManifestHash;  // false: rewrite the manifest's hash so only HDF5's own checks remain
  };
  auto flipTensor = [](std::string& bytes) {
    float probe = 7.0f + 0.001f * 5;  // makeDoc(7), tensor 0, element 5
    std::string needle(reinterpret_cast<const char*>(&probe), 4);
    size_t at = bytes.find(needle);
    ASSERT_NE(at, std::string::npos);
    bytes[at + 1] ^= 0x10;
  };
  auto flipMeta = [](std::string& bytes) {
    size_t at = bytes.find("optimizer.name");
    ASSERT_NE(at, std::string::npos);
    bytes[at + 2] ^= 0x01;
  };
  std::vector<Case> cases{
      {"truncated", [](std::string& b) { b.resize(b.size() / 2); }, true},
      {"tensor-byte", flipTensor, true},
      {"tensor-byte-no-manifest-hash", flipTensor, false},
      {"metadata-byte", flipMeta, true},
      {"not-hdf5", [](std::string& b) { b = std::string(b.size(), 'x'); }, true},
      {"empty", [](std::string& b) { b.clear(); }, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    auto dir = freshDir("corrupt-" + c.name);
    CheckpointStore store(dir.string(), {});
    store.save(makeDoc(6), 6, 0, {});
    auto newest = store.save(makeDoc(7), 7, 0, {});
    std::string bytes;
    {
      std::ifstream in(newest.path, std::ios::binary);
      bytes.assign((std::istreambuf_iterator<char>(in)), {});
    }
    c.corrupt(bytes);
    std::ofstream(newest.path, std::ios::binary | std::ios::trunc) << bytes;
    if (!c.keepManifestHash) {
      auto record = newest.record;
      record["sha256"] = toHex(sha256File(newest.path));
      std::ofstream(newest.manifest, std::ios::trunc) << record.dump();
    }
    try {
      verifyCheckpoint(newest.path);
      ADD_FAILURE() << "corrupt checkpoint verified";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(newest.path), std::string::npos) << e.what();
    }
    std::vector<std::string> skipped;
    auto valid = store.newestValid(&skipped);
    ASSERT_TRUE(valid.has_value());
    EXPECT_EQ(valid->step, 6);
    EXPECT_EQ(skipped.size(), 1u);
  }
}

// ---- Documents built in memory and streamed (NOTE [File image] in checkpoint/file_image.h) ----

std::vector<uint8_t> fileBytes(const stdfs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::vector<uint8_t> imageBytes(const FileImage& image) {
  std::vector<uint8_t> out(image.size());
  image.read(0, out.size(), out.data());
  return out;
}

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * static_cast<float>(i);
  return v;
}

TEST(FileImage, WritesReplaceOverlapsAndGapsReadAsZeros) {
  FileImage image;
  const std::vector<uint8_t> a(100, 1), b(10, 2);
  image.write(50, a.size(), a.data(), false);
  image.write(90, b.size(), b.data(), false);  // inside the first write
  image.write(145, b.size(), b.data(), false);  // over its end
  EXPECT_EQ(image.size(), 155u);
  const auto bytes = imageBytes(image);
  for (size_t i = 0; i < bytes.size(); ++i) {
    const uint8_t want = i < 50 ? 0 : (i >= 90 && i < 100) || i >= 145 ? 2 : 1;
    ASSERT_EQ(bytes[i], want) << "byte " << i;
  }
  image.truncate(120);
  EXPECT_EQ(image.size(), 120u);
  EXPECT_EQ(image.extents().back().end(), 120u);
  image.truncate(200);
  EXPECT_EQ(imageBytes(image)[150], 0);
}

TEST(FileImage, DataFromStableMemoryAreNotCopied) {
  const std::vector<uint8_t> data(1 << 20, 7);
  FileImage image({{data.data(), data.size()}});
  image.write(4096, 1000, data.data() + 10, /*raw=*/true);
  image.write(8192, 1000, data.data() + 10, /*raw=*/false);  // metadata is always copied
  const std::vector<uint8_t> elsewhere(100, 7);
  image.write(0, elsewhere.size(), elsewhere.data(), /*raw=*/true);
  EXPECT_EQ(image.borrowedBytes(), 1000u);
  EXPECT_EQ(image.copiedBytes(), 1100u);
}

// The in-memory driver lays a file out as HDF5's default driver does: same content, same bytes.
TEST(FileImage, SameBytesAsHdf5DefaultDriver) {
  auto dir = freshDir("driver");
  const auto big = ramp(300000, 0.25f), small = ramp(30, 1.0f);
  FileImage image({{big.data(), big.size() * 4}, {small.data(), small.size() * 4}});
  auto fill = [&](hid_t file, const std::string& name) {
    h5::writeAttr(file, "note", std::string("same bytes"), name);
    h5::Handle g = h5::createGroup(file, "g", name);
    h5::writeDataset(g, "small", DType::kFloat32, {30}, small.data(), name);
    h5::writeDataset(g, "big", DType::kFloat32, {300000}, big.data(), name);
    h5::writeDataset(g, "empty", DType::kFloat32, {0}, nullptr, name);
    h5::check(H5Fflush(file, H5F_SCOPE_GLOBAL), "H5Fflush", name);
  };
  {
    h5::Handle f = h5::createFile((dir / "sec2.h5").string());
    fill(f, "sec2");
    ASSERT_GE(H5Fclose(f.release()), 0);
  }
  {
    h5::Handle f = createImageFile("image", &image);
    fill(f, "image");
    ASSERT_GE(H5Fclose(f.release()), 0);
  }
  EXPECT_EQ(imageBytes(image), fileBytes(dir / "sec2.h5"));
  EXPECT_GE(image.borrowedBytes(), big.size() * 4) << "the large dataset's data must be kept as a pointer";
}

TEST(SpeculativeHasher, GoesBackOnlyToTheFirstDifference) {
  const std::vector<uint8_t> data(3 << 20, 5);
  auto build = [&](uint8_t head, uint8_t tail) {
    auto image = std::make_shared<FileImage>(std::vector<std::pair<const void*, size_t>>{{data.data(), data.size()}});
    const uint8_t h[64] = {head}, t[64] = {tail};
    image->write(0, sizeof(h), h, false);
    image->write(4096, data.size(), data.data(), true);
    image->write(4096 + data.size() + 100, sizeof(t), t, false);
    return image;
  };
  for (auto [head, tail] : {std::pair<uint8_t, uint8_t>{1, 2}, {9, 1}}) {
    SCOPED_TRACE(std::to_string(head) + " " + std::to_string(tail));
    auto provisional = build(1, 1), final = build(head, tail);
    SpeculativeHasher hasher;
    hasher.advance(provisional, nullptr);
    const std::string got = hasher.finish(final);
    const auto bytes = imageBytes(*final);
    EXPECT_EQ(got, toHex(sha256(bytes.data(), bytes.size())));
    if (head == 1) {
      EXPECT_LE(hasher.rehashedBytes(), 200u) << "a change after the data must not rehash the data";
    } else {
      EXPECT_EQ(hasher.rehashedBytes(), final->size());
    }
  }
}

TEST(SpeculativeHasher, StopsWhenAskedAndFinishesTheFinalImage) {
  const std::vector<uint8_t> data(20 << 20, 3);
  auto image = std::make_shared<FileImage>();
  image->write(0, data.size(), data.data(), false);
  SpeculativeHasher hasher;
  hasher.advance(image, [] { return true; });
  EXPECT_EQ(hasher.finish(image), toHex(sha256(data.data(), data.size())));
}

// The SHA-256 writeDocument returns (recorded in the manifest) is the file's, whether the
// computed values keep their placeholders' length or not, and the file reads back.
TEST(FileImage, WriteDocumentHashIsTheFileHash) {
  auto dir = freshDir("document");
  const auto big = ramp(1 << 20, 0.5f);
  for (size_t deferredChars : {64, 10, 500}) {
    SCOPED_TRACE(deferredChars);
    Document doc;
    doc.format = "perennial-test";
    doc.strings = {{"a", "x"}, {"config", std::string(3000, 'c')}};
    for (int i = 0; i < 12; ++i) doc.ints["i" + std::to_string(i)] = i;
    Group g{"state_dict", {}};
    g.tensors.push_back(Tensor{"big", DType::kFloat32, {1 << 20}, {}, big.data()});
    Tensor small{"small", DType::kInt64, {3}, {}, nullptr};
    small.bytes.assign(24, 4);
    g.tensors.push_back(std::move(small));
    doc.groups.push_back(std::move(g));
    doc.deferredStrings["param_sha256"] = [deferredChars] { return std::string(deferredChars, 'f'); };
    const std::string path = (dir / ("doc-" + std::to_string(deferredChars) + ".h5")).string();
    std::string hex;
    writeDocument(path, doc, &hex);
    EXPECT_EQ(hex, toHex(sha256File(path)));
    Document back = readDocument(path, "perennial-test");
    EXPECT_EQ(back.str("param_sha256", path), std::string(deferredChars, 'f'));
    ASSERT_NE(back.group("state_dict"), nullptr);
    EXPECT_EQ(std::memcmp(back.group("state_dict")->find("big")->data(), big.data(), big.size() * 4), 0);
    for (const auto& e : stdfs::directory_iterator(dir)) {
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
    }
  }
  // And the manifest records the file's SHA-256.
  CheckpointStore store((dir / "store").string(), {});
  auto info = store.save(makeDoc(3), 3, 0, {});
  EXPECT_EQ(info.sha256, toHex(sha256File(info.path)));
  EXPECT_NO_THROW(verifyCheckpoint(info.path));
}

// NOTE [Kill points]: a child process saves a checkpoint and SIGKILLs itself at the Pth fault
// point it reaches (common/fault.h: after each tensor, around truncate, fsync, close, publish and
// the manifest). Whatever P, the directory must hold only committed checkpoints that verify, and
// the newest valid one must be the previous checkpoint, or the new one when the kill came after
// its commit.
TEST(CheckpointStore, KilledWriterNeverLeavesACommittedCorruptCheckpoint) {
  // The points of one save, in order: every one of them is a kill point below.
  std::vector<std::string> names;
  {
    auto dir = freshDir("kill-points");
    CheckpointStore store(dir.string(), {});
    fault::ScopedHandler record([&](const std::string& point) { names.push_back(point); });
    store.save(makeDoc(2), 2, 0, {});
  }
  ASSERT_EQ(names.size(), 24u) << "open, 16 tensors, truncate, fsync, close, publish, 3 of the manifest";
  EXPECT_EQ(names.front(), "document-created");
  EXPECT_EQ(names.back(), "checkpoint-manifest-written");
  const int commitPoint = static_cast<int>(names.size()) - 1;
  int killedBeforeCommit = 0, killedAfterCommit = 0;
  for (int p = 0; p < static_cast<int>(names.size()); ++p) {
    SCOPED_TRACE("kill point " + std::to_string(p) + " (" + names[static_cast<size_t>(p)] + ")");
    auto dir = freshDir("kill-" + std::to_string(p));
    CheckpointStore store(dir.string(), {});
    store.save(makeDoc(1), 1, 0, {});
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      int reached = 0;
      fault::ScopedHandler kill([&](const std::string&) {
        if (reached++ == p) ::kill(::getpid(), SIGKILL);
      });
      CheckpointStore s(dir.string(), {});
      s.save(makeDoc(2), 2, 0, {});
      _exit(0);  // the point was never reached
    }
    int status = 0;
    waitpid(child, &status, 0);
    const bool killed = WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL;
    for (const auto& c : store.committed()) EXPECT_NO_THROW(verifyCheckpoint(c.path)) << c.path;
    auto valid = store.newestValid();
    ASSERT_TRUE(valid.has_value());
    if (!killed) continue;
    if (valid->step == 2) {
      ++killedAfterCommit;
      EXPECT_GE(p, commitPoint) << "committed before the manifest was written";
    } else {
      ++killedBeforeCommit;
      EXPECT_EQ(valid->step, 1);
    }
    // The next save cleans up whatever the crash left.
    store.save(makeDoc(3), 3, 0, {});
    for (const auto& e : stdfs::directory_iterator(dir)) {
      EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
    }
  }
  EXPECT_GE(killedBeforeCommit + killedAfterCommit, 20) << "the writer must be killed at 20 or more points";
  EXPECT_GE(killedBeforeCommit, 18);
}

}  // namespace
}  // namespace perennial::checkpoint
