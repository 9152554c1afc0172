#pragma once
// MPCache (Zeng et al., NeurIPS 2025; memory-and-paging.md card 4) math, shared by the `mpcache`
// policy and its tests: the look-once static scores and the hierarchical query-aware selection.
#include <Eigen/Dense>
#include <cstdint>
#include <vector>

#include "common/tensor.h"
#include "policies/eviction_policy.h"

namespace kvsim::policies {

// Static stage (card 4 (b), ~L203-230): with Q_tail = the last 20 % of the prompt queries (10 %
// above 24000 prompt tokens), P_h = softmax(Q_tail K^T) per query head over ALL prompt keys (no
// 1/sqrt(d) and no causal mask, as in the code), Pbar = the mean over the layer's query heads, and
// score[j] = max_i Pbar[i, j]. One score vector per layer (one index set shared by all heads).
// Length prompt_len.
Eigen::VectorXd MpCacheStaticScores(const QueryHistory& queries,
                                    const sim::PrefillAttention& prefill,
                                    const models::ModelShape& shape);

// Dynamic stage knobs; defaults from zwxandy/MPCache (card 4 (f)).
struct MpCacheSelectParams {
  double alpha = 0.6;   // weight of the per-channel max in the linear bound
  int cluster1 = 32;    // s1: coarse cluster tokens
  int cluster2 = 16;    // s2: fine cluster tokens (divides cluster1)
  double ratio1 = 0.5;  // fraction of coarse clusters kept
  double ratio2 = 0.2;  // fraction of ALL fine clusters kept (only inside coarse winners)
};

// Query-aware selection (card 4 (b), ~L95-140) over `keys` (n x d, position order: contiguous
// clusters are contiguous positions). sim(C) = sum_c q_c (alpha max_{j in C} k_{j,c} + (1 - alpha)
// min_{j in C} k_{j,c}). Keeps the top floor(ratio1 * #coarse) coarse clusters plus the first
// (sink) and last ones, then, inside those, the top floor(ratio2 * #fine) fine clusters plus the
// first and last fine clusters. Returns the selected row indices, increasing. For GQA pass the sum
// of the group's queries: sim is linear in q, so this equals the sum of per-head sims.
std::vector<int64_t> MpCacheSelect(const Eigen::Ref<const RowMatrixXf>& keys,
                                   const Eigen::VectorXf& query,
                                   const MpCacheSelectParams& params);

}  // namespace kvsim::policies
