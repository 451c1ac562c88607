#pragma once
// The fuzz targets' entry points (tests/fuzz/*_fuzz.cpp wrap them for libFuzzer;
// tests/fuzz/regressions_replay_test.cpp replays tests/fuzz/regressions/ through them with gcc).
//
// Each entry point feeds one input to one parser and swallows the rejections that parser is
// documented to throw; anything else escapes: another exception type (an uncaught
// std::out_of_range, an InternalError, which the error policy calls a bug), or a violated
// property, thrown as FuzzFailure. The libFuzzer wrapper turns whatever escapes into abort(),
// which libFuzzer records as a crash with the input. Memory errors are ASan's, hangs are
// libFuzzer's -timeout.
//
// Readers of files (HDF5 opens paths) get the input written to a file in a private temporary
// directory, on /dev/shm when it is writable (PERENNIAL_FUZZ_TMP overrides).
#include <fcntl.h>
#include <hdf5.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

#include "checkpoint/checkpoint_store.h"
#include "checkpoint/document.h"
#include "common/h5.h"
#include "checkpoint/tensor_file.h"
#include "common/error.h"
#include "scheduler/gate.h"
#include "scheduler/sched_config.h"
#include "dataset/shard_validator.h"
#include "trainer/config/train_config.h"
#ifdef PERENNIAL_FUZZ_CSV
#include <sstream>

#include "dataset/csv_import.h"
#endif

namespace perennial::fuzz {

// A property of the code under test does not hold (not a rejection the caller handles).
class FuzzFailure : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// The private working directory, created once per process and removed at exit.
inline const std::string& workDir() {
  static const std::string dir = [] {
    namespace stdfs = std::filesystem;
    std::string base;
    if (const char* env = std::getenv("PERENNIAL_FUZZ_TMP"); env && *env) {
      base = env;
    } else if (::access("/dev/shm", W_OK) == 0) {
      base = "/dev/shm";
    } else {
      base = stdfs::temp_directory_path().string();
    }
    std::string tmpl = base + "/perennial-fuzz-XXXXXX";
    if (!::mkdtemp(tmpl.data())) {
      std::perror(("mkdtemp " + tmpl).c_str());
      std::abort();
    }
    static std::string removeAtExit;
    removeAtExit = tmpl;
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(removeAtExit, ec);
    });
    return tmpl;
  }();
  return dir;
}

// Writes DATA to DIR/NAME as a new file (a fresh inode, so nothing of an earlier input can be
// cached by name) and returns its path.
inline std::string writeInput(const std::string& name, const uint8_t* data, size_t size) {
  const std::string path = workDir() + "/" + name;
  ::unlink(path.c_str());
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    std::perror(("open " + path).c_str());
    std::abort();
  }
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) {
      std::perror(("write " + path).c_str());
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return path;
}

// HDF5 objects (files, groups, datasets, attributes, types, spaces) still open: every reader
// closes what it opens, also when it throws. A leak here would also keep a file open inside
// HDF5, which then serves a later open of the same path from its cache.
inline ssize_t openHdf5Objects() { return H5Fget_obj_count(H5F_OBJ_ALL, H5F_OBJ_ALL); }

inline void expectNoHdf5Leak(ssize_t before, const char* what) {
  const ssize_t after = openHdf5Objects();
  if (after != before) {
    throw FuzzFailure(std::string(what) + ": " + std::to_string(after - before) + " HDF5 object(s) left open");
  }
}

// --- checkpoint reader: readDocument, readTensorFile, verifyCheckpoint ----------------------
// Expected: any perennial::Error except InternalError (DataError, IoError).
inline void checkpointReader(const uint8_t* data, size_t size) {
  h5::quietErrors();
  // No manifest beside it: verifyCheckpoint checks the document, not a recorded SHA-256.
  const std::string path = writeInput("input.h5", data, size);
  const ssize_t before = openHdf5Objects();
  auto expectRejection = [](auto&& fn) {
    try {
      fn();
    } catch (const InternalError&) {
      throw;
    } catch (const Error&) {
    }
  };
  expectRejection([&] { checkpoint::readDocument(path); });
  expectRejection([&] { checkpoint::readTensorFile(path); });
  expectRejection([&] { checkpoint::verifyCheckpoint(path); });
  expectNoHdf5Leak(before, "checkpoint reader");
}

// --- shard validator --------------------------------------------------------------------------
// Expected: ShardRejected. The input is validated against two specs: the default (Fashion-MNIST,
// uint8 28x28) and a small float32 one, so both code paths are reachable from small files.
inline data::DatasetRules smallFloatRules() {
  data::DatasetRules r;
  r.spec.featureType = DType::kFloat32;
  r.spec.featureShape = {3, 2};
  r.spec.numClasses = 4;
  r.valueMin = 0;
  r.valueMax = 1;
  r.maxShardRows = 100000;
  return r;
}

