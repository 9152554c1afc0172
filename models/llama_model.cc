#include "models/llama_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>

#include "common/error.h"

namespace kvsim::models {
namespace {

// Row-wise RMSNorm (Zhang & Sennrich 2019) as llama2.c rmsnorm(): x / sqrt(mean(x^2) + eps) * w.
RowMatrixXf RmsNorm(const RowMatrixXf& x, const Eigen::VectorXf& weight, float eps) {
  RowMatrixXf out(x.rows(), x.cols());
  const float inv_cols = 1.0f / static_cast<float>(x.cols());
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const float scale = 1.0f / std::sqrt(x.row(r).squaredNorm() * inv_cols + eps);
    out.row(r) = (x.row(r) * scale).cwiseProduct(weight.transpose());
  }
  return out;
}

void CheckMatrix(const std::string& context,
                 const std::string& name,
                 const RowMatrixXf& m,
                 Eigen::Index rows,
                 Eigen::Index cols) {
  if (m.rows() != rows || m.cols() != cols) {
    ThrowInputError("{}: tensor '{}' has shape [{}, {}], expected [{}, {}]", context, name,
                    m.rows(), m.cols(), rows, cols);
  }
}

void CheckVector(const std::string& context,
                 const std::string& name,
                 const Eigen::VectorXf& v,
                 Eigen::Index size) {
  if (v.size() != size) {
    ThrowInputError("{}: tensor '{}' has {} elements, expected {}", context, name, v.size(), size);
  }
}

}  // namespace

void LlamaConfig::Validate(const std::string& context) const {
  auto positive = [&](int value, const char* field) {
    if (value <= 0)
      ThrowInputError("{}: model field '{}' is {}, expected > 0", context, field, value);
  };
  positive(dim, "dim");
  positive(hidden_dim, "hidden_dim");
  positive(layers, "layers");
  positive(q_heads, "q_heads");
  positive(kv_heads, "kv_heads");
  positive(vocab_size, "vocab_size");
  positive(context_length, "context_length");
  if (dim % q_heads != 0 || head_dim() % 2 != 0) {
    ThrowInputError("{}: dim {} does not split into {} heads of even size", context, dim, q_heads);
  }
  if (q_heads % kv_heads != 0) {
    ThrowInputError("{}: q_heads {} is not a multiple of kv_heads {}", context, q_heads, kv_heads);
  }
  if (!(rope_theta > 0.0f) || !(rms_eps > 0.0f)) {
    ThrowInputError("{}: rope_theta {} and rms_eps {} must be > 0", context, rope_theta, rms_eps);
  }
}

ModelShape LlamaConfig::Shape(const std::string& name) const {
  return ModelShape{name, layers, q_heads, kv_heads, head_dim(), rope_theta, 2};
}

void LlamaWeights::Validate(const std::string& context) const {
  config.Validate(context);
  const LlamaConfig& c = config;
  const Eigen::Index dim = c.dim;
  const Eigen::Index q_dim = static_cast<Eigen::Index>(c.q_heads) * c.head_dim();
  CheckMatrix(context, "token_embedding", token_embedding, c.vocab_size, dim);
  if (static_cast<int>(layers.size()) != c.layers) {
    ThrowInputError("{}: {} layers of weights, expected {}", context, layers.size(), c.layers);
  }
  for (int l = 0; l < c.layers; ++l) {
    const LlamaLayerWeights& w = layers[static_cast<size_t>(l)];
    const std::string p = "layer " + std::to_string(l) + " ";
    CheckVector(context, p + "attn_norm", w.attn_norm, dim);
    CheckMatrix(context, p + "wq", w.wq, q_dim, dim);
    CheckMatrix(context, p + "wk", w.wk, c.kv_dim(), dim);
    CheckMatrix(context, p + "wv", w.wv, c.kv_dim(), dim);
    CheckMatrix(context, p + "wo", w.wo, dim, q_dim);
    CheckVector(context, p + "ffn_norm", w.ffn_norm, dim);
    CheckMatrix(context, p + "w1", w.w1, c.hidden_dim, dim);
    CheckMatrix(context, p + "w2", w.w2, dim, c.hidden_dim);
    CheckMatrix(context, p + "w3", w.w3, c.hidden_dim, dim);
  }
  CheckVector(context, "final_norm", final_norm, dim);
  if (classifier.size() != 0) CheckMatrix(context, "classifier", classifier, c.vocab_size, dim);
  if (!rope_freq_factors.empty() &&
      static_cast<int>(rope_freq_factors.size()) != c.head_dim() / 2) {
    ThrowInputError("{}: rope_freq_factors has {} entries, expected head_dim/2 = {}", context,
                    rope_freq_factors.size(), c.head_dim() / 2);
  }
}

