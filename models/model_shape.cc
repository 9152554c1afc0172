#include "models/model_shape.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"

namespace kvsim::models {
namespace {

// Shapes from the models' published configuration files (config.json on their model cards):
// layers, attention heads, key/value heads, head dim = hidden / heads, rope_theta.
const std::vector<ModelShape>& Presets() {
  static const std::vector<ModelShape> presets = {
      {"llama-3-8b", 32, 32, 8, 128, 500000.0, 2},
      {"llama-3.1-70b", 80, 64, 8, 128, 500000.0, 2},
      {"mistral-7b", 32, 32, 8, 128, 1000000.0, 2},  // v0.2/v0.3: rope_theta 1e6
      {"qwen2.5-7b", 28, 28, 4, 128, 1000000.0, 2},
      {"stories260k", 5, 8, 4, 8, 10000.0, 2},  // karpathy/tinyllamas, llama2.c doc/stories260K.md
  };
  return presets;
}

}  // namespace

void ModelShape::Validate(std::string_view context) const {
  auto positive = [&](int value, const char* field) {
    if (value <= 0)
      ThrowInputError("{}: model shape field '{}' is {}, expected > 0", context, field, value);
  };
  positive(layers, "layers");
  positive(q_heads, "q_heads");
  positive(kv_heads, "kv_heads");
  positive(head_dim, "head_dim");
  positive(kv_bytes_per_element, "kv_bytes_per_element");
  if (q_heads % kv_heads != 0) {
    ThrowInputError("{}: q_heads={} is not a multiple of kv_heads={}", context, q_heads, kv_heads);
  }
  if (!(rope_theta > 0.0)) {
    ThrowInputError("{}: model shape field 'rope_theta' is {}, expected > 0", context, rope_theta);
  }
}

ModelShape ShapePreset(std::string_view name) {
  for (const auto& shape : Presets()) {
    if (shape.name == name) return shape;
  }
  ThrowInputError("unknown model shape '{}': expected one of {}", name,
                  fmt::join(ShapePresetNames(), ", "));
}

std::vector<std::string> ShapePresetNames() {
  std::vector<std::string> names;
  for (const auto& shape : Presets()) names.push_back(shape.name);
  return names;
}

ModelShape WithLayers(ModelShape shape, int layers) {
  if (layers < 1 || layers > shape.layers) {
    ThrowInputError("--layers {} is out of range for {}: expected 1..{}", layers, shape.name,
                    shape.layers);
  }
  shape.layers = layers;
  return shape;
}

}  // namespace kvsim::models