inline void shardValidator(const uint8_t* data, size_t size) {
  h5::quietErrors();
  const std::string path = writeInput("shard.h5", data, size);
  const ssize_t before = openHdf5Objects();
  for (const data::DatasetRules& rules : {data::DatasetRules{}, smallFloatRules()}) {
    try {
      const data::ShardSummary s = data::validateShard(path, rules);
      // Accepted: the summary must describe what was validated.
      int64_t labelled = 0;
      for (int64_t c : s.profile.labels) labelled += c;
      if (s.rows <= 0 || s.rows > rules.maxShardRows || labelled != s.rows ||
          static_cast<int64_t>(s.profile.labels.size()) != rules.spec.numClasses) {
        throw FuzzFailure("validateShard accepted a shard with an inconsistent summary (rows " +
                          std::to_string(s.rows) + ", labelled " + std::to_string(labelled) + ")");
      }
    } catch (const data::ShardRejected&) {
    }
  }
  expectNoHdf5Leak(before, "validateShard");
}

// --- trainer configuration --------------------------------------------------------------------
// Expected: ConfigError. An accepted configuration must survive its own round trip: the resolved
// text (TrainConfig::toIni, written to RUN/config.cfg and hashed) parses again to the same text.
inline void trainConfig(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  TrainConfig c;
  try {
    c = parseTrainConfigText(text, "fuzz.cfg");
  } catch (const ConfigError&) {
    return;
  }
  const std::string ini = c.toIni();
  std::string again;
  try {
    again = parseTrainConfigText(ini, "resolved.cfg").toIni();
  } catch (const ConfigError& e) {
    throw FuzzFailure(std::string("an accepted configuration's toIni() does not parse: ") + e.what() + "\n" + ini);
  }
  if (again != ini) throw FuzzFailure("toIni() does not round-trip:\n" + ini + "---\n" + again);
}

// --- scheduler and gate configuration ---------------------------------------------------------
// Expected: ConfigError. The file lies in DIR/configs/ beside the files the shipped
// configs/scheduler.cfg names (fashion-mlp.cfg, ../out/demo/data/test), so a valid
// configuration gets past the existence checks of train.config and train.holdout.
inline void schedConfig(const uint8_t* data, size_t size) {
  namespace stdfs = std::filesystem;
  static const bool layout = [] {
    const std::string d = workDir();
    stdfs::create_directories(d + "/configs");
    stdfs::create_directories(d + "/out/demo/data/test");
    const uint8_t cfg[] = "[model]\narch = mlp\n";
    writeInput("configs/fashion-mlp.cfg", cfg, sizeof(cfg) - 1);
    writeInput("configs/fashion-cnn.cfg", cfg, sizeof(cfg) - 1);
    return true;
  }();
  (void)layout;
  const std::string path = writeInput("configs/scheduler.cfg", data, size);
  try {
    sched::loadSchedConfig(path);
  } catch (const ConfigError&) {
  }
  try {
    sched::loadGateConfig(path);
  } catch (const ConfigError&) {
  }
}

#ifdef PERENNIAL_FUZZ_CSV
// --- CSV import -------------------------------------------------------------------------------
// The first byte picks the schema (regression; classes by name; class ids) and the delimiter;
// the rest is the CSV text. Expected: DataError. An accepted document must give a consistent
// table: rows x features values, one target per row, finite values, labels in range.
inline void csvImport(const uint8_t* data, size_t size) {
  static const data::CsvSchema schemas[] = {
      data::parseCsvSchema(R"({"name":"f","task":"regression","features":["a","b"],"target":"y","ignore":["id"]})", "r"),
      data::parseCsvSchema(R"({"name":"f","task":"classification","features":["a"],"target":"k","classes":["x","y z"]})", "c"),
      data::parseCsvSchema(R"({"name":"f","task":"classification","features":["a","b"],"target":"k","num_classes":3})", "n"),
  };
  if (size == 0) return;
  const data::CsvSchema& schema = schemas[data[0] % 3];
  const char delimiter = (data[0] / 3) % 2 ? '\t' : ',';
  std::istringstream in(std::string(reinterpret_cast<const char*>(data) + 1, size - 1));
  data::CsvTable t;
  try {
    data::readCsv(in, "fuzz.csv", schema, delimiter, t, 100000);
  } catch (const DataError&) {
    if (t.rows != 0 || !t.features.empty() || !t.values.empty() || !t.labels.empty()) {
      throw FuzzFailure("a refused document left rows in the table");
    }
    return;
  }
  const size_t rows = static_cast<size_t>(t.rows);
  if (t.features.size() != rows * schema.features.size()) throw FuzzFailure("features do not fill rows x columns");
  if ((schema.regression ? t.values.size() : t.labels.size()) != rows) throw FuzzFailure("not one target per row");
  for (float v : t.features) {
    if (!std::isfinite(v)) throw FuzzFailure("a non-finite feature was accepted");
  }
  for (float v : t.values) {
    if (!std::isfinite(v)) throw FuzzFailure("a non-finite target was accepted");
  }
  for (int64_t y : t.labels) {
    if (y < 0 || y >= schema.numClasses) throw FuzzFailure("a label outside [0, classes) was accepted");
  }
}
#endif

}  // namespace perennial::fuzz