LlamaWeights RandomLlamaWeights(const LlamaConfig& config, uint64_t seed) {
  config.Validate("RandomLlamaWeights");
  std::mt19937_64 rng(seed);
  // Uniform on [-a, a] with a = 0.02 * sqrt(3) has standard deviation 0.02; own math so the
  // weights are the same with every standard library.
  const float a = 0.02f * std::sqrt(3.0f);
  auto fill = [&](Eigen::Index rows, Eigen::Index cols) {
    RowMatrixXf m(rows, cols);
    float* p = m.data();
    for (Eigen::Index i = 0; i < m.size(); ++i) {
      const float u = static_cast<float>(rng() >> 40) * (1.0f / 16777216.0f);  // [0, 1)
      p[i] = (2.0f * u - 1.0f) * a;
    }
    return m;
  };
  const Eigen::Index dim = config.dim;
  const Eigen::Index q_dim = static_cast<Eigen::Index>(config.q_heads) * config.head_dim();
  LlamaWeights w;
  w.config = config;
  w.token_embedding = fill(config.vocab_size, dim);
  for (int l = 0; l < config.layers; ++l) {
    LlamaLayerWeights layer;
    layer.attn_norm = Eigen::VectorXf::Ones(dim);
    layer.wq = fill(q_dim, dim);
    layer.wk = fill(config.kv_dim(), dim);
    layer.wv = fill(config.kv_dim(), dim);
    layer.wo = fill(dim, q_dim);
    layer.ffn_norm = Eigen::VectorXf::Ones(dim);
    layer.w1 = fill(config.hidden_dim, dim);
    layer.w2 = fill(dim, config.hidden_dim);
    layer.w3 = fill(config.hidden_dim, dim);
    w.layers.push_back(std::move(layer));
  }
  w.final_norm = Eigen::VectorXf::Ones(dim);
  return w;
}

KvState::KvState(int layers, int kv_heads, int head_dim)
    : layers_(layers),
      kv_heads_(kv_heads),
      head_dim_(head_dim),
      slots_(static_cast<size_t>(layers) * static_cast<size_t>(kv_heads)) {
  KVSIM_ASSERT(layers > 0 && kv_heads > 0 && head_dim > 0, "empty KvState geometry");
}

const KvState::Slot& KvState::slot(int layer, int kv_head) const {
  KVSIM_ASSERT(layer >= 0 && layer < layers_ && kv_head >= 0 && kv_head < kv_heads_,
               "KvState slot ({}, {}) out of range ({}, {})", layer, kv_head, layers_, kv_heads_);
  return slots_[static_cast<size_t>(layer) * static_cast<size_t>(kv_heads_) +
                static_cast<size_t>(kv_head)];
}

KvState::Slot& KvState::slot(int layer, int kv_head) {
  return const_cast<Slot&>(static_cast<const KvState*>(this)->slot(layer, kv_head));
}

int64_t KvState::size(int layer, int kv_head) const {
  return static_cast<int64_t>(slot(layer, kv_head).positions.size());
}

