#include "checkpoint/document.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <sstream>

#include "checkpoint/file_image.h"
#include "common/h5.h"
#include "common/error.h"
#include "common/fault.h"
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
  // In 16 KiB pieces, each while the next one is prefetched: about 20% faster on data that come
  // from memory (the same digest as XXH3_64bits over the whole).
  constexpr size_t kPiece = 16 << 10;
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t left = bytes; left > 0;) {
    const size_t n = std::min(left, kPiece);
    const size_t ahead = std::min(left - n, kPiece);
    for (size_t i = 0; i < ahead; i += 64) __builtin_prefetch(p + n + i);
    XXH3_64bits_update(&state, p, n);
    p += n;
    left -= n;
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(XXH3_64bits_digest(&state)));
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

namespace {

// Values computed while a document is written. A pass without them writes placeholders of the
// same length, so the file's layout is already the final one (NOTE [File image]).
struct PassValues {
  const std::vector<std::string>* digests = nullptr;             // xxh3_64 per tensor, in document order
  const std::map<std::string, std::string>* deferred = nullptr;  // Document::deferredStrings' values
};
constexpr size_t kDigestChars = 16;
constexpr size_t kDeferredPlaceholderChars = 64;  // a SHA-256 in hex; another length only costs time

// Builds DOC's HDF5 file in memory. NAME appears in messages. With DATA_ENDS, also where each
// tensor's data end in the file (0 when it has none), in document order.
std::shared_ptr<const FileImage> buildImage(const Document& doc, const std::string& name,
                                            const std::vector<std::pair<const void*, size_t>>& stable,
                                            const PassValues& values, std::vector<uint64_t>* dataEnds) {
  auto image = std::make_shared<FileImage>(stable);
  h5::Handle file = createImageFile(name, image.get());
  h5::writeAttr(file, "format", doc.format, name);
  h5::writeAttr(file, "format_version", doc.formatVersion, name);
  std::string groupList;
  for (const auto& g : doc.groups) groupList += g.path + "\n";
  h5::writeAttr(file, "groups", groupList, name);
  for (const auto& [k, v] : doc.strings) h5::writeAttr(file, k, v, name);
  for (const auto& [k, v] : doc.ints) h5::writeAttr(file, k, v, name);
  for (const auto& [k, v] : doc.floats) writeFloatAttr(file, k, v, name);
  size_t index = 0;
  for (const auto& g : doc.groups) {
    // Create each level of a nested path once, in order.
    std::string sofar;
    std::stringstream parts(g.path);
    std::string part;
    h5::Handle leaf;
    while (std::getline(parts, part, '/')) {
      sofar += (sofar.empty() ? "" : "/") + part;
      leaf = h5::exists(file, sofar) ? h5::openGroup(file, sofar, name) : h5::createGroup(file, sofar, name);
    }
    std::string order;
    for (const auto& t : g.tensors) order += t.name + "\n";
    h5::writeAttr(leaf, "order", order, name + ":/" + g.path);
    for (const auto& t : g.tensors) {
      const std::string where = name + ":/" + g.path;
      h5::writeDataset(leaf, t.name, t.type, t.shape, t.data(), where);
      h5::Handle ds(h5::check(H5Dopen2(leaf, t.name.c_str(), H5P_DEFAULT), "H5Dopen2", where + "/" + t.name));
      const std::string digest = values.digests ? (*values.digests)[index] : std::string(kDigestChars, '0');
      h5::writeAttr(ds, "xxh3_64", digest, where + "/" + t.name);
      if (dataEnds) {
        const haddr_t offset = H5Dget_offset(ds);
        dataEnds->push_back(offset == HADDR_UNDEF ? 0 : offset + t.byteSize());
      }
      ++index;
    }
  }
  for (const auto& [k, fn] : doc.deferredStrings) {
    h5::writeAttr(file, k, values.deferred ? values.deferred->at(k) : std::string(kDeferredPlaceholderChars, '0'), name);
  }
  h5::check(H5Fflush(file, H5F_SCOPE_GLOBAL), "H5Fflush", name);
  // Close explicitly: a failure to write the last metadata must stop the commit.
  h5::check(H5Fclose(file.release()), "H5Fclose", name);
  return image;
}

// Whether A and B hold the same dataset data at the same places.
bool sameData(const FileImage& a, const FileImage& b) {
  std::vector<FileImage::Extent> x, y;
  for (auto& e : a.extents()) if (e.raw) x.push_back(e);
  for (auto& e : b.extents()) if (e.raw) y.push_back(e);
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i) {
    if (x[i].addr != y[i].addr || x[i].size != y[i].size) return false;
    if (x[i].data != y[i].data && std::memcmp(x[i].data, y[i].data, x[i].size) != 0) return false;
  }
  return true;
}

[[noreturn]] void failIo(const std::string& what, const std::string& path) {
  throw IoError(path + ": " + what + ": " + std::strerror(errno));
}

