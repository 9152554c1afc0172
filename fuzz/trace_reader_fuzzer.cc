// The trace reader (traces/trace_io.h) on a file made of the input: open and validate, then
// read every layer, one slice and the gate flags, as replay and sweep do.
#include <hdf5.h>

#include <cstdlib>
#include <cstring>

#include "fuzz/fuzz_util.h"
#include "traces/hdf5_util.h"
#include "traces/trace_io.h"

namespace {

using kvsim::traces::hdf5::Handle;

bool IsVariableString(hid_t type) { return type >= 0 && H5Tis_variable_str(type) > 0; }

// True if the file holds a variable-length string where the reader reads strings: a root
// string attribute or a format-1.0 string dataset. libhdf5 1.10 reads those from its global heap
// without bounds checks and crashes on corrupt ones (issue 15, traces/FORMAT.md "Strings");
// format 1.1 has none, so by default the fuzzer skips them to search kvsim's own code and the
// layout kvsim writes. KVSIM_FUZZ_OLD_FORMAT=1 keeps these inputs and those below (to measure
// what remains for files kvsim 1.1 did not write).
bool HasVariableLengthStrings(const std::string& path) {
  kvsim::traces::hdf5::SilenceErrors();
  if (H5Fis_hdf5(path.c_str()) <= 0) return false;
  Handle file(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT));
  if (!file.valid()) return false;
  // The attributes by name, as the reader opens them: iterating over all of them (H5Aiterate2)
  // reaches libhdf5 code the reader never runs, which crashes on some corrupt files too.
  bool found = false;
  for (const char* name : {"format", "model_name", "source"}) {
    if (found || H5Aexists(file.get(), name) <= 0) continue;
    Handle attr(H5Aopen(file.get(), name, H5P_DEFAULT));
    Handle type(H5Aget_type(attr.get()));
    found = IsVariableString(type.get());
  }
  for (const char* name : {"/tokens/text", "/segments/role"}) {
    if (found || !kvsim::traces::hdf5::Exists(file.get(), name)) continue;
    Handle ds(H5Dopen2(file.get(), name, H5P_DEFAULT));
    Handle type(H5Dget_type(ds.get()));
    found = IsVariableString(type.get());
  }
  return found;
}

// True if the input is an HDF5 file whose superblock is version 0 or 1: the pre-1.8 file format,
// whose object headers and B-trees carry no checksums, so libhdf5 1.10 parses corrupt ones as
// they are and crashes on some (heap-buffer-overflow in H5Aexists' message decoding, found
// here). kvsim 1.1 writes the 1.10 format, where every metadata block is checksummed
// (traces/FORMAT.md). The superblock sits at offset 0, 512, 1024, 2048, ...
bool HasUnchecksummedMetadata(const uint8_t* data, size_t size) {
  static constexpr uint8_t kSignature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
  for (size_t offset = 0; offset + 9 <= size; offset = offset == 0 ? 512 : offset * 2) {
    if (std::memcmp(data + offset, kSignature, 8) == 0) return data[offset + 8] < 2;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool old_format = std::getenv("KVSIM_FUZZ_OLD_FORMAT") != nullptr;
  const std::string& path = kvsim::fuzz::WriteInput(data, size, ".h5");
  if (!old_format && (HasUnchecksummedMetadata(data, size) || HasVariableLengthStrings(path))) {
    return 0;
  }
  return kvsim::fuzz::Run([&] {
    const kvsim::traces::TraceReader reader(path);
    const kvsim::traces::TraceMeta& meta = reader.meta();
    kvsim::traces::LayerTensors layer;
    for (int l = 0; l < meta.shape.layers; ++l) reader.ReadLayer(l, &layer);
    reader.ReadSlice(meta.shape.layers - 1, meta.shape.kv_heads - 1);
    if (reader.has_gate_flags()) reader.ReadGateFlags(0, 0);
  });
}