std::span<const int64_t> KvState::positions(int layer, int kv_head) const {
  return slot(layer, kv_head).positions;
}

ConstMatrixMap KvState::keys(int layer, int kv_head) const {
  const Slot& s = slot(layer, kv_head);
  return ConstMatrixMap(s.keys.data(), static_cast<Eigen::Index>(s.positions.size()), head_dim_);
}

ConstMatrixMap KvState::values(int layer, int kv_head) const {
  const Slot& s = slot(layer, kv_head);
  return ConstMatrixMap(s.values.data(), static_cast<Eigen::Index>(s.positions.size()), head_dim_);
}

int64_t KvState::total_entries() const {
  int64_t total = 0;
  for (const Slot& s : slots_) total += static_cast<int64_t>(s.positions.size());
  return total;
}

void KvState::Drop(int layer, int kv_head, std::span<const int64_t> drop) {
  Slot& s = slot(layer, kv_head);
  std::vector<int64_t> sorted(drop.begin(), drop.end());
  std::sort(sorted.begin(), sorted.end());
  const size_t d = static_cast<size_t>(head_dim_);
  size_t out = 0;
  for (size_t i = 0; i < s.positions.size(); ++i) {
    if (std::binary_search(sorted.begin(), sorted.end(), s.positions[i])) continue;
    if (out != i) {
      s.positions[out] = s.positions[i];
      std::copy_n(s.keys.begin() + static_cast<std::ptrdiff_t>(i * d), d,
                  s.keys.begin() + static_cast<std::ptrdiff_t>(out * d));
      std::copy_n(s.values.begin() + static_cast<std::ptrdiff_t>(i * d), d,
                  s.values.begin() + static_cast<std::ptrdiff_t>(out * d));
    }
    ++out;
  }
  s.positions.resize(out);
  s.keys.resize(out * d);
  s.values.resize(out * d);
}

void KvState::Overwrite(
    int layer, int kv_head, int64_t position, const float* key, const float* value) {
  Slot& s = slot(layer, kv_head);
  const auto it = std::lower_bound(s.positions.begin(), s.positions.end(), position);
  KVSIM_ASSERT(it != s.positions.end() && *it == position,
               "overwrite of position {} which is not resident in layer {} head {}", position,
               layer, kv_head);
  const auto d = static_cast<size_t>(head_dim_);
  const auto row = static_cast<size_t>(it - s.positions.begin()) * d;
  std::copy_n(key, d, s.keys.begin() + static_cast<std::ptrdiff_t>(row));
  std::copy_n(value, d, s.values.begin() + static_cast<std::ptrdiff_t>(row));
}

void KvState::Append(
    int layer, int kv_head, int64_t position, const float* key, const float* value) {
  Slot& s = slot(layer, kv_head);
  KVSIM_ASSERT(s.positions.empty() || position > s.positions.back(),
               "KvState::Append position {} after {}", position, s.positions.back());
  s.positions.push_back(position);
  s.keys.insert(s.keys.end(), key, key + head_dim_);
  s.values.insert(s.values.end(), value, value + head_dim_);
  next_position_ = std::max(next_position_, position + 1);
}

void KvState::Clear() {
  for (Slot& s : slots_) s = Slot{};
  next_position_ = 0;
}

LlamaModel::LlamaModel(LlamaWeights weights) : weights_(std::move(weights)) {
  weights_.Validate("LlamaModel");
  const int hd = weights_.config.head_dim();
  inv_freq_.resize(static_cast<size_t>(hd / 2));
  for (int j = 0; j < hd / 2; ++j) {
    // llama2.c run.c: freq = 1 / theta^((i mod head_size) / head_size) for the even index i.
    float f = 1.0f / std::pow(weights_.config.rope_theta,
                              static_cast<float>(2 * j) / static_cast<float>(hd));
    if (!weights_.rope_freq_factors.empty())
      f /= weights_.rope_freq_factors[static_cast<size_t>(j)];
    inv_freq_[static_cast<size_t>(j)] = f;
  }
}

