#pragma once
// A thin RAII layer over the HDF5 C API. Every HDF5 call goes through h5::check, which turns a
// negative return into IoError naming the call, the object and HDF5's innermost error message.
//
// NOTE [Deterministic HDF5]: the same content must give the same bytes. Object time tracking is
// off on every file-, group- and dataset-creation property list, the format bounds are pinned to
// (V110, V110), datasets are contiguous or chunked with fixed parameters, and objects are created
// in a fixed order by the callers. Nothing here writes a wall-clock value.
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/dtype.h"

namespace perennial::h5 {

// Owns one hid_t and closes it with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(std::exchange(o.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = std::exchange(o.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }  // NOLINT: handles pass straight to the C API
  void reset();
  // Gives up ownership (the caller closes it).
  hid_t release() { return std::exchange(id_, H5I_INVALID_HID); }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// Throws IoError("<object>: <call> failed: <HDF5 message>") when status < 0.
hid_t check(hid_t status, const char* call, const std::string& object);

// Silences HDF5's automatic error printing for the calling thread (in a thread-safe HDF5 the
// setting is per thread); errors surface as exceptions.
void quietErrors();

// Creates (truncating) a file with deterministic creation properties. With DRIVER (a registered
// HDF5 file driver), the file goes through that driver, which gets DRIVER_INFO.
Handle createFile(const std::string& path, hid_t driver = H5I_INVALID_HID, const void* driverInfo = nullptr);
// Read-only. SIEVE_BYTES sets HDF5's data-sieve buffer; -1 keeps the default (64 KiB). Random
// row reads want it small: the default re-reads 64 KiB around every scattered row.
Handle openFile(const std::string& path, long sieveBytes = -1);
Handle createGroup(hid_t loc, const std::string& name, const std::string& context);
Handle openGroup(hid_t loc, const std::string& name, const std::string& context);

hid_t nativeType(DType t);

struct DatasetOptions {
  bool fletcher32 = false;       // per-dataset checksum (needs chunking; one chunk per dataset)
  std::vector<hsize_t> chunk;    // empty: contiguous (or one chunk when fletcher32 is on)
};

void writeDataset(hid_t loc, const std::string& name, DType type,
                  const std::vector<int64_t>& shape, const void* data, const std::string& context,
                  const DatasetOptions& options = {});

struct DatasetInfo {
  DType type;
  std::vector<int64_t> shape;
  int64_t elements() const;
};
// Throws DataError when the dataset's element type is not one of DType.
DatasetInfo datasetInfo(hid_t loc, const std::string& name, const std::string& context);
bool exists(hid_t loc, const std::string& name);
// Throws DataError when the data of dataset DS are not all in its own file: external raw-data
// files, or a contiguous or compact layout that records fewer bytes than the dataspace and type
// need, or more than the file holds (HDF5 1.10 trusts those sizes when reading: it copied from
// a null sieve buffer on such a file), or a chunked layout with a chunk never written (HDF5
// reads it as the fill value: a few bytes could pass for a million rows of zeros).
void checkStoredSize(hid_t ds, const std::string& where);
// Checks the stored size (checkStoredSize), then reads the whole dataset into OUT.
void readDataset(hid_t loc, const std::string& name, DType type, void* out,
                 const std::string& context);

void writeAttr(hid_t obj, const std::string& name, const std::string& value,
               const std::string& context);
void writeAttr(hid_t obj, const std::string& name, int64_t value, const std::string& context);
void writeAttr(hid_t obj, const std::string& name, const std::vector<int64_t>& value,
               const std::string& context);
bool hasAttr(hid_t obj, const std::string& name);
// Names of the attributes on OBJ, in name order.
std::vector<std::string> attrNames(hid_t obj, const std::string& context);
// One string (fixed or variable length); DataError when the attribute holds another count.
std::string readStringAttr(hid_t obj, const std::string& name, const std::string& context);
int64_t readIntAttr(hid_t obj, const std::string& name, const std::string& context);
// One float value (any float width), as a double.
double readDoubleAttr(hid_t obj, const std::string& name, const std::string& context);
std::vector<int64_t> readIntsAttr(hid_t obj, const std::string& name, const std::string& context);

}  // namespace perennial::h5
