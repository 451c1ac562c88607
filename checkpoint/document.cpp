#include "checkpoint/document.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <sstream>

#include "checkpoint/h5.h"
#include "common/error.h"
#include "common/fs_util.h"
#include "common/sha256.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

namespace perennial::checkpoint {
namespace stdfs = std::filesystem;

int64_t Tensor::elements() const { return shapeElements(shape); }

const Tensor* Group::find(const std::string& name) const {
  for (const auto& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const Group* Document::group(const std::string& path) const {
  for (const auto& g : groups) {
    if (g.path == path) return &g;
  }
  return nullptr;
}

const std::string& Document::str(const std::string& key, const std::string& source) const {
  auto it = strings.find(key);
  if (it == strings.end()) throw DataError(source + ": attribute '" + key + "' missing");
  return it->second;
}

int64_t Document::integer(const std::string& key, const std::string& source) const {
  auto it = ints.find(key);
  if (it == ints.end()) throw DataError(source + ": attribute '" + key + "' missing");
  return it->second;
}

double Document::real(const std::string& key, const std::string& source) const {
  auto it = floats.find(key);
  if (it == floats.end()) throw DataError(source + ": attribute '" + key + "' missing");
  return it->second;
}

namespace {

void writeFloatAttr(hid_t obj, const std::string& name, double value, const std::string& ctx) {
  const std::string where = ctx + "@" + name;
  h5::Handle space(h5::check(H5Screate(H5S_SCALAR), "H5Screate", where));
  h5::Handle attr(h5::check(H5Acreate2(obj, name.c_str(), H5T_IEEE_F64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                            "H5Acreate2", where));
  h5::check(H5Awrite(attr, H5T_NATIVE_DOUBLE, &value), "H5Awrite", where);
}

// NOTE [Tensor digests]: each dataset carries `xxh3_64`, the XXH3-64 digest of its bytes as 16
// hex digits. It is checked on every read. XXH3 runs at memory speed, so verification costs
// little beside the I/O (HDF5's Fletcher32 filter needs chunking and copies through the filter
// pipeline, which halved save throughput). The whole file's SHA-256 is recorded at commit too.
std::string xxh3Hex(const void* data, size_t bytes) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(XXH3_64bits(data, bytes)));
  return buf;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string l;
  while (std::getline(in, l)) {
    if (!l.empty()) out.push_back(l);
  }
  return out;
}

}  // namespace

void writeDocument(const std::string& path, const Document& doc, const FaultHook& hook,
                   std::string* sha256Hex) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int point = 0;
  auto reached = [&] {
    if (hook) hook(point);
    ++point;
  };
  try {
    {
      h5::Handle file = h5::createFile(tmp);
      reached();
      h5::writeAttr(file, "format", doc.format, tmp);
      h5::writeAttr(file, "format_version", doc.formatVersion, tmp);
      std::string groupList;
      for (const auto& g : doc.groups) groupList += g.path + "\n";
      h5::writeAttr(file, "groups", groupList, tmp);
      for (const auto& [k, v] : doc.strings) h5::writeAttr(file, k, v, tmp);
      for (const auto& [k, v] : doc.ints) h5::writeAttr(file, k, v, tmp);
      for (const auto& [k, v] : doc.floats) writeFloatAttr(file, k, v, tmp);
      std::vector<std::pair<std::string, std::future<std::string>>> deferred;
      for (const auto& [k, fn] : doc.deferredStrings) deferred.emplace_back(k, std::async(std::launch::async, fn));
      for (const auto& g : doc.groups) {
        // Create each level of a nested path once, in order.
        std::string sofar;
        std::stringstream parts(g.path);
        std::string part;
        h5::Handle leaf;
        while (std::getline(parts, part, '/')) {
          sofar += (sofar.empty() ? "" : "/") + part;
          leaf = h5::exists(file, sofar) ? h5::openGroup(file, sofar, tmp) : h5::createGroup(file, sofar, tmp);
        }
        std::string order;
        for (const auto& t : g.tensors) order += t.name + "\n";
        h5::writeAttr(leaf, "order", order, tmp + ":/" + g.path);
        for (const auto& t : g.tensors) {
          PERENNIAL_CHECK(t.external || t.byteSize() == t.bytes.size(),
                          "tensor " << g.path << "/" << t.name << " has " << t.bytes.size() << " bytes for its shape");
          const std::string where = tmp + ":/" + g.path;
          h5::writeDataset(leaf, t.name, t.type, t.shape, t.data(), where);
          h5::Handle ds(h5::check(H5Dopen2(leaf, t.name.c_str(), H5P_DEFAULT), "H5Dopen2", where + "/" + t.name));
          h5::writeAttr(ds, "xxh3_64", xxh3Hex(t.data(), t.byteSize()), where + "/" + t.name);
          reached();
        }
      }
      for (auto& [k, value] : deferred) h5::writeAttr(file, k, value.get(), tmp);
      h5::check(H5Fflush(file, H5F_SCOPE_GLOBAL), "H5Fflush", tmp);
      reached();
      // Close explicitly: a failure to write the last metadata must stop the commit.
      h5::check(H5Fclose(file.release()), "H5Fclose", tmp);
    }
    reached();
    // Hash the file (from the page cache) while fsync waits for the disk.
    std::future<std::string> hash;
    if (sha256Hex) hash = std::async(std::launch::async, [&tmp] { return toHex(sha256File(tmp)); });
    try {
      fs::fsyncFile(tmp);
    } catch (...) {
      if (hash.valid()) hash.wait();
      throw;
    }
    if (hash.valid()) *sha256Hex = hash.get();
    reached();
    fs::publish(tmp, path);
    reached();
  } catch (...) {
    std::error_code ec;
    stdfs::remove(tmp, ec);
    throw;
  }
}

Document readDocument(const std::string& path, const std::string& expectedFormat, const TensorSink& sink) {
  std::error_code ec;
  if (!stdfs::is_regular_file(path, ec)) throw IoError(path + ": no such file");
  const uintmax_t fileBytes = stdfs::file_size(path, ec);
  if (ec) throw IoError(path + ": cannot stat: " + ec.message());
  if (fileBytes == 0) throw DataError(path + ": empty file");
  if (H5Fis_hdf5(path.c_str()) <= 0) {
    throw DataError(path + ": not an HDF5 file (or its superblock is damaged)");
  }
  h5::Handle file = h5::openFile(path);
  Document doc;
  if (!h5::hasAttr(file, "format")) throw DataError(path + ": attribute 'format' missing (not a Perennial file)");
  doc.format = h5::readStringAttr(file, "format", path);
  if (!expectedFormat.empty() && doc.format != expectedFormat) {
    throw DataError(path + ": format is '" + doc.format + "', expected '" + expectedFormat + "'");
  }
  doc.formatVersion = h5::readIntAttr(file, "format_version", path);
  for (const std::string& key : h5::attrNames(file, path)) {
    if (key == "format" || key == "format_version" || key == "groups") continue;
    h5::Handle attr(h5::check(H5Aopen(file, key.c_str(), H5P_DEFAULT), "H5Aopen", path + "@" + key));
    h5::Handle type(h5::check(H5Aget_type(attr), "H5Aget_type", path + "@" + key));
    switch (H5Tget_class(type)) {
      case H5T_STRING: doc.strings[key] = h5::readStringAttr(file, key, path); break;
      case H5T_INTEGER: doc.ints[key] = h5::readIntAttr(file, key, path); break;
      case H5T_FLOAT: doc.floats[key] = h5::readDoubleAttr(file, key, path); break;
      default: throw DataError(path + "@" + key + ": unsupported attribute type");
    }
  }
  for (const std::string& gpath : lines(h5::readStringAttr(file, "groups", path))) {
    const std::string where = path + ":/" + gpath;
    if (!h5::exists(file, gpath)) throw DataError(where + ": group listed in 'groups' is missing");
    h5::Handle g = h5::openGroup(file, gpath, path);
    Group group{gpath, {}};
    for (const std::string& name : lines(h5::readStringAttr(g, "order", where))) {
      h5::DatasetInfo info = h5::datasetInfo(g, name, where);
      Tensor t{name, info.type, info.shape, {}};
      if (info.elements() < 0 || info.elements() > (int64_t(1) << 40)) throw DataError(where + "/" + name + ": implausible size");
      // Documents store tensors uncompressed: one larger than the file is damage, refused before
      // its memory is allocated.
      if (t.byteSize() > fileBytes) {
        throw DataError(where + "/" + name + ": " + std::to_string(t.byteSize()) + " bytes of data cannot be in a file of " +
                        std::to_string(fileBytes) + " bytes");
      }
      void* dest = sink ? sink(gpath, t) : nullptr;
      if (dest) {
        t.external = dest;
      } else {
        t.bytes.resize(t.byteSize());
        dest = t.bytes.data();
      }
      try {
        h5::readDataset(g, name, info.type, dest, where);
      } catch (const IoError& e) {
        throw DataError(where + "/" + name + ": data unreadable (" + e.what() + ")");
      }
      h5::Handle ds(h5::check(H5Dopen2(g, name.c_str(), H5P_DEFAULT), "H5Dopen2", where + "/" + name));
      const std::string want = h5::readStringAttr(ds, "xxh3_64", where + "/" + name);
      const std::string got = xxh3Hex(t.data(), t.byteSize());
      if (got != want) {
        throw DataError(where + "/" + name + ": checksum mismatch (xxh3_64 " + got + ", recorded " + want + ")");
      }
      group.tensors.push_back(std::move(t));
    }
    doc.groups.push_back(std::move(group));
  }
  return doc;
}

}  // namespace perennial::checkpoint
