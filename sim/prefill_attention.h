#pragma once
// Attention statistics of one layer's prompt that several policies (and every budget of a sweep)
// need: computed lazily, once, and shared. Everything here is what a real system computes during
// prefill (causal attention of prompt queries over prompt keys), so policies may use it.
//
// Thread-safety: every accessor may be called concurrently; each statistic is computed once
// (std::call_once) and then read-only. Lifetime: references stay valid while this object lives;
// it keeps a reference to `layer`, which must outlive it.
#include <Eigen/Dense>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "common/tensor.h"
#include "traces/trace.h"

namespace kvsim::sim {

class PrefillAttention {
 public:
  // `layer`: queries [Hq, T, d], keys [Hkv, T, d]; only positions [0, prompt_len) are read.
  PrefillAttention(const traces::LayerTensors& layer, int64_t prompt_len);
  PrefillAttention(const PrefillAttention&) = delete;
  PrefillAttention& operator=(const PrefillAttention&) = delete;

  int64_t prompt_len() const { return prompt_len_; }
  int num_q_heads() const { return num_q_heads_; }
  int group_size() const { return group_size_; }

  // H2O's prefill score of query head `q_head` (layer-local): S[j] = sum_{i=j}^{n-1} A[i, j], the
  // column sums of the causal prompt attention (H2O card, (b)). Length prompt_len. Computed in
  // row blocks with Eigen products, O(n^2 d) once per head.
  const Eigen::VectorXf& ColumnSums(int q_head) const;

  // Attention of the last `window` prompt queries of `q_head` over all prompt keys, causal inside
  // the window: row r is query n-window+r over keys [0, n); weights past the query are 0.
  // window x prompt_len. Cheap (O(window n d)); computed on each call, not cached.
  RowMatrixXf WindowAttention(int q_head, int64_t window) const;

  // Prompt keys / values of `kv_head`: prompt_len x d views, valid while the trace lives.
  ConstMatrixMap PromptKeys(int kv_head) const;
  ConstMatrixMap PromptValues(int kv_head) const;
  // Every prompt query of `q_head` (layer-local): prompt_len x d. ONLY for methods that process
  // the whole history offline before their prefill (EpiCache's patched prompt and question
  // embedding, card 1); every other policy reads queries through QueryHistory.
  ConstMatrixMap PromptQueries(int q_head) const;

 private:
  const traces::LayerTensors& layer_;
  int64_t prompt_len_;
  int num_q_heads_;
  int group_size_;
  mutable std::vector<Eigen::VectorXf> column_sums_;
  mutable std::unique_ptr<std::once_flag[]> column_once_;
};

}  // namespace kvsim::sim