KvState LlamaModel::NewState() const {
  const LlamaConfig& c = weights_.config;
  return KvState(c.layers, c.kv_heads, c.head_dim());
}

void LlamaModel::ApplyRope(RowMatrixXf& x, std::span<const int64_t> positions) const {
  const int hd = weights_.config.head_dim();
  const Eigen::Index heads = x.cols() / hd;
  const size_t half = inv_freq_.size();
  std::vector<float> cos_v(half);
  std::vector<float> sin_v(half);
  for (Eigen::Index r = 0; r < x.rows(); ++r) {
    const float pos = static_cast<float>(positions[static_cast<size_t>(r)]);
    for (size_t j = 0; j < half; ++j) {
      const float angle = pos * inv_freq_[j];
      cos_v[j] = std::cos(angle);
      sin_v[j] = std::sin(angle);
    }
    float* row = x.row(r).data();
    for (Eigen::Index h = 0; h < heads; ++h) {
      float* v = row + h * hd;
      for (size_t j = 0; j < half; ++j) {
        const float v0 = v[2 * j];
        const float v1 = v[2 * j + 1];
        v[2 * j] = v0 * cos_v[j] - v1 * sin_v[j];
        v[2 * j + 1] = v0 * sin_v[j] + v1 * cos_v[j];
      }
    }
  }
}

RowMatrixXf LlamaModel::Forward(std::span<const int32_t> tokens,
                                KvState& state,
                                ForwardObserver* observer,
                                LogitsMode mode) const {
  std::vector<int64_t> positions(tokens.size());
  for (size_t i = 0; i < positions.size(); ++i) {
    positions[i] = state.next_position() + static_cast<int64_t>(i);
  }
  return Forward(tokens, positions, state, observer, mode);
}

