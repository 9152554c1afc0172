#include "traces/hdf5_util.h"

#include <fmt/format.h>

#include <algorithm>

namespace kvsim::traces::hdf5 {

std::recursive_mutex& Hdf5Mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

void SilenceErrors() {
  std::lock_guard lock(Hdf5Mutex());
  static const bool silenced = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)silenced;
}

bool Handle::Reset() {
  if (id_ < 0) return true;
  std::lock_guard lock(Hdf5Mutex());
  herr_t status = -1;
  switch (H5Iget_type(id_)) {
    case H5I_FILE:
      status = H5Fclose(id_);
      break;
    case H5I_GROUP:
      status = H5Gclose(id_);
      break;
    case H5I_DATASET:
      status = H5Dclose(id_);
      break;
    case H5I_DATASPACE:
      status = H5Sclose(id_);
      break;
    case H5I_DATATYPE:
      status = H5Tclose(id_);
      break;
    case H5I_ATTR:
      status = H5Aclose(id_);
      break;
    case H5I_GENPROP_LST:
      status = H5Pclose(id_);
      break;
    default:
      status = H5Idec_ref(id_);
      break;
  }
  id_ = H5I_INVALID_HID;
  return status >= 0;
}

Handle MakeFloat16Type() {
  std::lock_guard lock(Hdf5Mutex());
  // Exactly h5py's definition (h5py/h5t.pyx): sign bit 15, exponent bits 10-14, mantissa 0-9.
  Handle type(H5Tcopy(H5T_IEEE_F32LE));
  H5Tset_fields(type.get(), 15, 10, 5, 0, 10);
  H5Tset_size(type.get(), 2);
  H5Tset_ebias(type.get(), 15);
  return type;
}

Handle MakeFixedStringType(size_t bytes) {
  std::lock_guard lock(Hdf5Mutex());
  Handle type(H5Tcopy(H5T_C_S1));
  H5Tset_size(type.get(), std::max<size_t>(bytes, 1));
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  H5Tset_cset(type.get(), H5T_CSET_UTF8);
  return type;
}

Handle ChecksummedMetadataAccess() {
  std::lock_guard lock(Hdf5Mutex());
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS));
  H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V110, H5F_LIBVER_V110);
  return fapl;
}

bool Exists(hid_t file, const std::string& path) {
  std::lock_guard lock(Hdf5Mutex());
  size_t pos = 0;
  while (pos != std::string::npos) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
  }
  return true;
}

std::string DescribeType(hid_t type) {
  std::lock_guard lock(Hdf5Mutex());
  const size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_INTEGER:
      return fmt::format("{}{}", H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int", bits);
    case H5T_FLOAT:
      return fmt::format("float{}", bits);
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    default:
      return fmt::format("HDF5 type class {}", static_cast<int>(H5Tget_class(type)));
  }
}

std::vector<hsize_t> Dims(hid_t dataset) {
  std::lock_guard lock(Hdf5Mutex());
  Handle space(H5Dget_space(dataset));
  const int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank <= 0) return {};
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  return dims;
}

std::string FormatDims(const std::vector<hsize_t>& dims) {
  return fmt::format("[{}]", fmt::join(dims, ", "));
}

bool FiltersDecodable(hid_t ds, std::string* filter) {
  std::lock_guard lock(Hdf5Mutex());
  Handle plist(H5Dget_create_plist(ds));
  const int filters = H5Pget_nfilters(plist.get());
  for (int i = 0; i < filters; ++i) {
    unsigned flags = 0;
    size_t n_values = 0;
    char name[64] = {};
    const H5Z_filter_t id = H5Pget_filter2(plist.get(), static_cast<unsigned>(i), &flags, &n_values,
                                           nullptr, sizeof(name), name, nullptr);
    unsigned config = 0;
    const bool decodes = id >= 0 && H5Zfilter_avail(id) > 0 &&
                         H5Zget_filter_info(id, &config) >= 0 &&
                         (config & H5Z_FILTER_CONFIG_DECODE_ENABLED) != 0;
    if (!decodes) {
      *filter = fmt::format("{} ('{}')", static_cast<int>(id), name);
      return false;
    }
  }
  return true;
}

namespace {

bool WriteScalarAttribute(hid_t object, const char* name, hid_t type, const void* value) {
  std::lock_guard lock(Hdf5Mutex());
  Handle space(H5Screate(H5S_SCALAR));
  if (H5Aexists(object, name) > 0) H5Adelete(object, name);
  Handle attr(H5Acreate2(object, name, type, space.get(), H5P_DEFAULT, H5P_DEFAULT));
  return attr.valid() && H5Awrite(attr.get(), type, value) >= 0;
}

}  // namespace

bool WriteStringAttribute(hid_t object, const char* name, const std::string& value) {
  Handle type = MakeFixedStringType(value.size());
  // One byte more than the type holds: an empty string is stored as one null byte.
  const std::string padded = value + '\0';
  return WriteScalarAttribute(object, name, type.get(), padded.data());
}

