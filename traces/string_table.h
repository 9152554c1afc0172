#pragma once
// Strings in a trace file without HDF5 variable-length types (traces/FORMAT.md, "Strings",
// format 1.1): the n strings of a column `<base>` are stored as `<base>_utf8`, uint8 [B], their
// bytes one after another, and `<base>_offsets`, int64 [n + 1], where string i is bytes
// [offsets[i], offsets[i + 1]). Both are chunked with the Fletcher32 checksum. Private to the
// trace reader and writer.
#include <hdf5.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kvsim::traces::internal {

// "<base>_utf8" and "<base>_offsets".
std::string StringBytesPath(const std::string& base);
std::string StringOffsetsPath(const std::string& base);

// Writes `values` as the string column `name` of `group` (two datasets, above). Returns false if
// HDF5 failed. Caller need not hold Hdf5Mutex().
bool WriteStringTable(hid_t group, const std::string& name, const std::vector<std::string>& values);

// Reads the string column at absolute path `base` (e.g. "/tokens/text"), which must hold
// `count` strings. Every size is checked against the datasets' extents and stored bytes before
// anything is allocated; errors are InputError naming `file_name`, the dataset and what was
// expected. Invalid UTF-8 is escaped (EscapeInvalidUtf8), never an error.
std::vector<std::string> ReadStringTable(hid_t file,
                                         const std::string& file_name,
                                         const std::string& base,
                                         size_t count);

// Splits `bytes` at `offsets` (n + 1 of them for n strings) after checking that offsets[0] == 0,
// that they never decrease and that the last one is bytes.size(); throws InputError naming
// `file_name` and the offsets dataset of `base` otherwise.
std::vector<std::string> SplitStringTable(const std::string& file_name,
                                          const std::string& base,
                                          std::span<const uint8_t> bytes,
                                          std::span<const int64_t> offsets);

// `text` with every byte that does not belong to a valid UTF-8 sequence (overlong forms,
// surrogates and code points above U+10FFFF included) written as the four characters "\xNN"
// (NN upper-case hex), so token text with a tokenizer's raw byte pieces stays printable and
// JSON-safe. Valid UTF-8 is returned unchanged.
std::string EscapeInvalidUtf8(std::string_view text);

}  // namespace kvsim::traces::internal
