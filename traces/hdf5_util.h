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
// Fixed-length UTF-8 string of `bytes` bytes (at least 1), null-padded. kvsim writes no
// variable-length strings: HDF5 1.10 reads those from its global heap, where a corrupt file
// crashes the library (issue 15); fixed-length ones are stored in place and read bounded.
Handle MakeFixedStringType(size_t bytes);

// File-access properties for files kvsim writes: the HDF5 1.10 file format (superblock v3,
// object header v2, fixed/extensible-array chunk indexes), in which every metadata block carries
// a checksum, so a corrupted header is a read error instead of libhdf5 parsing garbage (which
// crashes it: issue 15). Readable by HDF5 >= 1.10 (h5py included).
Handle ChecksummedMetadataAccess();

// True if the object at absolute `path` exists (every intermediate group included).
bool Exists(hid_t file, const std::string& path);

// "float16", "int64", "uint8", "string", ...: a datatype named as numpy would name it.
std::string DescribeType(hid_t type);
// Extents of a dataset's dataspace.
std::vector<hsize_t> Dims(hid_t dataset);
// "[4, 100, 8]".
std::string FormatDims(const std::vector<hsize_t>& dims);

// True if this HDF5 library can decode every filter of dataset `ds`; else false, with the first
// one that it cannot decode described in `filter` ("40000 ('blosc')").
bool FiltersDecodable(hid_t ds, std::string* filter);

// Scalar attributes on `object`; return false if HDF5 failed. Strings are fixed-length UTF-8.
bool WriteStringAttribute(hid_t object, const char* name, const std::string& value);
bool WriteInt64Attribute(hid_t object, const char* name, int64_t value);
bool WriteDoubleAttribute(hid_t object, const char* name, double value);

// Creation properties of a 1-D dataset of `n` elements: chunked (HDF5 filters need chunks) with
// the Fletcher32 checksum filter, so a corrupted chunk fails to read instead of giving wrong
// values. The extent is unlimited so that empty datasets (n = 0) can be chunked too.
Handle ChecksummedLayout1D(hsize_t n);
// Creates the 1-D dataset `name` of `n` elements of `file_type` under `parent` with
// ChecksummedLayout1D and writes `data` (n elements of `mem_type`). Returns false if HDF5 failed.
bool WriteChecksummed1D(
    hid_t parent, const char* name, hid_t file_type, hid_t mem_type, size_t n, const void* data);

// Reads any 1-D string dataset (variable or fixed length, any character set) into `out`.
// Returns false if HDF5 failed or the dataset does not hold strings. Only version-1.0 traces
// hold string datasets (FORMAT.md): variable-length ones go through HDF5's global heap, which
// libhdf5 1.10 reads unchecked, so a corrupt old file can still crash the library here.
bool ReadStringDataset(hid_t dataset, std::vector<std::string>* out);
// Reads a scalar or one-element string attribute (variable or fixed length).
bool ReadStringAttribute(hid_t attribute, std::string* out);

}  // namespace kvsim::traces::hdf5