bool WriteInt64Attribute(hid_t object, const char* name, int64_t value) {
  return WriteScalarAttribute(object, name, H5T_STD_I64LE, &value);
}

bool WriteDoubleAttribute(hid_t object, const char* name, double value) {
  return WriteScalarAttribute(object, name, H5T_IEEE_F64LE, &value);
}

Handle ChecksummedLayout1D(hsize_t n) {
  std::lock_guard lock(Hdf5Mutex());
  // 64 Ki elements: a 1-D token or segment dataset is read whole, so the chunk only bounds the
  // memory HDF5 uses per chunk and the data a checksum failure names.
  constexpr hsize_t kChunk = hsize_t{1} << 16;
  const hsize_t chunk = std::clamp<hsize_t>(n, 1, kChunk);
  Handle plist(H5Pcreate(H5P_DATASET_CREATE));
  if (H5Pset_chunk(plist.get(), 1, &chunk) < 0 || H5Pset_fletcher32(plist.get()) < 0) {
    return Handle();
  }
  return plist;
}

bool WriteChecksummed1D(
    hid_t parent, const char* name, hid_t file_type, hid_t mem_type, size_t n, const void* data) {
  std::lock_guard lock(Hdf5Mutex());
  const hsize_t dims = n;
  const hsize_t max_dims = H5S_UNLIMITED;
  Handle space(H5Screate_simple(1, &dims, &max_dims));
  Handle plist = ChecksummedLayout1D(n);
  if (!plist.valid()) return false;
  Handle dataset(
      H5Dcreate2(parent, name, file_type, space.get(), H5P_DEFAULT, plist.get(), H5P_DEFAULT));
  if (!dataset.valid()) return false;
  return n == 0 || H5Dwrite(dataset.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
}

namespace {

// Reads `count` strings from an attribute or dataset whose file type is `file_type`.
template <typename ReadFn>
bool ReadStrings(hid_t file_type, size_t count, ReadFn read, std::vector<std::string>* out) {
  if (H5Tget_class(file_type) != H5T_STRING) return false;
  out->clear();
  out->reserve(count);
  // Keep the file's character set: HDF5 refuses ASCII <-> UTF-8 conversions.
  Handle mem_type(H5Tcopy(H5T_C_S1));
  H5Tset_cset(mem_type.get(), H5Tget_cset(file_type));
  if (H5Tis_variable_str(file_type) > 0) {
    H5Tset_size(mem_type.get(), H5T_VARIABLE);
    std::vector<char*> pointers(count, nullptr);
    if (read(mem_type.get(), pointers.data()) < 0) return false;
    for (char* p : pointers) out->emplace_back(p ? p : "");
    Handle space(H5Screate_simple(1, std::vector<hsize_t>{count}.data(), nullptr));
    H5Dvlen_reclaim(mem_type.get(), space.get(), H5P_DEFAULT, pointers.data());
    return true;
  }
  const size_t size = H5Tget_size(file_type);
  // The declared width is trusted no further than a sane bound: a corrupt type must not make
  // the buffer below a multi-GiB allocation (issue 15).
  constexpr size_t kMaxBytes = size_t{1} << 26;
  if (size == 0 || size > kMaxBytes || count > kMaxBytes / size) return false;
  H5Tset_size(mem_type.get(), size);
  H5Tset_strpad(mem_type.get(), H5T_STR_NULLPAD);
  std::vector<char> buffer(size * count, '\0');
  if (read(mem_type.get(), buffer.data()) < 0) return false;
  for (size_t i = 0; i < count; ++i) {
    std::string s(buffer.data() + i * size, size);
    s.erase(s.find_last_not_of('\0') + 1);
    out->push_back(std::move(s));
  }
  return true;
}

}  // namespace

bool ReadStringDataset(hid_t dataset, std::vector<std::string>* out) {
  std::lock_guard lock(Hdf5Mutex());
  Handle file_type(H5Dget_type(dataset));
  const std::vector<hsize_t> dims = Dims(dataset);
  if (dims.size() != 1) return false;
  return ReadStrings(
      file_type.get(), dims[0],
      [&](hid_t mem_type, void* buf) {
        return H5Dread(dataset, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
      },
      out);
}

bool ReadStringAttribute(hid_t attribute, std::string* out) {
  std::lock_guard lock(Hdf5Mutex());
  Handle file_type(H5Aget_type(attribute));
  Handle space(H5Aget_space(attribute));
  if (H5Sget_simple_extent_npoints(space.get()) != 1) return false;
  std::vector<std::string> values;
  if (!ReadStrings(
          file_type.get(), 1,
          [&](hid_t mem_type, void* buf) { return H5Aread(attribute, mem_type, buf); }, &values)) {
    return false;
  }
  *out = values[0];
  return true;
}

}  // namespace kvsim::traces::hdf5
