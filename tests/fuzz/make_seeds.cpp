// Writes the HDF5 seed corpora of the fuzz targets with the project's own writers:
//   perennial_fuzz_seeds OUT   ->  OUT/checkpoint_reader/*, OUT/shard_validator/*,
//                                  OUT/train_config/resolved-defaults.cfg
// tests/fuzz/make_seeds.sh runs it into tests/fuzz/corpus/, where the seeds are committed; the
// other text seeds there are written by hand. Rerun it only after a format change.
//
// Besides valid files, each corpus holds files a foreign writer could produce (h5py's default
// earliest-version format, whose metadata carries no checksums, so mutations reach the parsers
// instead of failing a checksum), unusual but well-formed layouts (attributes with several
// elements, variable-length strings, other integer widths), and damaged copies (truncated,
// bytes flipped at fixed places).
#include <hdf5.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_store.h"
#include "checkpoint/document.h"
#include "common/h5.h"
#include "checkpoint/tensor_file.h"
#include "trainer/config/train_config.h"
#include "dataset/shard_dataset.h"

namespace stdfs = std::filesystem;
using namespace perennial;

namespace {

std::string slurp(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

void spit(const std::string& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << bytes;
}

// Damaged copies of SRC: truncated to half and to all but 16 bytes, and with bytes flipped at
// a few fixed offsets spread over the file (deterministic: same file, same seeds).
void damaged(const std::string& src, const std::string& stem) {
  const std::string b = slurp(src);
  spit(stem + "-truncated-half.h5", b.substr(0, b.size() / 2));
  spit(stem + "-truncated-tail.h5", b.substr(0, b.size() - 16));
  for (double at : {0.02, 0.3, 0.7}) {
    std::string f = b;
    const size_t i = static_cast<size_t>(at * static_cast<double>(f.size()));
    f[i] = static_cast<char>(f[i] ^ 0x5a);
    spit(stem + "-flip" + std::to_string(static_cast<int>(at * 100)) + ".h5", f);
  }
}

// A file in HDF5's default (earliest) format, as h5py writes by default.
h5::Handle createLegacyFile(const std::string& path) {
  h5::quietErrors();
  return h5::Handle(h5::check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), "H5Fcreate", path));
}

std::vector<uint8_t> floats(std::initializer_list<float> v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), std::data(v), b.size());
  return b;
}

checkpoint::Document smallCheckpoint() {
  checkpoint::Document doc;
  doc.format = checkpoint::kCheckpointFormat;
  doc.formatVersion = checkpoint::kCheckpointFormatVersion;
  doc.strings = {{"config", "[model]\narch = mlp\nhidden = 4\n"}, {"config_sha256", "c0ffee"},
                 {"param_sha256", "feed"}, {"optimizer.name", "adam"}};
  doc.ints = {{"progress.step", 12}, {"progress.epoch", 1}, {"progress.sample_cursor", 96}, {"world.size", 2}};
  doc.floats = {{"lr.current", 0.05}};
  checkpoint::Group sd{"state_dict", {}};
  sd.tensors.push_back({"1.weight", DType::kFloat32, {2, 3}, floats({1, 2, 3, 4, 5, 6}), nullptr});
  sd.tensors.push_back({"1.bias", DType::kFloat32, {2}, floats({0.5f, -0.5f}), nullptr});
  checkpoint::Group opt{"optimizer/exp_avg", {}};
  opt.tensors.push_back({"1.weight", DType::kFloat32, {2, 3}, floats({0, 0, 0, 0, 0, 0}), nullptr});
  checkpoint::Group rng{"rng", {}};
  std::vector<uint8_t> state(16);
  for (size_t i = 0; i < state.size(); ++i) state[i] = static_cast<uint8_t>(i * 17);
  rng.tensors.push_back({"state", DType::kUInt8, {16}, state, nullptr});
  std::vector<uint8_t> step(8);
  const int64_t twelve = 12;
  std::memcpy(step.data(), &twelve, 8);
  rng.tensors.push_back({"step", DType::kInt64, {}, step, nullptr});
  rng.tensors.push_back({"empty", DType::kFloat64, {0, 4}, {}, nullptr});
  doc.groups = {sd, opt, rng};
  return doc;
}

