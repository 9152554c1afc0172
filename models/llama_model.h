#pragma once
// A CPU reference Llama transformer (float32, Eigen): RMSNorm, rotary embedding on adjacent
// pairs (x[2i], x[2i+1]) as llama2.c run.c and llama.cpp's LLAMA_ROPE_TYPE_NORM apply it,
// grouped-query attention, SwiGLU feed-forward, tied or separate classifier.
//
// The KV cache is a caller-owned KvState so that code outside the model can evict from it:
// per (layer, KV head) it holds a set of resident positions with their keys and values, and
// attention is computed over the resident entries only. Forward() runs a block of tokens
// (a prompt = matrix-matrix prefill, or one decode token) and reports every layer's q/k/v to an
// optional observer, the single path shared by trace capture and closed-loop evaluation.
#include <Eigen/Dense>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "models/model_shape.h"

namespace kvsim::models {

struct LlamaConfig {
  int dim = 0;         // residual stream width
  int hidden_dim = 0;  // SwiGLU inner width
  int layers = 0;
  int q_heads = 0;
  int kv_heads = 0;
  int vocab_size = 0;
  int context_length = 0;  // longest sequence (positions) the model accepts
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;  // llama2.c run.c and Llama 2 use 1e-5

  int head_dim() const { return dim / q_heads; }
  int kv_dim() const { return kv_heads * head_dim(); }
  // Throws InputError naming `context` unless every extent is positive, dim divides into
  // q_heads heads of even size and q_heads is a multiple of kv_heads.
  void Validate(const std::string& context) const;
  // The attention geometry for the simulator (kv_bytes_per_element 2: an fp16 serving cache).
  ModelShape Shape(const std::string& name) const;
};

// One transformer block. Matrices are [out, in] row-major (llama2.c and GGUF order), so
// y = x * W^T for a row of activations x.
struct LlamaLayerWeights {
  Eigen::VectorXf attn_norm;  // [dim]
  RowMatrixXf wq;             // [q_heads*head_dim, dim]
  RowMatrixXf wk;             // [kv_dim, dim]
  RowMatrixXf wv;             // [kv_dim, dim]
  RowMatrixXf wo;             // [dim, q_heads*head_dim]
  Eigen::VectorXf ffn_norm;   // [dim]
  RowMatrixXf w1;             // gate [hidden, dim]
  RowMatrixXf w2;             // down [dim, hidden]
  RowMatrixXf w3;             // up [hidden, dim]
};

struct LlamaWeights {
  LlamaConfig config;
  RowMatrixXf token_embedding;  // [vocab, dim]
  std::vector<LlamaLayerWeights> layers;
  Eigen::VectorXf final_norm;  // [dim]
  RowMatrixXf classifier;      // [vocab, dim]; empty = tied to token_embedding
  // Llama 3.1 RoPE frequency divisors (GGUF rope_freqs.weight), [head_dim/2]; empty = none.
  std::vector<float> rope_freq_factors;

  // Throws InputError naming `context` and the tensor if any extent disagrees with config.
  void Validate(const std::string& context) const;
};

// Random weights of a given shape (normal, std 0.02 as GPT-2/Llama initialisation) for tests
// and benchmarks. Deterministic in `seed`. Norm weights are 1.
LlamaWeights RandomLlamaWeights(const LlamaConfig& config, uint64_t seed);

// A caller-owned KV cache. Per (layer, KV head): resident entries in insertion order, each a
// position with its post-RoPE key and value. Copying a KvState is a deep snapshot: run pseudo
// decode steps on a copy and discard it without touching the original.
class KvState {
 public:
  KvState() = default;
  KvState(int layers, int kv_heads, int head_dim);

  int layers() const { return layers_; }
  int kv_heads() const { return kv_heads_; }
  int head_dim() const { return head_dim_; }

  // Resident entries of one (layer, KV head).
  int64_t size(int layer, int kv_head) const;
  std::span<const int64_t> positions(int layer, int kv_head) const;
  // size x head_dim views, row i = positions()[i]. Valid until the next Append/Drop/Clear.
  ConstMatrixMap keys(int layer, int kv_head) const;
  ConstMatrixMap values(int layer, int kv_head) const;
  // Total resident entries over all (layer, KV head).
  int64_t total_entries() const;
  // One past the largest position ever appended (0 for an empty state): where the next token
  // goes. Dropping entries does not lower it.
  int64_t next_position() const { return next_position_; }

