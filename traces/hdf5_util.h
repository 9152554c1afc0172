#pragma once
// Thin RAII and type helpers over the HDF5 C API, private to the trace reader and writer.
// The Debian HDF5 build is not thread-safe: every HDF5 call made through kvsim holds
// Hdf5Mutex(), so readers may be used from several threads (their calls serialize).
#include <hdf5.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace kvsim::traces::hdf5 {

// Process-wide lock around the HDF5 library. Recursive so helpers may nest.
std::recursive_mutex& Hdf5Mutex();

// Turns off HDF5's automatic error-stack printing (kvsim reports errors itself). Idempotent.
void SilenceErrors();

// Owns one HDF5 identifier (file, group, dataset, dataspace, datatype, attribute or property
// list) and closes it with the matching H5*close on destruction.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid_t id) : id_(id) {}
  ~Handle() { Reset(); }
  Handle(Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
  Handle& operator=(Handle&& other) noexcept {
    if (this != &other) {
      Reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes the identifier; returns false if HDF5 reported an error while closing (for a file,
  // that means data may not have reached the disk).
  bool Reset();

 private:
  hid_t id_ = H5I_INVALID_HID;
};

// IEEE 754 binary16, little-endian: the type h5py uses for numpy float16 (HDF5 1.10 has no
// predefined H5T_IEEE_F16LE).
Handle MakeFloat16Type();
// Variable-length UTF-8 string: h5py's default for Python str.
Handle MakeVarStringType();

// True if the object at absolute `path` exists (every intermediate group included).
bool Exists(hid_t file, const std::string& path);

// "float16", "int64", "uint8", "string", ...: a datatype named as numpy would name it.
std::string DescribeType(hid_t type);
// Extents of a dataset's dataspace.
std::vector<hsize_t> Dims(hid_t dataset);
// "[4, 100, 8]".
std::string FormatDims(const std::vector<hsize_t>& dims);

// Scalar attributes on `object`; return false if HDF5 failed.
bool WriteStringAttribute(hid_t object, const char* name, const std::string& value);
bool WriteInt64Attribute(hid_t object, const char* name, int64_t value);
bool WriteDoubleAttribute(hid_t object, const char* name, double value);

// Writes a 1-D variable-length UTF-8 string dataset. Returns false if HDF5 failed.
bool WriteStringDataset(hid_t parent, const char* name, const std::vector<std::string>& values);
// Reads any 1-D string dataset (variable or fixed length, any character set) into `out`.
// Returns false if HDF5 failed or the dataset does not hold strings.
bool ReadStringDataset(hid_t dataset, std::vector<std::string>* out);
// Reads a scalar or one-element string attribute (variable or fixed length).
bool ReadStringAttribute(hid_t attribute, std::string* out);

}  // namespace kvsim::traces::hdf5