// Writes IMAGE's extents of one kind (dataset data or metadata) to FD, in address order;
// ON_WRITTEN(end) after each piece.
void writeExtents(int fd, const std::string& name, const FileImage& image, bool raw,
                  const std::function<void(uint64_t)>& onWritten = nullptr) {
  constexpr uint64_t kPiece = 64 << 20;
  for (const auto& e : image.extents()) {
    if (e.raw != raw) continue;
    for (uint64_t done = 0; done < e.size;) {
      const ssize_t n = ::pwrite(fd, e.data + done, std::min(e.size - done, kPiece), static_cast<off_t>(e.addr + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) failIo("write", name);
      done += static_cast<uint64_t>(n);
      if (onWritten) onWritten(e.addr + done);
    }
  }
}

}  // namespace

void writeDocument(const std::string& path, const Document& doc, std::string* sha256Hex) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  std::vector<const Tensor*> tensors;
  std::vector<std::pair<const void*, size_t>> stable;  // the tensors' bytes, unchanged during the write
  for (const auto& g : doc.groups) {
    for (const auto& t : g.tensors) {
      PERENNIAL_CHECK(t.external || t.byteSize() == t.bytes.size(),
                      "tensor " << g.path << "/" << t.name << " has " << t.bytes.size() << " bytes for its shape");
      tensors.push_back(&t);
      stable.emplace_back(t.data(), t.byteSize());
    }
  }
  // NOTE [File image]: an image with placeholders for the digests and the deferred values
  // places the data, which are written at once. Meanwhile another thread computes the digests,
  // then hashes the image with them, to be corrected for the deferred values (computed once the
  // data are written) by the final image.
  std::vector<std::pair<std::string, std::future<std::string>>> deferred;
  std::promise<std::vector<std::string>> digestsPromise;
  std::future<std::vector<std::string>> digestsReady = digestsPromise.get_future();
  std::promise<std::shared_ptr<const FileImage>> finalPromise;
  std::shared_future<std::shared_ptr<const FileImage>> finalImage = finalPromise.get_future().share();
  bool finalSet = false;
  std::future<std::string> hashed;
  int fd = -1;
  try {
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) failIo("create", tmp);
    fault::reached("document-created");
    std::vector<uint64_t> dataEnds;
    const auto layout = buildImage(doc, tmp, stable, {}, &dataEnds);
    hashed = std::async(std::launch::async, [&, wantHash = sha256Hex != nullptr]() -> std::string {
      std::vector<std::string> digests;
      try {
        for (const Tensor* t : tensors) digests.push_back(xxh3Hex(t->data(), t->byteSize()));
      } catch (...) {
        digestsPromise.set_exception(std::current_exception());
        throw;
      }
      digestsPromise.set_value(digests);
      if (!wantHash) return "";
      SpeculativeHasher hasher;
      PassValues known;
      known.digests = &digests;
      hasher.advance(buildImage(doc, tmp, stable, known, nullptr),
                     [&] { return finalImage.wait_for(std::chrono::seconds(0)) == std::future_status::ready; });
      return hasher.finish(finalImage.get());
    });
    // Tensor I's point comes once its data are in the file (the data go in address order).
    size_t next = 0;
    writeExtents(fd, tmp, *layout, /*raw=*/true, [&](uint64_t written) {
      while (next < tensors.size() && dataEnds[next] <= written) {
        ++next;
        fault::reached("document-tensor-written");
      }
    });
    for (; next < tensors.size(); ++next) fault::reached("document-tensor-written");
    // The deferred values (the parameters' SHA-256) only go into the last metadata: computing
    // them now leaves the CPU to the digests and the copies into the page cache until here.
    for (const auto& [k, fn] : doc.deferredStrings) deferred.emplace_back(k, std::async(std::launch::async, fn));
    // The data are final: the disk takes them while the rest is computed (for a large file; a
    // small one would only pay a second flush).
    constexpr uint64_t kEarlyFlushBytes = 16 << 20;
    if (layout->size() >= kEarlyFlushBytes && ::fdatasync(fd) != 0) failIo("fdatasync", tmp);
    PassValues known;
    const std::vector<std::string> digests = digestsReady.get();
    known.digests = &digests;
    std::map<std::string, std::string> values;
    for (auto& [k, f] : deferred) values[k] = f.get();
    known.deferred = &values;
    const auto final = buildImage(doc, tmp, stable, known, nullptr);
    if (!sameData(*layout, *final)) {  // a deferred value's length differed from its placeholder's
      if (::ftruncate(fd, 0) != 0) failIo("truncate", tmp);
      writeExtents(fd, tmp, *final, /*raw=*/true);
    }
    writeExtents(fd, tmp, *final, /*raw=*/false);
    if (::ftruncate(fd, static_cast<off_t>(final->size())) != 0) failIo("truncate", tmp);
    finalPromise.set_value(final);
    finalSet = true;
    fault::reached("document-truncated");
    // The hash of the last bytes runs on while fsync waits for the disk.
    if (::fsync(fd) != 0) failIo("fsync", tmp);
    fault::reached("document-synced");
    std::string hex = hashed.get();
    if (sha256Hex) *sha256Hex = std::move(hex);
    const int closing = std::exchange(fd, -1);
    if (::close(closing) != 0) failIo("close", tmp);
    fault::reached("document-closed");
    fs::publish(tmp, path);
    fault::reached("document-published");
  } catch (...) {
    if (!finalSet) finalPromise.set_exception(std::make_exception_ptr(IoError(tmp + ": write abandoned")));
    if (hashed.valid()) hashed.wait();
    if (fd >= 0) ::close(fd);
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