  // Removes the listed positions of one (layer, KV head); positions not resident are ignored.
  // Keeps the survivors' order.
  void Drop(int layer, int kv_head, std::span<const int64_t> positions);
  // Appends one entry. Precondition: position >= next_position() of this (layer, head)'s last
  // append (positions increase), key/value have head_dim floats.
  void Append(int layer, int kv_head, int64_t position, const float* key, const float* value);
  // Replaces the K/V of a resident entry (a policy's merge or quantization, attended as stored).
  // KVSIM_ASSERT: `position` is resident in (layer, kv_head).
  void Overwrite(int layer, int kv_head, int64_t position, const float* key, const float* value);
  void Clear();

 private:
  struct Slot {
    std::vector<int64_t> positions;
    std::vector<float> keys;    // positions.size() x head_dim, row-major
    std::vector<float> values;  // same
  };
  const Slot& slot(int layer, int kv_head) const;
  Slot& slot(int layer, int kv_head);

  int layers_ = 0;
  int kv_heads_ = 0;
  int head_dim_ = 0;
  int64_t next_position_ = 0;
  std::vector<Slot> slots_;  // layer-major
};

// What one layer computed for a block of n positions, reported before attention uses it. Rows
// are positions; columns are head-major (head h occupies columns [h*head_dim, (h+1)*head_dim)).
// The references are valid only during the callback.
struct LayerActivations {
  int layer = 0;
  std::span<const int64_t> positions;  // n
  std::span<const int32_t> tokens;     // n
  const RowMatrixXf& q;                // n x q_heads*head_dim, post-RoPE
  const RowMatrixXf& k;                // n x kv_dim, post-RoPE (what the cache stores)
  const RowMatrixXf& v;                // n x kv_dim
  const RowMatrixXf& q_pre_rope;       // n x q_heads*head_dim
  const RowMatrixXf& k_pre_rope;       // n x kv_dim
};

// Receives every layer's activations of a Forward() call, in layer order, on the calling thread.
class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  virtual void OnLayer(const LayerActivations& activations) = 0;
  // Sparse attention (a policy's mask, e.g. MPCache's dynamic stage): asked after OnLayer and
  // after the block's entries were appended. Empty: every resident entry may be attended.
  // Otherwise one flag per resident entry of (layer, kv_head), in KvState::positions() order;
  // 0 entries are left out of every query head's softmax of this Forward (at least one must be
  // 1).
  virtual std::span<const uint8_t> AttendMask(int /*layer*/, int /*kv_head*/) { return {}; }
};

enum class LogitsMode { kLastOnly, kAll };

class LlamaModel {
 public:
  explicit LlamaModel(LlamaWeights weights);

  const LlamaConfig& config() const { return weights_.config; }
  const LlamaWeights& weights() const { return weights_; }
  // An empty cache sized for this model.
  KvState NewState() const;

  // Runs `tokens` at `positions` (same length n >= 1, strictly increasing, the first >=
  // state.next_position(), all < context_length; violations are InputError). Appends their keys
  // and values to `state` for every (layer, KV head), then each query attends to the resident
  // entries of its KV head whose position is <= its own. Returns logits: one row for the last
  // position (kLastOnly) or n rows (kAll), vocab columns. Thread-safe for distinct states.
  RowMatrixXf Forward(std::span<const int32_t> tokens,
                      std::span<const int64_t> positions,
                      KvState& state,
                      ForwardObserver* observer = nullptr,
                      LogitsMode mode = LogitsMode::kLastOnly) const;

  // Forward() at consecutive positions starting at state.next_position().
  RowMatrixXf Forward(std::span<const int32_t> tokens,
                      KvState& state,
                      ForwardObserver* observer = nullptr,
                      LogitsMode mode = LogitsMode::kLastOnly) const;

 private:
  // Rotates adjacent pairs of every head of `x` (n x heads*head_dim) in place.
  void ApplyRope(RowMatrixXf& x, std::span<const int64_t> positions) const;

  LlamaWeights weights_;
  std::vector<float> inv_freq_;  // [head_dim/2]: theta^(-2i/head_dim) / freq_factor[i]
};

}  // namespace kvsim::models
