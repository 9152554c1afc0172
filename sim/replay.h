#pragma once
// The replay engine: one LAYER of one cell (trace x policy x budget x options) replayed decode
// step by decode step against per-stream KV caches, driven by an EventQueue. Semantics are
// written down in sim/README.md; in short:
//  - open loop: queries are those of the full-cache run; at decode step t token t's K/V is
//    appended, query t attends over the resident set, the observer measures, then the policy
//    selects victims and the cache removes them (EvictTiming::kBeforeAttend swaps the last two);
//  - the prompt is admitted as one block, then the policy may compress it to the budget (both
//    regimes); in Regime::kBounded the budget then holds after every evict phase, in
//    Regime::kPrefill the cache grows by one token per step;
//  - layers are independent (open loop), so a sweep replays them in parallel, after
//    PlanLayerBudgets has run the policies' cross-layer planning hooks.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "policies/eviction_policy.h"
#include "sim/budget.h"
#include "sim/event_queue.h"
#include "sim/kv_cache.h"
#include "sim/memory_ledger.h"
#include "sim/prefill_attention.h"
#include "traces/trace.h"

namespace kvsim::sim {

// One measured decode step of one layer, as the observer (analysis::Metrics) receives it. Views
// are valid only during the call.
struct MeasureView {
  int layer = 0;
  int64_t step = 0;
  // Every stream with its cache and the attention of its query heads over the resident set at
  // measure time (after eviction with EvictTiming::kBeforeAttend).
  std::span<const policies::StreamView> streams;
  // Attention output over the resident set for every query head of the layer: q_heads x d
  // (softmax renormalised over resident entries, rewritten entries as they are).
  const RowMatrixXf* outputs = nullptr;
};

// Full-cache logits of one layer, computed once per block of decode steps and shared by every
// cell that replays the layer in lockstep (analysis::FullAttentionStream). A replay given one
// takes the logits of its pristine resident entries from it instead of recomputing q . k: the
// same numbers, once per layer instead of once per cell. A stream whose cache still holds every
// position [0, step] (IsSourcePrefix) and masks nothing attends exactly as the full cache does,
// so it takes the full cache's weights and output as they are.
class SharedLogits {
 public:
  virtual ~SharedLogits() = default;
  // q_t . k_j / sqrt(d) of query head `q_head` (layer-local) at decode step `step`, positions
  // [0, step]. REQUIRES `step` inside the block the provider holds now (for all three).
  virtual std::span<const float> Logits(int q_head, int64_t step) const = 0;
  // softmax of Logits(q_head, step): step + 1 weights.
  virtual std::span<const float> FullWeights(int q_head, int64_t step) const = 0;
  // FullWeights(q_head, step) x V[0, step]: head_dim floats.
  virtual std::span<const float> FullOutput(int q_head, int64_t step) const = 0;
};

class ReplayObserver {
 public:
  virtual ~ReplayObserver() = default;
  virtual void OnMeasure(const MeasureView& view) = 0;
};

struct LayerReplayInput {
  const traces::Trace* trace = nullptr;
  int layer = 0;
  ReplayOptions options;
  // This layer's budget per stream (from PlanLayerBudgets), or policies::kUnlimitedTokens.
  int64_t budget_tokens = 0;
  const PrefillAttention* prefill = nullptr;  // this layer's shared prompt statistics
  // Required iff the policy is a policies::OraclePolicy (asserted); ignored otherwise.
  const policies::FutureView* future = nullptr;
  // Optional: shared full-cache logits of this layer (see SharedLogits); null = compute q . k.
  const SharedLogits* logits = nullptr;
  // Optional: the cell's budget over time (sim::Budget::schedule, empty = fixed) and the uniform
  // budget its entries scale (Budget::value): at each evict phase the caches' budget is
  // budget_tokens * entry / schedule_base (at least 1; unlimited stays unlimited) and the policy
  // sees the entry as EvictionRequest::budget_cap_tokens.
  std::span<const int64_t> budget_schedule = {};
  int64_t schedule_base = 0;
};

// A conversation turn's first position (trace segments), as its arrival event saw it.
struct TurnArrival {
  int64_t position = 0;
  int32_t turn = 0;
  std::string role;  // role of the turn's first segment
};

struct LayerReplayResult {
  int layer = 0;
  int64_t steps = 0;  // decode steps measured
  // Resident tokens per stream at each decode step's attention (the step's high-water mark:
  // budget + 1 in the bounded regime with evict-after-attend): mean over steps and streams, and
  // the largest over steps and streams.
  double resident_tokens_mean = 0.0;
  int64_t resident_tokens_peak = 0;
  // Victims the policy ranked by score (TakeLowest) over the replay, and how many of them a tie
  // at the selection boundary decided (sim::SelectionTally).
  int64_t ranked_victims = 0;
  int64_t tie_victims = 0;
  // Memory of this layer by category over time (see MemoryLedger). kv_full is sampled once per
  // decode step at the step's high-water mark and once after prefill compression; the prompt's
  // K/V that existed only during prefill is prefill_transient. With several prefill blocks, one
  // sample per block. Policies with TierBytes add kv_quantized and quant_metadata samples.
  MemoryLedger ledger;
  // Turn arrivals in position order (empty unless the trace has segments).
  std::vector<TurnArrival> turn_arrivals;
};

class LayerRun;

// One layer's replay, advanced a block of decode steps at a time so that a sweep can move every
// cell through the same block of shared full-cache work and then drop it (issue 11: memory that
// does not grow with the decode length). Events are scheduled per block, so the queue stays
// small too. `policy` (built for input.layer) and `observer` (may be null) must outlive it.
class LayerReplay {
 public:
  LayerReplay(const LayerReplayInput& input,
              policies::EvictionPolicy& policy,
              ReplayObserver* observer);
  ~LayerReplay();
  LayerReplay(LayerReplay&&) noexcept;
  LayerReplay& operator=(LayerReplay&&) noexcept;

