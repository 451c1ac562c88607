#include "common/h5.h"

#include <mutex>

// Shards are read on loader threads while checkpoints are written on the training thread or a
// background saver: the HDF5 library must be the thread-safe build (Debian's is).
#ifndef H5_HAVE_THREADSAFE
#error "Perennial needs a thread-safe HDF5 build (configure HDF5 with --enable-threadsafe)"
#endif

#include "common/error.h"

namespace perennial::h5 {
namespace {

herr_t innermost(unsigned n, const H5E_error2_t* err, void* out) {
  auto* s = static_cast<std::string*>(out);
  if (n == 0 && err->desc) *s = err->desc;
  return 0;
}

std::string lastHdf5Message() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, &msg);
  return msg;
}

// Refuses an integer or float datatype whose bit layout does not fit its size. HDF5 1.10 decodes
// such a damaged type from the file as it is, and its conversions (H5T__conv_i_i, H5T__bit_find)
// then read outside the value; reading one as a native number is the only use we make of them.
void checkNumericType(hid_t type, const std::string& where) {
  const size_t bits = 8 * H5Tget_size(type);
  const size_t precision = H5Tget_precision(type);
  const int offset = H5Tget_offset(type);
  bool ok = bits > 0 && bits <= 128 && precision >= 1 && offset >= 0 && static_cast<size_t>(offset) + precision <= bits;
  if (ok && H5Tget_class(type) == H5T_FLOAT) {
    size_t spos = 0, epos = 0, esize = 0, mpos = 0, msize = 0;
    ok = H5Tget_fields(type, &spos, &epos, &esize, &mpos, &msize) >= 0 && esize >= 1 && msize >= 1 &&
         spos < bits && epos + esize <= bits && mpos + msize <= bits;
  }
  if (!ok) throw DataError(where + ": damaged numeric type (its bit fields do not fit its size)");
}

Handle objectCreationPlist(hid_t cls, const std::string& context) {
  Handle p(check(H5Pcreate(cls), "H5Pcreate", context));
  check(H5Pset_obj_track_times(p, 0), "H5Pset_obj_track_times", context);
  return p;
}

}  // namespace

void Handle::reset() {
  if (id_ < 0) return;
  switch (H5Iget_type(id_)) {
    case H5I_FILE: H5Fclose(id_); break;
    case H5I_GROUP: H5Gclose(id_); break;
    case H5I_DATASET: H5Dclose(id_); break;
    case H5I_DATASPACE: H5Sclose(id_); break;
    case H5I_DATATYPE: H5Tclose(id_); break;
    case H5I_ATTR: H5Aclose(id_); break;
    case H5I_GENPROP_LST: H5Pclose(id_); break;
    default: break;
  }
  id_ = H5I_INVALID_HID;
}

hid_t check(hid_t status, const char* call, const std::string& object) {
  if (status < 0) {
    std::string msg = lastHdf5Message();
    throw IoError(object + ": " + call + " failed" + (msg.empty() ? "" : ": " + msg));
  }
  return status;
}

void quietErrors() {
  thread_local bool quiet = false;
  if (!quiet) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    quiet = true;
  }
}

Handle createFile(const std::string& path, hid_t driver, const void* driverInfo) {
  quietErrors();
  Handle fcpl = objectCreationPlist(H5P_FILE_CREATE, path);
  Handle fapl(check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate", path));
  if (driver >= 0) check(H5Pset_driver(fapl, driver, driverInfo), "H5Pset_driver", path);
  check(H5Pset_libver_bounds(fapl, H5F_LIBVER_V110, H5F_LIBVER_V110), "H5Pset_libver_bounds",
        path);
  return Handle(check(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl, fapl), "H5Fcreate", path));
}

Handle openFile(const std::string& path, long sieveBytes) {
  quietErrors();
  Handle fapl(check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate", path));
  if (sieveBytes >= 0) {
    check(H5Pset_sieve_buf_size(fapl, static_cast<size_t>(sieveBytes)), "H5Pset_sieve_buf_size", path);
  }
  return Handle(check(H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl), "H5Fopen", path));
}

Handle createGroup(hid_t loc, const std::string& name, const std::string& context) {
  Handle gcpl = objectCreationPlist(H5P_GROUP_CREATE, context);
  return Handle(check(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, gcpl, H5P_DEFAULT),
                      "H5Gcreate2", context + ":" + name));
}

Handle openGroup(hid_t loc, const std::string& name, const std::string& context) {
  return Handle(check(H5Gopen2(loc, name.c_str(), H5P_DEFAULT), "H5Gopen2",
                      context + ":" + name));
}

