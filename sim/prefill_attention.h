#pragma once
// Attention statistics of one layer's prompt that several policies (and every budget of a sweep)
// need: computed lazily, once, and shared. Everything here is what a real system computes during
// prefill (causal attention of prompt queries over prompt keys), so policies may use it.
//
// Thread-safety: every accessor may be called concurrently; each statistic is computed once
// (tbb::collaborative_call_once: threads that ask while it runs help compute it rather than
// wait idle, which matters when every cell of a sweep asks at once) and then read-only.
// SetColumnSums may race with ColumnSums safely (whichever runs first provides the sums; a later
// SetColumnSums is an assertion failure). Lifetime: references stay valid while this object lives;
// it keeps a reference to `layer`, which must outlive it.
#include <tbb/collaborative_call_once.h>

#include <Eigen/Dense>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "traces/trace.h"

namespace kvsim::sim {

// Column sums of the causal softmax attention of `queries` over `keys` (both n x d, the same n):
// S[j] = sum_{i=j}^{n-1} softmax_{k<=i}(q_i . k_k / sqrt(d))[j]. Blocked and fused: logits come
// from GEMMs on (row block x column tile) pieces that stay in cache, the fully masked upper
// triangle is never computed, and each row block's column sums are one weighted reduction over
// its tiles, added to a double accumulator. Serial and deterministic. O(n^2 d) time, O(128 n)
// extra memory.
Eigen::VectorXf CausalColumnSums(const ConstMatrixMap& queries, const ConstMatrixMap& keys);

// CausalColumnSums of every query head of `layer` over its KV head's keys, prompt positions
// [0, prompt_len) only; one vector per query head. Parallel over query heads (TBB, isolated so
// a caller inside a TBB task cannot pick up unrelated work while waiting); bit-identical for any
// thread count, since each head is computed serially.
std::vector<Eigen::VectorXf> ComputeColumnSums(const traces::LayerTensors& layer,
                                               int64_t prompt_len);

class PrefillAttention {
 public:
  // `layer`: queries [Hq, T, d], keys [Hkv, T, d]; only positions [0, prompt_len) are read.
  PrefillAttention(const traces::LayerTensors& layer, int64_t prompt_len);
  // As above, with the column sums already known (a prompt-stats sidecar, traces/prompt_stats.h):
  // ColumnSums returns them instead of computing. REQUIRES column_sums.size() == Hq and every
  // vector of length prompt_len (asserted; the loader validates what it read from disk).
  PrefillAttention(const traces::LayerTensors& layer,
                   int64_t prompt_len,
                   std::vector<Eigen::VectorXf> column_sums);
  PrefillAttention(const PrefillAttention&) = delete;
  PrefillAttention& operator=(const PrefillAttention&) = delete;

  int64_t prompt_len() const { return prompt_len_; }
  int num_q_heads() const { return num_q_heads_; }
  int group_size() const { return group_size_; }

  // H2O's prefill score of query head `q_head` (layer-local): S[j] = sum_{i=j}^{n-1} A[i, j], the
  // column sums of the causal prompt attention (H2O card, (b)). Length prompt_len. The first call
  // computes every head of the layer at once (ComputeColumnSums, O(Hq n^2 d)) unless they were
  // given; later calls only read.
  const Eigen::VectorXf& ColumnSums(int q_head) const;

  // Provides the column sums instead of computing them, same contract as the constructor above.
  // Call before sharing the object; asserts if ColumnSums already computed or was given them.
  void SetColumnSums(std::vector<Eigen::VectorXf> column_sums);
  // True once the column sums were computed or given (so a sweep can keep them for a later pass
  // over the same layer without forcing their computation).
  bool has_column_sums() const { return has_column_sums_.load(); }

  // A statistic of the prompt that one policy needs in every cell of a sweep (MPCache's static
  // scores): computed by the first caller for `key` (collaboratively, as ColumnSums), then shared
  // read-only for as long as this object lives. `key` names the statistic and every parameter it
  // depends on; `compute` must be a pure function of this layer's prompt, so which cell computes
  // it does not matter.
  const Eigen::VectorXd& SharedStatistic(const std::string& key,
                                         const std::function<Eigen::VectorXd()>& compute) const;

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
  // Filled once, by the first ColumnSums (computed) or SetColumnSums (given).
  mutable tbb::collaborative_once_flag column_once_;
  mutable std::atomic<bool> has_column_sums_ = false;
  mutable std::vector<Eigen::VectorXf> column_sums_;
  struct Statistic {
    tbb::collaborative_once_flag once;
    Eigen::VectorXd value;
  };
  mutable std::mutex statistics_mutex_;  // guards the map, not the values
  mutable std::map<std::string, std::unique_ptr<Statistic>> statistics_;
};

}  // namespace kvsim::sim
