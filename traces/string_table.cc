#include "traces/string_table.h"

#include <fmt/format.h>

#include "common/error.h"
#include "traces/hdf5_util.h"

namespace kvsim::traces::internal {

using hdf5::Handle;

std::string StringBytesPath(const std::string& base) { return base + "_utf8"; }
std::string StringOffsetsPath(const std::string& base) { return base + "_offsets"; }

bool WriteStringTable(hid_t group,
                      const std::string& name,
                      const std::vector<std::string>& values) {
  std::vector<int64_t> offsets{0};
  offsets.reserve(values.size() + 1);
  std::vector<uint8_t> bytes;
  for (const std::string& s : values) {
    bytes.insert(bytes.end(), s.begin(), s.end());
    offsets.push_back(static_cast<int64_t>(bytes.size()));
  }
  return hdf5::WriteChecksummed1D(group, StringBytesPath(name).c_str(), H5T_STD_U8LE,
                                  H5T_NATIVE_UINT8, bytes.size(), bytes.data()) &&
         hdf5::WriteChecksummed1D(group, StringOffsetsPath(name).c_str(), H5T_STD_I64LE,
                                  H5T_NATIVE_INT64, offsets.size(), offsets.data());
}

namespace {

// Checks offsets[0] == 0 and that they never decrease; the last one is the byte count the
// bytes dataset must have, compared by the caller against its extent.
void CheckOffsets(const std::string& file_name,
                  const std::string& base,
                  std::span<const int64_t> offsets) {
  const std::string name = StringOffsetsPath(base);
  if (offsets.empty() || offsets[0] != 0) {
    ThrowInputError("{}: dataset '{}' starts with {}, expected 0 (offset of the first string)",
                    file_name, name,
                    offsets.empty() ? std::string("nothing") : std::to_string(offsets[0]));
  }
  for (size_t i = 1; i < offsets.size(); ++i) {
    if (offsets[i] < offsets[i - 1]) {
      ThrowInputError(
          "{}: dataset '{}' holds {} at index {} after {}, expected offsets that never decrease",
          file_name, name, offsets[i], i, offsets[i - 1]);
    }
  }
}

Handle OpenDataset(hid_t file,
                   const std::string& file_name,
                   const std::string& name,
                   const std::string& expected) {
  if (!hdf5::Exists(file, name)) {
    ThrowInputError("{}: dataset '{}' is missing, expected {}", file_name, name, expected);
  }
  Handle ds(H5Dopen2(file, name.c_str(), H5P_DEFAULT));
  if (!ds.valid()) {
    ThrowInputError("{}: '{}' is not a readable dataset, expected {}", file_name, name, expected);
  }
  return ds;
}

// A 1-D integer dataset of `element_bytes`-byte elements (0: any integer width) whose extent
// is backed by stored data; returns its length. The 64x allowance is the reader's rule for
// tensors (trace_reader.cc, CheckStoredBytes): no filter shrinks real data that much, while a
// corrupt extent with no chunks behind it does.
hsize_t CheckIntegerColumn(hid_t ds,
                           const std::string& file_name,
                           const std::string& name,
                           size_t element_bytes,
                           const char* expected) {
  Handle type(H5Dget_type(ds));
  if (H5Tget_class(type.get()) != H5T_INTEGER ||
      (element_bytes != 0 && H5Tget_size(type.get()) != element_bytes)) {
    ThrowInputError("{}: dataset '{}' has dtype {}, expected {}", file_name, name,
                    hdf5::DescribeType(type.get()), expected);
  }
  const std::vector<hsize_t> dims = hdf5::Dims(ds);
  if (dims.size() != 1) {
    ThrowInputError("{}: dataset '{}' has shape {}, expected 1-D: {}", file_name, name,
                    hdf5::FormatDims(dims), expected);
  }
  const double declared =
      static_cast<double>(dims[0]) * static_cast<double>(H5Tget_size(type.get()));
  const auto stored = static_cast<double>(H5Dget_storage_size(ds));
  if (stored * 64.0 < declared) {
    ThrowInputError(
        "{}: dataset '{}' declares {} elements ({:.0f} bytes) but the file holds {:.0f} bytes of "
        "it: declared size larger than the data in the file (truncated or corrupt?)",
        file_name, name, dims[0], declared, stored);
  }
  return dims[0];
}

void Read(
    hid_t ds, hid_t mem_type, void* out, const std::string& file_name, const std::string& name) {
  if (H5Dread(ds, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) {
    ThrowInputError(
        "{}: cannot read dataset '{}': HDF5 read failed (checksum mismatch or corrupt data)",
        file_name, name);
  }
}

}  // namespace

std::vector<std::string> ReadStringTable(hid_t file,
                                         const std::string& file_name,
                                         const std::string& base,
                                         size_t count) {
  std::lock_guard lock(hdf5::Hdf5Mutex());
  const std::string offsets_name = StringOffsetsPath(base);
  const std::string offsets_expected = fmt::format("int64 [{}] string offsets", count + 1);
  Handle offsets_ds = OpenDataset(file, file_name, offsets_name, offsets_expected);
  const hsize_t n =
      CheckIntegerColumn(offsets_ds.get(), file_name, offsets_name, 0, offsets_expected.c_str());
  if (n != count + 1) {
    ThrowInputError("{}: dataset '{}' has shape [{}], expected [{}] (one more than the {} strings)",
                    file_name, offsets_name, n, count + 1, count);
  }
  std::vector<int64_t> offsets(count + 1);
  Read(offsets_ds.get(), H5T_NATIVE_INT64, offsets.data(), file_name, offsets_name);
  CheckOffsets(file_name, base, offsets);

  const std::string bytes_name = StringBytesPath(base);
  Handle bytes_ds = OpenDataset(file, file_name, bytes_name, "uint8 [bytes] UTF-8 text");
  const hsize_t b =
      CheckIntegerColumn(bytes_ds.get(), file_name, bytes_name, 1, "uint8 [bytes] UTF-8 text");
  if (b != static_cast<hsize_t>(offsets.back())) {
    ThrowInputError("{}: dataset '{}' has {} bytes, expected {} (the last of '{}')", file_name,
                    bytes_name, b, offsets.back(), offsets_name);
  }
  std::vector<uint8_t> bytes(b);
  if (b > 0) Read(bytes_ds.get(), H5T_NATIVE_UINT8, bytes.data(), file_name, bytes_name);
  return SplitStringTable(file_name, base, bytes, offsets);
}

std::vector<std::string> SplitStringTable(const std::string& file_name,
                                          const std::string& base,
                                          std::span<const uint8_t> bytes,
                                          std::span<const int64_t> offsets) {
  CheckOffsets(file_name, base, offsets);
  if (offsets.back() != static_cast<int64_t>(bytes.size())) {
    ThrowInputError("{}: dataset '{}' ends at {}, expected {} (the length of '{}')", file_name,
                    StringOffsetsPath(base), offsets.back(), bytes.size(), StringBytesPath(base));
  }
  std::vector<std::string> out;
  out.reserve(offsets.size() - 1);
  for (size_t i = 0; i + 1 < offsets.size(); ++i) {
    const auto* begin = reinterpret_cast<const char*>(bytes.data()) + offsets[i];
    out.push_back(EscapeInvalidUtf8(
        std::string_view(begin, static_cast<size_t>(offsets[i + 1] - offsets[i]))));
  }
  return out;
}

namespace {

// Length of the valid UTF-8 sequence starting at text[i], or 0 if none does (RFC 3629: no
// overlong forms, no surrogates, nothing above U+10FFFF).
size_t Utf8SequenceLength(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  const uint8_t b0 = byte(i);
  if (b0 < 0x80) return 1;
  size_t n = 0;
  uint8_t low = 0x80;  // bounds of the second byte
  uint8_t high = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) low = 0xA0;
    if (b0 == 0xED) high = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) low = 0x90;
    if (b0 == 0xF4) high = 0x8F;
  } else {
    return 0;
  }
  if (i + n > text.size() || byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (size_t k = 2; k < n; ++k) {
    if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return 0;
  }
  return n;
}

}  // namespace

std::string EscapeInvalidUtf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t n = Utf8SequenceLength(text, i);
    if (n == 0) {
      out += fmt::format("\\x{:02X}", static_cast<uint8_t>(text[i]));
      ++i;
    } else {
      out.append(text.substr(i, n));
      i += n;
    }
  }
  return out;
}

}  // namespace kvsim::traces::internal
