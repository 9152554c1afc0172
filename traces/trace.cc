#include "traces/trace.h"

#include "common/error.h"

namespace kvsim::traces {

const char* StorageTypeName(StorageType type) {
  return type == StorageType::kFloat16 ? "float16" : "float32";
}

KvHeadSlice Trace::Slice(int layer_index, int kv_head) const {
  const LayerTensors& l = layer(layer_index);
  const int g = meta_.shape.GroupSize();
  KvHeadSlice slice;
  slice.layer = layer_index;
  slice.kv_head = kv_head;
  slice.queries.reserve(static_cast<size_t>(g));
  for (int i = 0; i < g; ++i) slice.queries.emplace_back(l.queries.Head(kv_head * g + i));
  slice.keys = l.keys.Head(kv_head);
  slice.values = l.values.Head(kv_head);
  return slice;
}

std::span<const uint8_t> Trace::GateFlags(int layer_index, int kv_head) const {
  KVSIM_ASSERT(has_gate_flags(), "the trace has no gate flags");
  const auto t = static_cast<size_t>(meta_.total_len);
  const size_t offset =
      (static_cast<size_t>(layer_index) * static_cast<size_t>(meta_.shape.kv_heads) +
       static_cast<size_t>(kv_head)) *
      t;
  return std::span<const uint8_t>(gate_flags_).subspan(offset, t);
}

void Trace::set_gate_flags(std::vector<uint8_t> flags) {
  KVSIM_ASSERT(flags.empty() ||
                   static_cast<int64_t>(flags.size()) ==
                       static_cast<int64_t>(num_layers()) * meta_.shape.kv_heads * meta_.total_len,
               "{} gate flags for {} layers x {} KV heads x {} positions", flags.size(),
               num_layers(), meta_.shape.kv_heads, meta_.total_len);
  gate_flags_ = std::move(flags);
}

}  // namespace kvsim::traces
