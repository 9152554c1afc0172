#include "traces/trace.h"

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

}  // namespace kvsim::traces
