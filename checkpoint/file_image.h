#pragma once
// NOTE [File image]: documents are built in memory, then written and hashed at once.
//
// HDF5 writes a document through Perennial's "image" file driver, which keeps the file's bytes
// in memory instead of writing them: metadata are copied (they are small, and HDF5 rewrites
// some of them, the superblock at offset 0 last, when it closes the file), while a dataset's
// data that HDF5 hands over straight from the caller's tensors are kept as pointers to them (no
// copy). The driver declares the features of HDF5's default driver, so the bytes are the ones
// HDF5 writes to disk itself. Once HDF5 has closed the file the image holds its final bytes:
// one thread writes them to disk while another computes their SHA-256 from the same memory, and
// the file is never read back to be hashed. Gaps between what HDF5 wrote are zeros, as on disk.
//
// Some bytes depend on values computed during the write (each tensor's digest, the parameters'
// SHA-256), but the layout does not as long as those values keep their length. writeDocument
// (checkpoint/document.cpp) therefore builds up to three images of one document: with
// placeholders for all computed values (it places the data, which go to disk and are flushed
// at once), with the digests (hashed while the parameters' hash is computed), and the final
// one. A SpeculativeHasher hashes the second and goes back only as far as the first byte where
// the final one differs: the parameters' hash sits in the last metadata HDF5 writes, after the
// data, so little is hashed twice.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/h5.h"
#include "common/sha256.h"

namespace perennial::checkpoint {

class FileImage {
 public:
  struct Extent {
    uint64_t addr = 0;
    uint64_t size = 0;
    const uint8_t* data = nullptr;  // into stable caller memory, or into `owned`
    std::shared_ptr<const std::vector<uint8_t>> owned;
    bool raw = false;  // dataset data (H5FD_MEM_DRAW); false: metadata
    uint64_t end() const { return addr + size; }
  };

  // STABLE: memory that stays alive and unchanged as long as the image (the tensors being
  // written). A dataset's data that HDF5 passes straight from there are kept as pointers.
  explicit FileImage(const std::vector<std::pair<const void*, size_t>>& stable = {});

  // The driver's operations: a write replaces whatever the range held; a read returns zeros
  // where nothing was written; truncate sets the file's length (HDF5 truncates to its end of
  // allocated space when it closes the file).
  void write(uint64_t addr, size_t size, const void* buf, bool raw);
  void read(uint64_t addr, size_t size, void* out) const;
  void truncate(uint64_t length);

  uint64_t size() const { return size_; }  // the file's length
  // What HDF5 wrote, in address order, not overlapping.
  std::vector<Extent> extents() const;
  uint64_t borrowedBytes() const;  // bytes kept as pointers to stable memory
  uint64_t copiedBytes() const;    // bytes copied into the image

 private:
  void erase(uint64_t addr, uint64_t end);

  std::vector<std::pair<const uint8_t*, const uint8_t*>> stable_;  // [begin, end), sorted
  std::map<uint64_t, Extent> extents_;                            // by address
  uint64_t size_ = 0;
};

// Creates an HDF5 file with the deterministic properties of h5::createFile whose bytes go to
// IMAGE (which must outlive the file). NAME only appears in messages.
h5::Handle createImageFile(const std::string& name, FileImage* image);

// Calls FN(offset, data, bytes) for consecutive pieces of the bytes [FROM, TO) of the file that
// EXTENTS (sorted, not overlapping) describe; DATA is nullptr for a gap (zeros). Pieces are at
// most MAX_PIECE bytes. Stops early when FN returns false.
void forEachPiece(const std::vector<FileImage::Extent>& extents, uint64_t from, uint64_t to, uint64_t maxPiece,
                  const std::function<bool(uint64_t, const uint8_t*, uint64_t)>& fn);

// The first offset at which the files A and B differ; their common length when one is a prefix
// of the other (or they are equal).
uint64_t firstDifference(const FileImage& a, const FileImage& b);

// SHA-256 of a file image that may still change (see NOTE [File image]).
class SpeculativeHasher {
 public:
  // Hashes IMAGE (kept alive by the hasher) from where the hash stands, remembering the state
  // at the start of each metadata extent. Returns early, with the hash incomplete, as soon as
  // STOP returns true (checked between pieces).
  void advance(std::shared_ptr<const FileImage> image, const std::function<bool()>& stop);
  // The SHA-256 (hex) of FINAL: resumes from the last state remembered at or before the first
  // byte where FINAL differs from the image hashed so far, then hashes FINAL to its end.
  std::string finish(const std::shared_ptr<const FileImage>& final);
  uint64_t rehashedBytes() const { return rehashed_; }  // bytes hashed twice (after a difference)

 private:
  void hashRange(const FileImage& image, uint64_t to, const std::function<bool()>& stop, bool remember);

  std::shared_ptr<const FileImage> hashed_;  // the image the hash so far covers
  uint64_t pos_ = 0;                         // bytes hashed
  Sha256 sha_;
  std::vector<std::pair<uint64_t, Sha256>> saved_;  // (offset, state after [0, offset)), ascending
  uint64_t rehashed_ = 0;
};

}  // namespace perennial::checkpoint
