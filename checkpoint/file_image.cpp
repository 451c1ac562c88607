#include "checkpoint/file_image.h"

#include <H5FDpublic.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <new>

#include "common/error.h"

namespace perennial::checkpoint {

FileImage::FileImage(const std::vector<std::pair<const void*, size_t>>& stable) {
  for (const auto& [p, n] : stable) {
    if (p && n > 0) stable_.emplace_back(static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  }
  std::sort(stable_.begin(), stable_.end());
}

// Removes [addr, end) from the extents, keeping the parts of partly covered ones.
void FileImage::erase(uint64_t addr, uint64_t end) {
  auto it = extents_.upper_bound(addr);
  if (it != extents_.begin() && std::prev(it)->second.end() > addr) --it;
  std::vector<Extent> keep;
  while (it != extents_.end() && it->second.addr < end) {
    const Extent e = it->second;
    it = extents_.erase(it);
    if (e.addr < addr) {
      Extent left = e;
      left.size = addr - e.addr;
      keep.push_back(left);
    }
    if (e.end() > end) {
      Extent right = e;
      right.addr = end;
      right.size = e.end() - end;
      right.data = e.data + (end - e.addr);
      keep.push_back(right);
    }
  }
  for (auto& e : keep) extents_.emplace(e.addr, std::move(e));
}

void FileImage::write(uint64_t addr, size_t size, const void* buf, bool raw) {
  if (size == 0) return;
  const auto* p = static_cast<const uint8_t*>(buf);
  Extent e;
  e.addr = addr;
  e.size = size;
  e.raw = raw;
  bool borrowed = false;
  if (raw) {
    // The last span that starts at or before P must hold all of [P, P + size).
    auto it = std::upper_bound(stable_.begin(), stable_.end(), p,
                               [](const uint8_t* x, const auto& span) { return x < span.first; });
    borrowed = it != stable_.begin() && p + size <= std::prev(it)->second;
  }
  if (borrowed) {
    e.data = p;
  } else {
    auto copy = std::make_shared<std::vector<uint8_t>>(p, p + size);
    e.data = copy->data();
    e.owned = std::move(copy);
  }
  erase(addr, addr + size);
  extents_.emplace(addr, std::move(e));
  size_ = std::max<uint64_t>(size_, addr + size);
}

void FileImage::read(uint64_t addr, size_t size, void* out) const {
  auto* o = static_cast<uint8_t*>(out);
  std::memset(o, 0, size);
  const uint64_t end = addr + size;
  auto it = extents_.upper_bound(addr);
  if (it != extents_.begin()) --it;
  for (; it != extents_.end() && it->second.addr < end; ++it) {
    const Extent& e = it->second;
    const uint64_t from = std::max(addr, e.addr), to = std::min(end, e.end());
    if (from < to) std::memcpy(o + (from - addr), e.data + (from - e.addr), to - from);
  }
}

void FileImage::truncate(uint64_t length) {
  if (length < size_) erase(length, size_);
  size_ = length;
}

std::vector<FileImage::Extent> FileImage::extents() const {
  std::vector<Extent> out;
  out.reserve(extents_.size());
  for (const auto& [addr, e] : extents_) out.push_back(e);
  return out;
}

uint64_t FileImage::borrowedBytes() const {
  uint64_t n = 0;
  for (const auto& [addr, e] : extents_) n += e.owned ? 0 : e.size;
  return n;
}

uint64_t FileImage::copiedBytes() const {
  uint64_t n = 0;
  for (const auto& [addr, e] : extents_) n += e.owned ? e.size : 0;
  return n;
}

// ---- The HDF5 file driver (HDF5 1.10 virtual file layer) ----
namespace {

struct DriverInfo {
  FileImage* image;
};

struct ImageFile {
  H5FD_t pub;  // first: HDF5 sees an H5FD_t*
  FileImage* image;
  haddr_t eoa;
};

ImageFile* self(H5FD_t* f) { return reinterpret_cast<ImageFile*>(f); }
const ImageFile* self(const H5FD_t* f) { return reinterpret_cast<const ImageFile*>(f); }

void* infoGet(H5FD_t* f) { return new (std::nothrow) DriverInfo{self(f)->image}; }
void* infoCopy(const void* info) { return new (std::nothrow) DriverInfo(*static_cast<const DriverInfo*>(info)); }
herr_t infoFree(void* info) {
  delete static_cast<DriverInfo*>(info);
  return 0;
}

H5FD_t* imageOpen(const char*, unsigned, hid_t fapl, haddr_t) {
  const auto* info = static_cast<const DriverInfo*>(H5Pget_driver_info(fapl));
  if (!info || !info->image) return nullptr;
  auto* f = new (std::nothrow) ImageFile{};
  if (!f) return nullptr;
  f->image = info->image;
  f->eoa = 0;
  return &f->pub;
}

herr_t imageClose(H5FD_t* f) {
  delete self(f);
  return 0;
}

int imageCmp(const H5FD_t* a, const H5FD_t* b) {
  const FileImage* x = self(a)->image;
  const FileImage* y = self(b)->image;
  return x < y ? -1 : (y < x ? 1 : 0);
}

// The features of HDF5's default (sec2) driver that shape the file's layout, so a document
// built in memory has the bytes it has when HDF5 writes it to disk itself.
herr_t imageQuery(const H5FD_t*, unsigned long* flags) {
  if (flags) {
    *flags = H5FD_FEAT_AGGREGATE_METADATA | H5FD_FEAT_ACCUMULATE_METADATA | H5FD_FEAT_DATA_SIEVE |
             H5FD_FEAT_AGGREGATE_SMALLDATA | H5FD_FEAT_DEFAULT_VFD_COMPATIBLE;
  }
  return 0;
}

haddr_t imageGetEoa(const H5FD_t* f, H5FD_mem_t) { return self(f)->eoa; }

herr_t imageSetEoa(H5FD_t* f, H5FD_mem_t, haddr_t addr) {
  self(f)->eoa = addr;
  return 0;
}

haddr_t imageGetEof(const H5FD_t* f, H5FD_mem_t) { return self(f)->image->size(); }

herr_t imageGetHandle(H5FD_t* f, hid_t, void** handle) {
  if (!handle) return -1;
  *handle = self(f)->image;
  return 0;
}

herr_t imageRead(H5FD_t* f, H5FD_mem_t, hid_t, haddr_t addr, size_t size, void* buf) {
  if (addr == HADDR_UNDEF || !buf) return -1;
  self(f)->image->read(addr, size, buf);
  return 0;
}

herr_t imageWrite(H5FD_t* f, H5FD_mem_t type, hid_t, haddr_t addr, size_t size, const void* buf) {
  if (addr == HADDR_UNDEF || !buf) return -1;
  try {
    self(f)->image->write(addr, size, buf, type == H5FD_MEM_DRAW);
  } catch (const std::exception&) {  // out of memory: HDF5 reports the failed write
    return -1;
  }
  return 0;
}

herr_t imageFlush(H5FD_t*, hid_t, hbool_t) { return 0; }

herr_t imageTruncate(H5FD_t* f, hid_t, hbool_t) {
  self(f)->image->truncate(self(f)->eoa);
  return 0;
}

hid_t imageDriver() {
  static hid_t id = H5I_INVALID_HID;
  static std::once_flag once;
  std::call_once(once, [] {
    H5FD_class_t cls{};
    cls.name = "perennial_image";
    cls.maxaddr = (static_cast<haddr_t>(1) << 62) - 1;
    cls.fc_degree = H5F_CLOSE_WEAK;
    cls.fapl_size = sizeof(DriverInfo);
    cls.fapl_get = infoGet;
    cls.fapl_copy = infoCopy;
    cls.fapl_free = infoFree;
    cls.open = imageOpen;
    cls.close = imageClose;
    cls.cmp = imageCmp;
    cls.query = imageQuery;
    cls.get_eoa = imageGetEoa;
    cls.set_eoa = imageSetEoa;
    cls.get_eof = imageGetEof;
    cls.get_handle = imageGetHandle;
    cls.read = imageRead;
    cls.write = imageWrite;
    cls.flush = imageFlush;
    cls.truncate = imageTruncate;
    const H5FD_mem_t map[H5FD_MEM_NTYPES] = H5FD_FLMAP_DICHOTOMY;
    std::copy(map, map + H5FD_MEM_NTYPES, cls.fl_map);
    id = H5FDregister(&cls);
  });
  return id;
}

}  // namespace

h5::Handle createImageFile(const std::string& name, FileImage* image) {
  const hid_t driver = imageDriver();
  if (driver < 0) throw IoError(name + ": cannot register the in-memory HDF5 file driver");
  const DriverInfo info{image};
  return h5::createFile(name, driver, &info);
}

// ---- Walking and hashing images ----

void forEachPiece(const std::vector<FileImage::Extent>& extents, uint64_t from, uint64_t to, uint64_t maxPiece,
                  const std::function<bool(uint64_t, const uint8_t*, uint64_t)>& fn) {
  auto it = std::upper_bound(extents.begin(), extents.end(), from,
                             [](uint64_t a, const FileImage::Extent& e) { return a < e.addr; });
  if (it != extents.begin() && std::prev(it)->end() > from) --it;
  uint64_t pos = from;
  while (pos < to) {
    const uint8_t* data = nullptr;
    uint64_t stop = to;
    if (it != extents.end() && it->addr <= pos) {
      data = it->data + (pos - it->addr);
      stop = std::min(to, it->end());
    } else if (it != extents.end()) {
      stop = std::min(to, it->addr);  // a gap before the next extent
    }
    stop = std::min(stop, pos + maxPiece);
    if (!fn(pos, data, stop - pos)) return;
    pos = stop;
    if (it != extents.end() && pos >= it->end()) ++it;
  }
}

namespace {
const uint8_t* zeros() {
  static const std::vector<uint8_t> z(1 << 20, 0);
  return z.data();
}
constexpr uint64_t kZeroChunk = 1 << 20;
}  // namespace

uint64_t firstDifference(const FileImage& a, const FileImage& b) {
  const uint64_t common = std::min(a.size(), b.size());
  const auto ea = a.extents(), eb = b.extents();
  uint64_t diff = common;
  forEachPiece(ea, 0, common, kZeroChunk, [&](uint64_t off, const uint8_t* pa, uint64_t n) {
    bool same = true;
    forEachPiece(eb, off, off + n, kZeroChunk, [&](uint64_t o, const uint8_t* pb, uint64_t m) {
      const uint8_t* x = pa ? pa + (o - off) : zeros();
      const uint8_t* y = pb ? pb : zeros();
      if (x == y) return true;  // the same memory (or both gaps)
      const auto where = std::mismatch(x, x + m, y);
      if (where.first == x + m) return true;
      diff = o + static_cast<uint64_t>(where.first - x);
      same = false;
      return false;
    });
    return same;
  });
  return diff;
}

void SpeculativeHasher::hashRange(const FileImage& image, uint64_t to, const std::function<bool()>& stop,
                                  bool remember) {
  constexpr uint64_t kPiece = 8 << 20;  // how often STOP is asked
  const auto extents = image.extents();
  forEachPiece(extents, pos_, to, kPiece, [&](uint64_t off, const uint8_t* data, uint64_t n) {
    if (stop && stop()) return false;
    if (remember) {
      auto it = std::upper_bound(extents.begin(), extents.end(), off,
                                 [](uint64_t a, const FileImage::Extent& e) { return a < e.addr; });
      const bool startsMetadata = it != extents.begin() && std::prev(it)->addr == off && !std::prev(it)->raw;
      if (off == 0 || startsMetadata) saved_.emplace_back(off, sha_.clone());
    }
    for (uint64_t done = 0; done < n;) {
      const uint64_t m = data ? n - done : std::min(n - done, kZeroChunk);
      sha_.update(data ? data + done : zeros(), m);
      done += m;
    }
    pos_ = off + n;
    return true;
  });
}

void SpeculativeHasher::advance(std::shared_ptr<const FileImage> image, const std::function<bool()>& stop) {
  if (hashed_ && hashed_ != image) {
    // Only ever continue on the same image; finish() handles a change.
    PERENNIAL_CHECK(firstDifference(*hashed_, *image) >= pos_, "advance() on an image that differs from the hash so far");
  }
  hashed_ = std::move(image);
  hashRange(*hashed_, hashed_->size(), stop, /*remember=*/true);
}

std::string SpeculativeHasher::finish(const std::shared_ptr<const FileImage>& final) {
  if (hashed_ && hashed_ != final) {
    const uint64_t diff = firstDifference(*hashed_, *final);
    if (diff < pos_) {
      // Resume from the last state whose bytes are all before the difference.
      auto it = std::upper_bound(saved_.begin(), saved_.end(), diff,
                                 [](uint64_t d, const auto& s) { return d < s.first; });
      PERENNIAL_CHECK(it != saved_.begin(), "no saved state at offset 0");
      --it;
      rehashed_ += pos_ - it->first;
      pos_ = it->first;
      sha_ = it->second.clone();
      saved_.erase(it, saved_.end());
    }
  }
  hashed_ = final;
  hashRange(*final, final->size(), nullptr, /*remember=*/false);
  return toHex(sha_.finish());
}

}  // namespace perennial::checkpoint