hid_t nativeType(DType t) {
  switch (t) {
    case DType::kUInt8: return H5T_NATIVE_UINT8;
    case DType::kInt32: return H5T_NATIVE_INT32;
    case DType::kInt64: return H5T_NATIVE_INT64;
    case DType::kFloat32: return H5T_NATIVE_FLOAT;
    case DType::kFloat64: return H5T_NATIVE_DOUBLE;
    case DType::kBFloat16:
    case DType::kFloat16: break;  // wire-only types (common/dtype.h): never written
  }
  return H5I_INVALID_HID;
}

int64_t DatasetInfo::elements() const {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && n > (int64_t(1) << 50) / d)) return -1;  // implausible: callers refuse it
    n *= d;
  }
  return n;
}

void writeDataset(hid_t loc, const std::string& name, DType type,
                  const std::vector<int64_t>& shape, const void* data, const std::string& context,
                  const DatasetOptions& options) {
  const std::string where = context + ":" + name;
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  Handle space(check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                     "H5Screate_simple", where));
  Handle dcpl = objectCreationPlist(H5P_DATASET_CREATE, where);
  // Every dataset is written in full right after creation: filling it first would write it twice.
  check(H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER), "H5Pset_fill_time", where);
  bool empty = false;
  for (hsize_t d : dims) empty = empty || d == 0;
  std::vector<hsize_t> chunk = options.chunk;
  if (options.fletcher32 && chunk.empty() && !empty) chunk = dims;  // a scalar-less single chunk
  if (!chunk.empty() && !dims.empty() && !empty) {
    check(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()), "H5Pset_chunk", where);
    if (options.fletcher32) check(H5Pset_fletcher32(dcpl), "H5Pset_fletcher32", where);
  }
  Handle ds(check(H5Dcreate2(loc, name.c_str(), nativeType(type), space, H5P_DEFAULT, dcpl,
                             H5P_DEFAULT),
                  "H5Dcreate2", where));
  if (!empty) {
    check(H5Dwrite(ds, nativeType(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, data), "H5Dwrite", where);
  }
}

bool exists(hid_t loc, const std::string& name) {
  quietErrors();
  return H5Lexists(loc, name.c_str(), H5P_DEFAULT) > 0;
}

DatasetInfo datasetInfo(hid_t loc, const std::string& name, const std::string& context) {
  const std::string where = context + ":" + name;
  if (!exists(loc, name)) throw DataError(where + ": dataset missing");
  Handle ds(check(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), "H5Dopen2", where));
  Handle type(check(H5Dget_type(ds), "H5Dget_type", where));
  Handle space(check(H5Dget_space(ds), "H5Dget_space", where));
  DatasetInfo info{};
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (cls == H5T_INTEGER || cls == H5T_FLOAT) checkNumericType(type, where);
  if (cls == H5T_INTEGER) {
    const H5T_sign_t sign = H5Tget_sign(type);
    if (size == 1 && sign == H5T_SGN_NONE) info.type = DType::kUInt8;
    else if (size == 4 && sign == H5T_SGN_2) info.type = DType::kInt32;
    else if (size == 8 && sign == H5T_SGN_2) info.type = DType::kInt64;
    else throw DataError(where + ": unsupported integer type (" + std::to_string(size) + " bytes)");
  } else if (cls == H5T_FLOAT) {
    if (size == 4) info.type = DType::kFloat32;
    else if (size == 8) info.type = DType::kFloat64;
    else throw DataError(where + ": unsupported float type (" + std::to_string(size) + " bytes)");
  } else {
    throw DataError(where + ": unsupported element type class");
  }
  const int rank = check(H5Sget_simple_extent_ndims(space), "H5Sget_simple_extent_ndims", where);
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  check(H5Sget_simple_extent_dims(space, dims.data(), nullptr), "H5Sget_simple_extent_dims", where);
  info.shape.assign(dims.begin(), dims.end());
  return info;
}

