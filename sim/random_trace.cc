#include "sim/random_trace.h"

#include <cmath>
#include <numbers>
#include <random>

#include "common/error.h"

namespace kvsim::sim {
namespace {

// Box-Muller on our own uniform draws, so values match across standard libraries.
class Normal {
 public:
  explicit Normal(uint64_t seed) : rng_(seed) {}
  float Next() {
    if (has_spare_) {
      has_spare_ = false;
      return spare_;
    }
    const double u1 = (static_cast<double>(rng_() >> 11) + 1.0) * 0x1.0p-53;
    const double u2 = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1));
    spare_ = static_cast<float>(r * std::sin(2.0 * std::numbers::pi * u2));
    has_spare_ = true;
    return static_cast<float>(r * std::cos(2.0 * std::numbers::pi * u2));
  }

 private:
  std::mt19937_64 rng_;
  float spare_ = 0.0f;
  bool has_spare_ = false;
};

void Fill(HeadTensor& tensor, Normal& normal, float scale) {
  for (size_t i = 0; i < tensor.size(); ++i) tensor.data()[i] = scale * normal.Next();
}

}  // namespace

traces::Trace RandomTrace(const models::ModelShape& shape,
                          int64_t prompt_len,
                          int64_t total_len,
                          uint64_t seed,
                          double logit_scale) {
  KVSIM_ASSERT(prompt_len >= 1 && total_len >= prompt_len, "bad lengths {} / {}", prompt_len,
               total_len);
  traces::TraceMeta meta;
  meta.shape = shape;
  meta.prompt_len = prompt_len;
  meta.total_len = total_len;
  meta.storage = traces::StorageType::kFloat32;
  meta.source = "random seed=" + std::to_string(seed);
  meta.token_ids.assign(static_cast<size_t>(total_len), 0);
  // q.k / sqrt(d) has std s^2 when q and k have per-element std s: s = sqrt(logit_scale).
  const auto qk_scale = static_cast<float>(std::sqrt(logit_scale));
  Normal normal(seed);
  std::vector<traces::LayerTensors> layers(static_cast<size_t>(shape.layers));
  for (traces::LayerTensors& layer : layers) {
    layer.queries = HeadTensor(shape.q_heads, total_len, shape.head_dim);
    layer.keys = HeadTensor(shape.kv_heads, total_len, shape.head_dim);
    layer.values = HeadTensor(shape.kv_heads, total_len, shape.head_dim);
    Fill(layer.queries, normal, qk_scale);
    Fill(layer.keys, normal, qk_scale);
    Fill(layer.values, normal, 1.0f);
  }
  traces::Trace trace(std::move(meta), std::move(layers));
  std::mt19937_64 gate_rng(seed ^ 0x6761746566616773ull);  // "gateflags"
  std::vector<uint8_t> flags(static_cast<size_t>(shape.layers) *
                             static_cast<size_t>(shape.kv_heads) * static_cast<size_t>(total_len));
  for (uint8_t& f : flags) f = (gate_rng() >> 62) != 0 ? 1 : 0;
  trace.set_gate_flags(std::move(flags));
  return trace;
}

}  // namespace kvsim::sim
