#pragma once
// SnapKV's selection (Li et al. 2024, card 4), shared by `snapkv` and `pyramidkv` (card 5: same
// scoring, different layer budgets).
//
// After prefill, per stream with budget B: observation window = the last w = min(window, B)
// prompt tokens (protected); every prefix token j < n - w is scored by the attention the window
// queries pay it, v_h[j] = sum_{i in window} A_h[i, j], pooled along positions (stride 1,
// padding kernel/2; avg counts the zero padding, max pads with -inf, card section 0 "Pooling"),
// then averaged over the stream's query heads (pool per head, then group mean, as kvpress does
// after SnapKV issue #22); the top B - w prefix tokens survive. Parameter
// `pool_order=mean-then-pool` averages the group's window sums first and pools the mean, as
// KVCache-Factory's kv_head path does (_grouped_window_attn_cache in pyramidkv_utils.py, group
// reduction 'mean' before pooling). With avg pooling the two orders rank alike (both linear);
// with max pooling they differ. In query-head GQA mode a stream has one head: no difference.
//
// Regime::kBounded decode steps (a kvsim extension: SnapKV itself never evicts during decode):
// score = sum of the group-mean attention each resident token received from the last `window`
// decode queries (as they observed it), no pooling; the last w positions are protected.
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "policies/eviction_policy.h"
#include "policies/policy_params.h"

namespace kvsim::policies {

struct SnapKvOptions {
  int64_t window = 32;
  int64_t kernel = 7;  // odd
  bool max_pool = true;
  bool mean_then_pool = false;  // pool_order: KVCache-Factory kv_head (true) or kvpress (false)
};

// Reads window / kernel / pooling / pool_order with the given defaults. Throws InputError for bad
// values.
SnapKvOptions ReadSnapKvOptions(const PolicyParams& params,
                                int64_t default_window,
                                int64_t default_kernel,
                                bool default_max_pool);

// Pools v (length m) with a 1-D window of `kernel` (odd) positions centred on each entry.
std::vector<double> Pool1d(std::span<const double> v, int64_t kernel, bool max_pool);

class SnapKvScoring {
 public:
  SnapKvScoring(const PolicySetup& setup, SnapKvOptions options);
  void OnStep(const StepView& step);
  void SelectVictims(const EvictionRequest& request, std::span<sim::EvictionDecision> decisions);
  int64_t StateBytes() const;

 private:
  void SelectAfterPrefill(const EvictionRequest& request,
                          const StreamView& stream,
                          sim::EvictionDecision* decision);

  SnapKvOptions options_;
  bool track_decode_;
  std::vector<std::vector<float>> window_sums_;  // [stream][position]
  // [stream][step % window]: (position, weight) pairs that step added to window_sums_.
  std::vector<std::vector<std::vector<std::pair<int64_t, float>>>> ring_;
  int64_t prompt_len_;
};

}  // namespace kvsim::policies
