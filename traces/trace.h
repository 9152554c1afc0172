#pragma once
// In-memory form of a kvsim trace (format: traces/FORMAT.md). A Trace owns its tensors; every
// accessor returns an Eigen view that is valid while the Trace lives.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "models/model_shape.h"

namespace kvsim::traces {

// How tensors are stored on disk. In memory they are always float32.
enum class StorageType { kFloat16, kFloat32 };
const char* StorageTypeName(StorageType type);

// One contiguous span of positions [begin, end) of a multi-turn conversation.
struct Segment {
  int64_t begin = 0;
  int64_t end = 0;
  int32_t turn = 0;  // 0-based turn index; several segments may share a turn
  std::string role;  // "system", "user", "assistant" or free text
  friend bool operator==(const Segment&, const Segment&) = default;
};

struct TraceMeta {
  models::ModelShape shape;
  int64_t prompt_len = 0;  // positions [0, prompt_len) are the prompt (prefill)
  int64_t total_len = 0;   // T: prompt + decoded positions
  StorageType storage = StorageType::kFloat16;
  std::string source;  // e.g. "synthetic:recurrence seed=1" or "capture:stories260K.gguf"
  std::vector<int32_t> token_ids;       // length T
  std::vector<std::string> token_text;  // empty, or length T
  std::vector<Segment> segments;        // empty unless multi-turn
  bool has_pre_rope = false;            // layers carry pre-RoPE q/k too

  int64_t decode_len() const { return total_len - prompt_len; }
  friend bool operator==(const TraceMeta&, const TraceMeta&) = default;
};

// One layer's tensors. queries: [q_heads, T, d]; keys, values: [kv_heads, T, d]. The pre-RoPE
// tensors are empty unless TraceMeta::has_pre_rope.
struct LayerTensors {
  HeadTensor queries;
  HeadTensor keys;
  HeadTensor values;
  HeadTensor queries_pre_rope;
  HeadTensor keys_pre_rope;
  friend bool operator==(const LayerTensors&, const LayerTensors&) = default;
};

// The unit of open-loop replay: one (layer, KV head) with the g query heads that read it.
struct KvHeadSlice {
  int layer = 0;
  int kv_head = 0;
  std::vector<RowMatrixXf> queries;  // g matrices, T x d, query heads kv_head*g .. kv_head*g+g-1
  RowMatrixXf keys;                  // T x d
  RowMatrixXf values;                // T x d
};

class Trace {
 public:
  Trace() = default;
  Trace(TraceMeta meta, std::vector<LayerTensors> layers)
      : meta_(std::move(meta)), layers_(std::move(layers)) {}

  const TraceMeta& meta() const { return meta_; }
  TraceMeta& mutable_meta() { return meta_; }
  const models::ModelShape& shape() const { return meta_.shape; }
  int num_layers() const { return static_cast<int>(layers_.size()); }
  const LayerTensors& layer(int l) const { return layers_.at(static_cast<size_t>(l)); }
  LayerTensors& mutable_layer(int l) { return layers_.at(static_cast<size_t>(l)); }

  ConstMatrixMap Queries(int layer, int q_head) const {
    return this->layer(layer).queries.Head(q_head);
  }
  ConstMatrixMap Keys(int layer, int kv_head) const {
    return this->layer(layer).keys.Head(kv_head);
  }
  ConstMatrixMap Values(int layer, int kv_head) const {
    return this->layer(layer).values.Head(kv_head);
  }

  // Copies one (layer, KV head) with its query heads out of the trace.
  KvHeadSlice Slice(int layer, int kv_head) const;

  // Attention-Gate keep (1) / evict (0) flags (the optional dataset /gate_flags, FORMAT.md),
  // [layers, kv_heads, T] flattened; empty when the trace has none. TraceReader::ReadAll fills
  // them; they are not part of TraceMeta.
  bool has_gate_flags() const { return !gate_flags_.empty(); }
  // The T flags of one (layer, KV head). REQUIRES has_gate_flags().
  std::span<const uint8_t> GateFlags(int layer, int kv_head) const;
  // REQUIRES flags.size() == layers * kv_heads * T (asserted), or empty to clear.
  void set_gate_flags(std::vector<uint8_t> flags);

 private:
  TraceMeta meta_;
  std::vector<LayerTensors> layers_;
  std::vector<uint8_t> gate_flags_;
};

}  // namespace kvsim::traces