RowMatrixXf LlamaModel::Forward(std::span<const int32_t> tokens,
                                std::span<const int64_t> positions,
                                KvState& state,
                                ForwardObserver* observer,
                                LogitsMode mode) const {
  const LlamaConfig& c = weights_.config;
  const Eigen::Index n = static_cast<Eigen::Index>(tokens.size());
  if (n == 0) ThrowInputError("LlamaModel::Forward: empty token block");
  if (tokens.size() != positions.size()) {
    ThrowInputError("LlamaModel::Forward: {} tokens but {} positions", tokens.size(),
                    positions.size());
  }
  KVSIM_ASSERT(state.layers() == c.layers && state.kv_heads() == c.kv_heads &&
                   state.head_dim() == c.head_dim(),
               "KvState geometry does not match the model");
  for (size_t i = 0; i < positions.size(); ++i) {
    const int64_t prev = i == 0 ? state.next_position() - 1 : positions[i - 1];
    if (positions[i] <= prev) {
      ThrowInputError("LlamaModel::Forward: position {} follows {}, expected increasing positions",
                      positions[i], prev);
    }
    if (positions[i] >= c.context_length) {
      ThrowInputError("LlamaModel::Forward: position {} is beyond the model's context length {}",
                      positions[i], c.context_length);
    }
    if (tokens[i] < 0 || tokens[i] >= c.vocab_size) {
      ThrowInputError("LlamaModel::Forward: token id {} out of range [0, {})", tokens[i],
                      c.vocab_size);
    }
  }

  const int hd = c.head_dim();
  const int group = c.q_heads / c.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  RowMatrixXf x(n, c.dim);
  for (Eigen::Index i = 0; i < n; ++i) {
    x.row(i) = weights_.token_embedding.row(tokens[static_cast<size_t>(i)]);
  }

  RowMatrixXf q_pre;
  RowMatrixXf k_pre;
  RowMatrixXf attn_out(n, static_cast<Eigen::Index>(c.q_heads) * hd);
  RowMatrixXf scores;
  for (int l = 0; l < c.layers; ++l) {
    const LlamaLayerWeights& w = weights_.layers[static_cast<size_t>(l)];
    RowMatrixXf xb = RmsNorm(x, w.attn_norm, c.rms_eps);
    RowMatrixXf q = xb * w.wq.transpose();
    RowMatrixXf k = xb * w.wk.transpose();
    RowMatrixXf v = xb * w.wv.transpose();
    if (observer != nullptr) {
      q_pre = q;
      k_pre = k;
    }
    ApplyRope(q, positions);
    ApplyRope(k, positions);
    if (observer != nullptr) {
      observer->OnLayer(LayerActivations{l, positions, tokens, q, k, v, q_pre, k_pre});
    }
    for (int h = 0; h < c.kv_heads; ++h) {
      for (Eigen::Index i = 0; i < n; ++i) {
        state.Append(l, h, positions[static_cast<size_t>(i)], k.row(i).data() + h * hd,
                     v.row(i).data() + h * hd);
      }
    }

    // Attention over the resident entries of each KV head; causal by position value, so a
    // block (prefill) and token-by-token decoding give the same result.
    for (int h = 0; h < c.kv_heads; ++h) {
      const ConstMatrixMap keys = state.keys(l, h);
      const ConstMatrixMap values = state.values(l, h);
      const std::span<const int64_t> kpos = state.positions(l, h);
      const std::span<const uint8_t> mask =
          observer != nullptr ? observer->AttendMask(l, h) : std::span<const uint8_t>();
      KVSIM_ASSERT(mask.empty() || mask.size() == kpos.size(),
                   "attend mask of {} flags for {} resident entries", mask.size(), kpos.size());
      for (int g = 0; g < group; ++g) {
        const int qh = h * group + g;
        scores.noalias() = q.middleCols(static_cast<Eigen::Index>(qh) * hd, hd) * keys.transpose();
        for (Eigen::Index i = 0; i < n; ++i) {
          const int64_t qpos = positions[static_cast<size_t>(i)];
          float* row = scores.row(i).data();
          float max_score = -std::numeric_limits<float>::infinity();
          for (Eigen::Index j = 0; j < scores.cols(); ++j) {
            if (kpos[static_cast<size_t>(j)] > qpos ||
                (!mask.empty() && mask[static_cast<size_t>(j)] == 0)) {
              row[j] = -std::numeric_limits<float>::infinity();
            } else {
              row[j] *= scale;
              max_score = std::max(max_score, row[j]);
            }
          }
          float sum = 0.0f;
          for (Eigen::Index j = 0; j < scores.cols(); ++j) {
            row[j] = std::exp(row[j] - max_score);
            sum += row[j];
          }
          const float inv = 1.0f / sum;
          for (Eigen::Index j = 0; j < scores.cols(); ++j) row[j] *= inv;
        }
        attn_out.middleCols(static_cast<Eigen::Index>(qh) * hd, hd).noalias() = scores * values;
      }
    }
    x.noalias() += attn_out * w.wo.transpose();

    xb = RmsNorm(x, w.ffn_norm, c.rms_eps);
    RowMatrixXf gate = xb * w.w1.transpose();
    const RowMatrixXf up = xb * w.w3.transpose();
    // SwiGLU (Shazeer 2020): silu(x W1) * (x W3).
    gate = gate.array() / (1.0f + (-gate.array()).exp());
    gate.array() *= up.array();
    x.noalias() += gate * w.w2.transpose();
  }

  const RowMatrixXf& classifier =
      weights_.classifier.size() != 0 ? weights_.classifier : weights_.token_embedding;
  if (mode == LogitsMode::kLastOnly) {
    const RowMatrixXf last = RmsNorm(x.bottomRows(1), weights_.final_norm, c.rms_eps);
    return last * classifier.transpose();
  }
  return RmsNorm(x, weights_.final_norm, c.rms_eps) * classifier.transpose();
}

}  // namespace kvsim::models
