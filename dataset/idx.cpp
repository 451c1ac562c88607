#include "dataset/idx.h"

#include <zlib.h>

#include <memory>

#include "common/error.h"

namespace perennial::data {
namespace {

constexpr int64_t kMaxElements = int64_t(1) << 32;  // 4 GiB of bytes: far beyond any IDX set

struct GzCloser {
  void operator()(gzFile f) const { gzclose(f); }
};

// Reads exactly N bytes; returns the number read (short only at end of file).
size_t readSome(gzFile f, void* out, size_t n, const std::string& path) {
  size_t total = 0;
  auto* p = static_cast<char*>(out);
  while (total < n) {
    unsigned chunk = static_cast<unsigned>(std::min<size_t>(n - total, 1u << 30));
    int got = gzread(f, p + total, chunk);
    if (got < 0) {
      int err = 0;
      const char* msg = gzerror(f, &err);
      throw DataError(path + ": read error: " + (msg ? msg : "unknown"));
    }
    if (got == 0) break;
    total += static_cast<size_t>(got);
  }
  return total;
}

}  // namespace

IdxArray readIdx(const std::string& path) {
  // gzopen reads plain files transparently as well as gzip streams.
  std::unique_ptr<gzFile_s, GzCloser> f(gzopen(path.c_str(), "rb"));
  if (!f) throw DataError(path + ": cannot open IDX file");
  unsigned char header[4];
  if (readSome(f.get(), header, 4, path) != 4) throw DataError(path + ": truncated IDX header (need 4 bytes)");
  if (header[0] != 0 || header[1] != 0) {
    throw DataError(path + ": not an IDX file (magic must start with two zero bytes)");
  }
  if (header[2] != 0x08) {
    throw DataError(path + ": unsupported IDX element type 0x" + std::to_string(header[2]) +
                    " (only 0x08, unsigned byte, is supported)");
  }
  const int ndims = header[3];
  if (ndims < 1 || ndims > 4) {
    throw DataError(path + ": IDX dimension count " + std::to_string(ndims) + " outside 1..4");
  }
  IdxArray out;
  int64_t elements = 1;
  for (int i = 0; i < ndims; ++i) {
    unsigned char d[4];
    if (readSome(f.get(), d, 4, path) != 4) throw DataError(path + ": truncated IDX header (dimension " + std::to_string(i) + ")");
    int64_t dim = (int64_t(d[0]) << 24) | (int64_t(d[1]) << 16) | (int64_t(d[2]) << 8) | int64_t(d[3]);
    if (dim == 0) throw DataError(path + ": IDX dimension " + std::to_string(i) + " is zero");
    out.dims.push_back(dim);
    elements *= dim;
    if (elements > kMaxElements) throw DataError(path + ": IDX array larger than 4 GiB");
  }
  out.values.resize(static_cast<size_t>(elements));
  size_t got = readSome(f.get(), out.values.data(), out.values.size(), path);
  if (got != out.values.size()) {
    throw DataError(path + ": truncated IDX data: header declares " + std::to_string(elements) +
                    " bytes, file has " + std::to_string(got));
  }
  char extra;
  if (readSome(f.get(), &extra, 1, path) != 0) {
    throw DataError(path + ": IDX file has bytes after the " + std::to_string(elements) +
                    " the header declares");
  }
  return out;
}

std::string encodeIdx(const IdxArray& array) {
  std::string s;
  s.push_back('\0');
  s.push_back('\0');
  s.push_back('\x08');
  s.push_back(static_cast<char>(array.dims.size()));
  for (int64_t d : array.dims) {
    for (int shift = 24; shift >= 0; shift -= 8) s.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  s.append(reinterpret_cast<const char*>(array.values.data()), array.values.size());
  return s;
}

}  // namespace perennial::data
