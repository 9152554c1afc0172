#pragma once
// Layout constants shared by the trace writer (trace_writer.cc) and reader (trace_reader.cc);
// private to them. traces/FORMAT.md is the specification.
#include <fmt/format.h>

#include <cstdint>
#include <string>

#include "traces/trace.h"

namespace kvsim::traces::internal {

inline constexpr const char* kFormatName = "kvsim-trace";
inline constexpr int64_t kFormatVersion = 1;
// 1.1: strings as UTF-8 bytes + offsets (no HDF5 variable-length types), every dataset
// checksummed with Fletcher32. A 1.0 file has no `format_minor_version` attribute.
inline constexpr int64_t kFormatMinorVersion = 1;

inline std::string LayerPath(int layer, const char* tensor) {
  return fmt::format("/layers/{}/{}", layer, tensor);
}

inline size_t ElementBytes(StorageType storage) { return storage == StorageType::kFloat16 ? 2 : 4; }

// The five per-layer tensors in file order, with their dataset names and head counts.
struct TensorSpec {
  const char* name;
  bool pre_rope;
  bool query;  // q_heads rows (else kv_heads)
};
inline constexpr TensorSpec kTensors[] = {{"q", false, true},
                                          {"k", false, false},
                                          {"v", false, false},
                                          {"q_pre_rope", true, true},
                                          {"k_pre_rope", true, false}};

inline const HeadTensor& TensorOf(const LayerTensors& l, int index) {
  switch (index) {
    case 0:
      return l.queries;
    case 1:
      return l.keys;
    case 2:
      return l.values;
    case 3:
      return l.queries_pre_rope;
    default:
      return l.keys_pre_rope;
  }
}
inline HeadTensor& TensorOf(LayerTensors& l, int index) {
  return const_cast<HeadTensor&>(TensorOf(static_cast<const LayerTensors&>(l), index));
}

// Makes `t` a zero-initialized [heads, positions, dim] tensor unless it already has that shape,
// in which case its memory (and contents) are kept.
inline void EnsureShape(HeadTensor& t, int heads, int64_t positions, int dim) {
  if (t.heads() != heads || t.positions() != positions || t.dim() != dim) {
    t = HeadTensor(heads, positions, dim);
  }
}

}  // namespace kvsim::traces::internal