void checkStoredSize(hid_t ds, const std::string& where) {
  Handle dcpl(check(H5Dget_create_plist(ds), "H5Dget_create_plist", where));
  if (check(H5Pget_external_count(dcpl), "H5Pget_external_count", where) > 0) {
    throw DataError(where + ": the data are in external files (not read)");
  }
  const H5D_layout_t layout = H5Pget_layout(dcpl);
  Handle type(check(H5Dget_type(ds), "H5Dget_type", where));
  Handle space(check(H5Dget_space(ds), "H5Dget_space", where));
  const hssize_t n = check(H5Sget_simple_extent_npoints(space), "H5Sget_simple_extent_npoints", where);
  if (layout == H5D_CHUNKED) {
    // Every chunk must be stored: HDF5 reads a chunk never written as the fill value, so a few
    // bytes of metadata could stand for a million rows of zeros. (Filtered chunks may be smaller
    // than the shape needs; their count is what must be complete.)
    const int rank = H5Sget_simple_extent_ndims(space);
    std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0))), chunk(dims.size());
    check(H5Sget_simple_extent_dims(space, dims.data(), nullptr), "H5Sget_simple_extent_dims", where);
    if (check(H5Pget_chunk(dcpl, rank, chunk.data()), "H5Pget_chunk", where) != rank) {
      throw DataError(where + ": unreadable chunk layout");
    }
    uint64_t expected = 1;
    bool absurd = false;
    for (size_t i = 0; i < dims.size(); ++i) {
      if (chunk[i] == 0) throw DataError(where + ": a chunk dimension of 0");
      absurd |= __builtin_mul_overflow(expected, (dims[i] + chunk[i] - 1) / chunk[i], &expected);
    }
    if (n == 0) return;
    hsize_t stored = 0;
    check(H5Dget_num_chunks(ds, space, &stored), "H5Dget_num_chunks", where);
    hsize_t fileBytes = 0;
    Handle file(check(H5Iget_file_id(ds), "H5Iget_file_id", where));
    check(H5Fget_filesize(file, &fileBytes), "H5Fget_filesize", where);
    if (absurd || stored < expected || H5Dget_storage_size(ds) > fileBytes) {
      throw DataError(where + ": data missing or truncated (" + std::to_string(stored) + " of " +
                      (absurd ? std::string("over 2^64") : std::to_string(expected)) +
                      " chunks stored, " + std::to_string(H5Dget_storage_size(ds)) + " bytes in a file of " +
                      std::to_string(fileBytes) + ")");
    }
    return;
  }
  if (layout != H5D_CONTIGUOUS && layout != H5D_COMPACT) return;
  const size_t size = H5Tget_size(type);
  Handle file(check(H5Iget_file_id(ds), "H5Iget_file_id", where));
  hsize_t fileBytes = 0;
  check(H5Fget_filesize(file, &fileBytes), "H5Fget_filesize", where);
  const hsize_t stored = H5Dget_storage_size(ds);
  uint64_t need = 0;  // both factors come from the file: an overflow is an absurd size
  const bool absurd = __builtin_mul_overflow(static_cast<uint64_t>(n), static_cast<uint64_t>(size), &need);
  if (absurd || stored < need || stored > fileBytes) {
    throw DataError(where + ": data missing or truncated (" + std::to_string(stored) + " bytes stored in a file of " +
                    std::to_string(fileBytes) + "; the shape and type need " +
                    (absurd ? std::string("over 2^64") : std::to_string(need)) + ")");
  }
}

void readDataset(hid_t loc, const std::string& name, DType type, void* out,
                 const std::string& context) {
  const std::string where = context + ":" + name;
  Handle ds(check(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), "H5Dopen2", where));
  checkStoredSize(ds, where);
  Handle space(check(H5Dget_space(ds), "H5Dget_space", where));
  if (H5Sget_simple_extent_npoints(space) == 0) return;
  check(H5Dread(ds, nativeType(type), H5S_ALL, H5S_ALL, H5P_DEFAULT, out), "H5Dread", where);
}

void writeAttr(hid_t obj, const std::string& name, const std::string& value,
               const std::string& context) {
  const std::string where = context + "@" + name;
  Handle type(check(H5Tcopy(H5T_C_S1), "H5Tcopy", where));
  check(H5Tset_size(type, value.empty() ? 1 : value.size()), "H5Tset_size", where);
  check(H5Tset_strpad(type, H5T_STR_NULLPAD), "H5Tset_strpad", where);
  Handle space(check(H5Screate(H5S_SCALAR), "H5Screate", where));
  Handle attr(check(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT),
                    "H5Acreate2", where));
  const char zero = '\0';
  check(H5Awrite(attr, type, value.empty() ? &zero : value.data()), "H5Awrite", where);
}

void writeAttr(hid_t obj, const std::string& name, int64_t value, const std::string& context) {
  const std::string where = context + "@" + name;
  Handle space(check(H5Screate(H5S_SCALAR), "H5Screate", where));
  Handle attr(check(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                    "H5Acreate2", where));
  check(H5Awrite(attr, H5T_NATIVE_INT64, &value), "H5Awrite", where);
}

void writeAttr(hid_t obj, const std::string& name, const std::vector<int64_t>& value,
               const std::string& context) {
  const std::string where = context + "@" + name;
  hsize_t n = value.size();
  Handle space(check(H5Screate_simple(1, &n, nullptr), "H5Screate_simple", where));
  Handle attr(check(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                    "H5Acreate2", where));
  if (n > 0) check(H5Awrite(attr, H5T_NATIVE_INT64, value.data()), "H5Awrite", where);
}

