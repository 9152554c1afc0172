#pragma once
// Lookahead Q-Cache (LAQ, arXiv 2505.20334, card 6), stage 2: the selection of prompt tokens by a
// given set of observation queries, shared by the trace-only oracle variants (`laq-oracle`,
// `laqpp-oracle`, whose lookahead queries are the first real decode queries) and by a faithful
// LAQ that feeds pseudo queries from the model.
//
// Stage 2 (card 6 (b) step 4), per stream with budget C over the full prompt [0, n):
//   observation queries = the last w2 prompt queries (causal: query i sees keys j <= i) plus m'
//   lookahead queries, which sit after the prompt and see EVERY prompt key (card 6 (h): the
//   official code masks the last m'+w2 prompt keys as if the lookahead queries were prompt
//   positions; we use the correct mask);
//   v_h[j] = sum over observation rows of A_h[., j] for j < n - w2 (softmax over the keys each
//   query sees); pooled along positions (max pool, kernel 7 by default, as in SnapKV);
//   averaged over the stream's query heads (pool per head, then group mean, as SnapKV here);
//   keep the top C - w2 of the prefix plus the last w2 prompt tokens.
// LAQ is w2 = 0 (nothing protected), LAQ++ is w2 = 8.
#include <cstdint>
#include <span>
#include <vector>

#include "common/tensor.h"
#include "policies/eviction_policy.h"
#include "policies/policy_params.h"
#include "policies/snapkv_scoring.h"

namespace kvsim::policies {

struct LaqOptions {
  int64_t lookahead = 8;  // m: lookahead queries (card 6 (f) max_lookahead_size)
  int64_t window = 0;     // w2: protected prompt window whose queries also observe
  int64_t kernel = 7;     // odd
  bool max_pool = true;
};

// Reads lookahead / window / kernel / pooling with the given window default (kernel 7 and max
// pooling are hard-coded in the official code). Throws InputError for bad values.
LaqOptions ReadLaqOptions(const PolicyParams& params, int64_t default_window);

// Attention of `queries` (m x d, post-RoPE) over `prompt_keys` (n x d) with the correct causal
// mask: the query in row r sits at position query_positions[r] and sees keys j <= that position;
// a position >= n (lookahead and pseudo queries) sees every prompt key. Each row is a softmax
// over the keys it sees (weights past the query are 0). m x n.
RowMatrixXf ObservationAttention(ConstMatrixMap prompt_keys,
                                 ConstMatrixMap queries,
                                 std::span<const int64_t> query_positions);

// Stage-2 victims of one stream: head_rows[i] holds the observation attention (rows x n, rows
// as ObservationAttention returns them) of the stream's i-th query head; the last
// min(window, budget) prompt positions are protected; appends to `victims` the `count` prefix
// positions of lowest pooled group-mean score (ties: older first).
// REQUIRES count <= n - min(window, budget).
void SelectStage2Victims(std::span<const RowMatrixXf> head_rows,
                         const LaqOptions& options,
                         int64_t budget,
                         int64_t count,
                         std::vector<int64_t>* victims);

// The oracle variants: stage 2 after prefill with the first m real decode queries as the
// lookahead (read from the FutureView's full-cache attention: restricted to the prompt and
// renormalised, a full-cache row is exactly the softmax of that query over the prompt keys).
// Regime::kBounded decode steps (a kvsim extension; LAQ never evicts during decode): SnapKV's
// decode rule (policies/snapkv_scoring.h) with an observation window of w2 + m queries, the
// official all_query = stage2_window + lookahead (card 6 (f)).
class LaqOracleScoring {
 public:
  LaqOracleScoring(const PolicySetup& setup, LaqOptions options);
  void AttachFuture(const FutureView& future) { future_ = &future; }
  void OnStep(const StepView& step) { decode_.OnStep(step); }
  void SelectVictims(const EvictionRequest& request, std::span<sim::EvictionDecision> decisions);
  int64_t StateBytes() const { return decode_.StateBytes(); }

 private:
  PolicySetup setup_;
  LaqOptions options_;
  SnapKvScoring decode_;
  const FutureView* future_ = nullptr;
};

}  // namespace kvsim::policies
