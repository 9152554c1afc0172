#pragma once
// Token importance recurrence (LazyEviction, arXiv 2506.15969, card 10): from a layer's
// full-cache attention, at which decode steps each (query head, position) is "important", the
// intervals between its consecutive important steps, how many tokens come back after a long
// silence, and, for a policy and budget, how many of the tokens it evicted would have been
// important again (the harm LazyEviction targets). `kvsim recurrence` writes recurrence.csv and
// recurrence_summary.csv (analysis/RESULTS_FORMAT.md).
//
// Units: steps are decode positions t in [prompt_len, T); an interval is the difference of two
// consecutive important steps of one (query head, position), so interval 1 = important at two
// consecutive steps and interval - 1 unimportant steps lie between. Only decode steps count
// (prompt queries are one prefill block).
#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/metrics.h"
#include "policies/policy_params.h"
#include "sim/budget.h"
#include "traces/trace.h"

namespace kvsim::analysis {

// When a position is important for one query head at one step, from that step's full-cache
// weights over [0, t]:
//   topk:K    among the K largest weights (ties: lower position first, as top-k recall);
//   mass:P    in the smallest set of largest weights whose sum reaches P (nucleus), P in (0, 1];
//   weight:A  weight >= A (absolute, as LazyEviction's alpha = 1e-4).
struct ImportanceRule {
  enum class Kind { kTopRank, kMass, kWeight };
  Kind kind = Kind::kTopRank;
  double value = 8;
  std::string text = "topk:8";  // as given; the summary's `importance` column

  // Throws InputError naming `context`, the text and the syntax.
  static ImportanceRule Parse(std::string_view text, std::string_view context);
};

// Important positions of one weight row, increasing. Deterministic.
std::vector<int64_t> ImportantPositions(std::span<const float> weights, const ImportanceRule& rule);

// The important decode steps of every (query head, position) of one layer.
class LayerImportance {
 public:
  LayerImportance(const FullCacheAttention& full, const ImportanceRule& rule);
  int num_q_heads() const { return num_q_heads_; }
  int64_t total_len() const { return total_len_; }
  // Increasing decode steps at which `position` was important for `q_head`.
  std::span<const int64_t> Steps(int q_head, int64_t position) const;
  // Important steps of (q_head, position) strictly after `step`.
  int64_t CountAfter(int q_head, int64_t position, int64_t step) const;

 private:
  int num_q_heads_;
  int64_t total_len_;
  std::vector<std::vector<int64_t>> steps_;  // [q_head * T + position]
};

// Recurrence statistics of one layer (or several, merged), over (query head, position) pairs.
struct RecurrenceStats {
  std::map<int64_t, int64_t> interval_counts;  // interval -> number of gaps
  int64_t important_tokens = 0;                // pairs important at >= 1 decode step
  int64_t recurring_tokens = 0;                // pairs with a gap of >= 1 unimportant step
  int64_t long_recurring_tokens = 0;           // pairs with a gap of >= `window` unimportant steps

  void Merge(const RecurrenceStats& other);
};

// REQUIRES window >= 1.
RecurrenceStats AnalyzeRecurrence(const LayerImportance& importance, int64_t window);

// What one replay of a policy evicted from one layer, and how much of it would have mattered:
// an evicted (stream, position) "recurs" if it is important for one of the stream's query heads
// at a decode step measured without it (after its eviction step; from the eviction step on with
// EvictTiming::kBeforeAttend).
struct EvictionHarm {
  int64_t evicted_tokens = 0;
  int64_t evicted_recurring = 0;
  int64_t lost_important_events = 0;  // (step, query head) importance events of evicted tokens
  int64_t budget_tokens = 0;          // this layer's budget per stream

  // Adds the counts (not the budget).
  void Merge(const EvictionHarm& other);
};

// Replays every layer of `trace` with `policy` (registry name) at `budget`, recording each
// eviction through a wrapper around the policy's OnEvicted, and scores it against
// importance[l] (one per layer, from full[l]). Runs the cross-layer planning hooks first.
// Returns one EvictionHarm per layer. Throws InputError for an unknown policy or bad params.
std::vector<EvictionHarm> MeasureEvictionHarm(const traces::Trace& trace,
                                              std::span<const FullCacheAttention* const> full,
                                              std::span<const LayerImportance* const> importance,
                                              std::string_view policy,
                                              const policies::PolicyParams& params,
                                              const sim::Budget& budget,
                                              const sim::ReplayOptions& options);

}  // namespace kvsim::analysis
