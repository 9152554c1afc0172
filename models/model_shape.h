#pragma once
// The attention geometry of a decoder-only transformer: everything the simulator needs to know
// about a model to size caches and account bytes. Presets for real models live in
// model_shape.cc; any preset can be cut down to fewer layers for tests.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kvsim::models {

struct ModelShape {
  std::string name;
  int layers = 0;
  int q_heads = 0;
  int kv_heads = 0;
  int head_dim = 0;
  double rope_theta = 10000.0;
  // Bytes per element of the simulated KV cache (2 = fp16/bf16, the usual serving dtype).
  // Independent of how a trace stores its values on disk.
  int kv_bytes_per_element = 2;

  // Query heads per KV head (the GQA group size g = Hq / Hkv).
  int GroupSize() const { return q_heads / kv_heads; }
  // Bytes one token costs in one (layer, KV head): its key and its value.
  int64_t KvBytesPerTokenPerHead() const { return 2LL * head_dim * kv_bytes_per_element; }
  // Bytes one token costs across all layers and KV heads.
  int64_t KvBytesPerToken() const { return KvBytesPerTokenPerHead() * layers * kv_heads; }

  // Throws InputError naming `context` and the offending field unless every extent is positive
  // and q_heads is a multiple of kv_heads.
  void Validate(std::string_view context) const;

  friend bool operator==(const ModelShape&, const ModelShape&) = default;
};

// Known shapes: "llama-3-8b", "llama-3.1-70b", "mistral-7b", "qwen2.5-7b", "stories260k".
// Throws InputError listing the known names if `name` is not one of them.
ModelShape ShapePreset(std::string_view name);
std::vector<std::string> ShapePresetNames();

// `shape` with only its first `layers` layers (tests and benchmarks use 2-4 layers of a big
// model). Throws InputError if layers is not in [1, shape.layers].
ModelShape WithLayers(ModelShape shape, int layers);

}  // namespace kvsim::models