bool hasAttr(hid_t obj, const std::string& name) {
  quietErrors();
  return H5Aexists(obj, name.c_str()) > 0;
}

namespace {
herr_t collectAttrName(hid_t, const char* name, const H5A_info_t*, void* out) {
  static_cast<std::vector<std::string>*>(out)->emplace_back(name);
  return 0;
}
}  // namespace

std::vector<std::string> attrNames(hid_t obj, const std::string& context) {
  // HDF5 1.10 dereferences garbage in H5Aiterate2 when an attribute message of OBJ fails to
  // decode while it builds its table of attributes (H5A__attr_release_table on the error path).
  // Looking up a name no attribute can have decodes every message on a path that fails cleanly,
  // so a damaged message is refused here first.
  quietErrors();
  check(H5Aexists(obj, "\x01"), "H5Aexists", context);
  std::vector<std::string> names;
  hsize_t idx = 0;
  check(H5Aiterate2(obj, H5_INDEX_NAME, H5_ITER_INC, &idx, collectAttrName, &names),
        "H5Aiterate2", context);
  return names;
}

namespace {
// H5Aread fills one value per element of the attribute's dataspace: readers of one value refuse
// any other count before reading (a foreign or damaged file may hold an array there).
void expectOneElement(hid_t attr, const std::string& where) {
  Handle space(check(H5Aget_space(attr), "H5Aget_space", where));
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  if (n != 1) throw DataError(where + ": expected one value, the attribute holds " + std::to_string(n));
}
}  // namespace

std::string readStringAttr(hid_t obj, const std::string& name, const std::string& context) {
  const std::string where = context + "@" + name;
  if (!hasAttr(obj, name)) throw DataError(where + ": attribute missing");
  Handle attr(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "H5Aopen", where));
  Handle type(check(H5Aget_type(attr), "H5Aget_type", where));
  if (H5Tget_class(type) != H5T_STRING) throw DataError(where + ": expected a string attribute");
  expectOneElement(attr, where);
  if (H5Tis_variable_str(type) > 0) {
    char* s = nullptr;
    Handle mem(check(H5Tcopy(H5T_C_S1), "H5Tcopy", where));
    check(H5Tset_size(mem, H5T_VARIABLE), "H5Tset_size", where);
    // Match the stored character set (h5py writes UTF-8); HDF5 will not convert between them.
    check(H5Tset_cset(mem, H5Tget_cset(type)), "H5Tset_cset", where);
    check(H5Aread(attr, mem, &s), "H5Aread", where);
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  const size_t size = H5Tget_size(type);
  std::string out(size, '\0');
  check(H5Aread(attr, type, out.data()), "H5Aread", where);
  out.resize(out.find('\0') == std::string::npos ? out.size() : out.find('\0'));
  return out;
}

std::vector<int64_t> readIntsAttr(hid_t obj, const std::string& name, const std::string& context) {
  const std::string where = context + "@" + name;
  if (!hasAttr(obj, name)) throw DataError(where + ": attribute missing");
  Handle attr(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "H5Aopen", where));
  Handle type(check(H5Aget_type(attr), "H5Aget_type", where));
  if (H5Tget_class(type) != H5T_INTEGER) throw DataError(where + ": expected an integer attribute");
  checkNumericType(type, where);
  Handle space(check(H5Aget_space(attr), "H5Aget_space", where));
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  if (n < 0 || n > (1 << 20)) throw DataError(where + ": implausible attribute size");
  std::vector<int64_t> out(static_cast<size_t>(n));
  if (n > 0) check(H5Aread(attr, H5T_NATIVE_INT64, out.data()), "H5Aread", where);
  return out;
}

double readDoubleAttr(hid_t obj, const std::string& name, const std::string& context) {
  const std::string where = context + "@" + name;
  if (!hasAttr(obj, name)) throw DataError(where + ": attribute missing");
  Handle attr(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "H5Aopen", where));
  Handle type(check(H5Aget_type(attr), "H5Aget_type", where));
  if (H5Tget_class(type) != H5T_FLOAT) throw DataError(where + ": expected a float attribute");
  checkNumericType(type, where);
  expectOneElement(attr, where);
  double v = 0;
  check(H5Aread(attr, H5T_NATIVE_DOUBLE, &v), "H5Aread", where);
  return v;
}

int64_t readIntAttr(hid_t obj, const std::string& name, const std::string& context) {
  auto v = readIntsAttr(obj, name, context);
  if (v.size() != 1) throw DataError(context + "@" + name + ": expected one integer");
  return v[0];
}

}  // namespace perennial::h5