  // Runs every event up to and including decode step `last_step` (the prompt's events come
  // first); a last_step below the prompt's end runs just the prompt. Monotone: a smaller value
  // than before does nothing.
  void AdvanceThrough(int64_t last_step);
  // The layer's streams as they stand after the last event run (caches, no attention): what a
  // serving pool reads between steps (sim/serving live scores). Valid until the next call.
  std::span<const policies::StreamView> streams() const;
  // Runs whatever remains and returns the result. Call once.
  LayerReplayResult Finish();

 private:
  std::unique_ptr<LayerRun> run_;
};

// Replays one layer start to end. `policy` must be the instance built for input.layer.
// `observer` may be null.
LayerReplayResult ReplayLayer(const LayerReplayInput& input,
                              policies::EvictionPolicy& policy,
                              ReplayObserver* observer);

// Planning hook 1 for one layer: the policy's PrefillLayerStats over the whole prompt.
std::vector<double> LayerPlanStats(const traces::Trace& trace,
                                   int layer,
                                   policies::EvictionPolicy& policy,
                                   const PrefillAttention& prefill);
// Planning hook 2 for every layer, from every layer's stats (layer_stats[l]); returns each
// layer's budget per stream and asserts the sum is at most num_layers * uniform_budget_tokens
// (kUnlimitedTokens excluded).
std::vector<int64_t> AssignLayerBudgets(std::span<policies::EvictionPolicy* const> layer_policies,
                                        std::span<const std::vector<double>> layer_stats,
                                        int64_t prompt_len,
                                        int64_t uniform_budget_tokens);

// Runs the planning hooks (PrefillLayerStats on every layer, then LayerBudget on every layer) of
// one replay. layer_policies[l] and prefill[l] belong to layer l; every layer of the trace must
// be present. Returns each layer's budget per stream; asserts the sum is at most
// num_layers * uniform_budget_tokens (kUnlimitedTokens excluded).
std::vector<int64_t> PlanLayerBudgets(const traces::Trace& trace,
                                      std::span<policies::EvictionPolicy* const> layer_policies,
                                      std::span<const PrefillAttention* const> prefill,
                                      int64_t uniform_budget_tokens);

// The per-layer instance seed: a fixed mix of the base seed and the layer index.
uint64_t LayerSeed(uint64_t base_seed, int layer);
// A fixed mix of a seed and an index (SplitMix64 finaliser); for per-stream seeds.
uint64_t MixSeed(uint64_t seed, uint64_t index);

}  // namespace kvsim::sim