// The same document written with the earliest format (no metadata checksums), the way a
// foreign writer would produce it: same attributes, groups, `order` lists and digests.
void writeLegacyDocument(const std::string& path, const checkpoint::Document& doc, const std::string& digestsFrom) {
  // Digests are copied from the file writeDocument wrote, so the legacy file verifies.
  h5::Handle src = h5::openFile(digestsFrom);
  h5::Handle f = createLegacyFile(path);
  h5::writeAttr(f, "format", doc.format, path);
  h5::writeAttr(f, "format_version", doc.formatVersion, path);
  std::string groups;
  for (const auto& g : doc.groups) groups += g.path + "\n";
  h5::writeAttr(f, "groups", groups, path);
  for (const auto& [k, v] : doc.strings) h5::writeAttr(f, k, v, path);
  for (const auto& [k, v] : doc.ints) h5::writeAttr(f, k, v, path);
  for (const auto& g : doc.groups) {
    std::string sofar, part;
    std::stringstream parts(g.path);
    h5::Handle leaf;
    while (std::getline(parts, part, '/')) {
      sofar += (sofar.empty() ? "" : "/") + part;
      leaf = h5::exists(f, sofar) ? h5::openGroup(f, sofar, path) : h5::Handle(H5Gcreate2(f, sofar.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    }
    std::string order;
    for (const auto& t : g.tensors) order += t.name + "\n";
    h5::writeAttr(leaf, "order", order, path);
    h5::Handle srcGroup = h5::openGroup(src, g.path, digestsFrom);
    for (const auto& t : g.tensors) {
      h5::writeDataset(leaf, t.name, t.type, t.shape, t.data(), path);
      h5::Handle sds(H5Dopen2(srcGroup, t.name.c_str(), H5P_DEFAULT));
      h5::Handle ds(H5Dopen2(leaf, t.name.c_str(), H5P_DEFAULT));
      h5::writeAttr(ds, "xxh3_64", h5::readStringAttr(sds, "xxh3_64", digestsFrom), path);
    }
  }
}

// Root attributes of shapes a foreign writer may use where Perennial writes scalars.
void writeOddAttributes(const std::string& path) {
  h5::Handle f = createLegacyFile(path);
  h5::writeAttr(f, "format", std::string(checkpoint::kWeightsFormat), path);
  h5::writeAttr(f, "format_version", int64_t{1}, path);
  h5::writeAttr(f, "groups", std::string("state_dict\n"), path);
  {  // a fixed-length string attribute with 3 elements (longer than std::string's inline buffer)
    h5::Handle type(H5Tcopy(H5T_C_S1));
    H5Tset_size(type, 24);
    hsize_t n = 3;
    h5::Handle space(H5Screate_simple(1, &n, nullptr));
    h5::Handle a(H5Acreate2(f, "arch", type, space, H5P_DEFAULT, H5P_DEFAULT));
    std::string v(72, '\0');
    v.replace(0, 3, "mlp");
    v.replace(24, 3, "cnn");
    v.replace(48, 3, "abc");
    H5Awrite(a, type, v.data());
  }
  {  // a variable-length UTF-8 string (h5py's default for str)
    h5::Handle type(H5Tcopy(H5T_C_S1));
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    h5::Handle space(H5Screate(H5S_SCALAR));
    h5::Handle a(H5Acreate2(f, "config", type, space, H5P_DEFAULT, H5P_DEFAULT));
    const char* s = "[model]\narch = mlp\n";
    H5Awrite(a, type, &s);
  }
  {  // a float attribute with 2 elements
    hsize_t n = 2;
    h5::Handle space(H5Screate_simple(1, &n, nullptr));
    h5::Handle a(H5Acreate2(f, "lr", H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT));
    const double v[2] = {0.1, 0.2};
    H5Awrite(a, H5T_NATIVE_DOUBLE, v);
  }
  {  // an int32 attribute
    h5::Handle space(H5Screate(H5S_SCALAR));
    h5::Handle a(H5Acreate2(f, "world.size", H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT));
    const int32_t v = 2;
    H5Awrite(a, H5T_NATIVE_INT32, &v);
  }
  h5::Handle g(H5Gcreate2(f, "state_dict", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  h5::writeAttr(g, "order", std::string("w\n"), path);
  const float w[2] = {1, 2};
  h5::writeDataset(g, "w", DType::kFloat32, {2}, w, path);
  h5::Handle ds(H5Dopen2(g, "w", H5P_DEFAULT));
  h5::writeAttr(ds, "xxh3_64", std::string("0000000000000000"), path);
}

// --- shards ---------------------------------------------------------------------------------

struct Spec {
  std::string name = "fashion-mnist", dtype = "uint8";
  std::vector<int64_t> shape{28, 28};
  int64_t classes = 10, version = 1;
};

void writeSpec(hid_t f, const Spec& s, const std::string& ctx) {
  h5::writeAttr(f, "spec.version", s.version, ctx);
  h5::writeAttr(f, "spec.name", s.name, ctx);
  h5::writeAttr(f, "spec.features", std::string("images"), ctx);
  h5::writeAttr(f, "spec.labels", std::string("labels"), ctx);
  h5::writeAttr(f, "spec.feature_shape", s.shape, ctx);
  h5::writeAttr(f, "spec.feature_dtype", s.dtype, ctx);
  h5::writeAttr(f, "spec.num_classes", s.classes, ctx);
}

// A small float32 [rows, 3, 2] shard for the fuzzer's second spec (4 classes, values in [0, 1]).
void floatShard(const std::string& path, bool legacy, int64_t rows, float poison = 0.25f,
                int64_t badLabel = -1, std::vector<int64_t> labelShape = {}) {
  h5::Handle f = legacy ? createLegacyFile(path) : h5::createFile(path);
  Spec s;
  s.dtype = "float32";
  s.shape = {3, 2};
  s.classes = 4;
  writeSpec(f, s, path);
  std::vector<float> x(static_cast<size_t>(rows * 6));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) / 7.0f;
  if (!x.empty()) x[x.size() / 2] = poison;
  std::vector<int64_t> y(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) y[static_cast<size_t>(i)] = i % 4;
  if (badLabel >= 0 && rows > 0) y[0] = badLabel;
  h5::writeDataset(f, "images", DType::kFloat32, {rows, 3, 2}, x.data(), path);
  if (labelShape.empty()) labelShape = {rows};
  h5::writeDataset(f, "labels", DType::kInt64, labelShape, y.data(), path);
}

void fashionShard(const std::string& path, int64_t rows) {
  std::vector<uint8_t> x(static_cast<size_t>(rows * 784));
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<uint8_t>((i * 37) % 256);
  std::vector<int64_t> y(static_cast<size_t>(rows));
  for (int64_t i = 0; i < rows; ++i) y[static_cast<size_t>(i)] = i % 10;
  data::writeShard(path, data::DatasetSpec{"fashion-mnist", "images", "labels", {28, 28}, DType::kUInt8, DType::kInt64, 10},
                   x.data(), y.data(), rows);
}

void legacyFashionShard(const std::string& path, int64_t rows, const Spec& s, DType labelType = DType::kInt64) {
  h5::Handle f = createLegacyFile(path);
  writeSpec(f, s, path);
  std::vector<uint8_t> x(static_cast<size_t>(rows * 784), 9);
  h5::writeDataset(f, "images", DType::kUInt8, {rows, 28, 28}, x.data(), path);
  std::vector<int64_t> y(static_cast<size_t>(rows), 3);
  std::vector<int32_t> y32(static_cast<size_t>(rows), 3);
  h5::writeDataset(f, "labels", labelType, {rows}, labelType == DType::kInt64 ? static_cast<void*>(y.data()) : y32.data(), path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: perennial_fuzz_seeds OUT\n";
    return 2;
  }
  const std::string out = argv[1];
  const std::string ck = out + "/checkpoint_reader", sh = out + "/shard_validator", tc = out + "/train_config";
  stdfs::create_directories(ck);
  stdfs::create_directories(sh);
  stdfs::create_directories(tc);

  // Trainer configuration: the resolved form of the defaults (every key, as RUN/config.cfg).
  spit(tc + "/resolved-defaults.cfg",
       parseTrainConfigText("[data]\ntrain = data/train\ntest = data/test\n", "seed").toIni());

  // Checkpoint reader.
  const auto doc = smallCheckpoint();
  checkpoint::writeDocument(ck + "/checkpoint.h5", doc);
  writeLegacyDocument(ck + "/checkpoint-earliest-format.h5", doc, ck + "/checkpoint.h5");
  const float w[6] = {1, 2, 3, 4, 5, 6}, b[2] = {0.5f, -0.5f};
  checkpoint::writeTensorFile(ck + "/weights.h5",
                              {{"1.weight", DType::kFloat32, {2, 3}, w}, {"1.bias", DType::kFloat32, {2}, b}},
                              {{"arch", "mlp"}, {"config", "[model]\narch = mlp\n"}, {"param_sha256", "00"}});
  writeOddAttributes(ck + "/weights-odd-attributes.h5");
  damaged(ck + "/checkpoint.h5", ck + "/checkpoint");
  damaged(ck + "/checkpoint-earliest-format.h5", ck + "/checkpoint-earliest-format");
  spit(ck + "/not-hdf5.txt", "this is not a checkpoint\n");
  // A valid HDF5 file that is not a Perennial document.
  floatShard(ck + "/a-shard.h5", true, 2);

  // Shard validator: valid shards of both specs, then one per rule.
  fashionShard(sh + "/fashion-valid.h5", 3);
  legacyFashionShard(sh + "/fashion-valid-earliest-format.h5", 2, Spec{});
  floatShard(sh + "/float-valid.h5", false, 5);
  floatShard(sh + "/float-valid-earliest-format.h5", true, 5);
  floatShard(sh + "/float-nan.h5", true, 4, std::numeric_limits<float>::quiet_NaN());
  floatShard(sh + "/float-label-out-of-range.h5", true, 4, 0.25f, 7);
  floatShard(sh + "/float-empty.h5", true, 0);
  floatShard(sh + "/float-labels-2d.h5", true, 4, 0.25f, -1, {2, 2});
  Spec wrongName;
  wrongName.name = "mnist";
  legacyFashionShard(sh + "/fashion-wrong-spec-name.h5", 1, wrongName);
  legacyFashionShard(sh + "/fashion-int32-labels.h5", 1, Spec{}, DType::kInt32);
  damaged(sh + "/fashion-valid-earliest-format.h5", sh + "/fashion-earliest-format");
  damaged(sh + "/float-valid-earliest-format.h5", sh + "/float-earliest-format");
  damaged(sh + "/float-valid.h5", sh + "/float");
  spit(sh + "/not-hdf5.txt", "this is not a shard\n");
  std::cout << "seeds written under " << out << "\n";
  return 0;
}
