#pragma once
// The eviction-policy interface: what a policy may see and the hooks the replay engine calls.
//
// Header-only on purpose: sim/replay drives policies through it without linking kvsim_policies
// (policies depend on sim, not the reverse).
//
// One instance serves one LAYER of one replay (all its streams), so layer-level policies (TOVA,
// one selection per layer) and per-stream ones (H2O) fit the same interface. Cross-layer budget
// allocation (PyramidKV, CAKE, D2O) uses the two planning hooks, which the engine calls on every
// layer's instance before any layer replays:
//   1. PrefillLayerStats(prefill)  - per layer, in parallel: any statistics of the layer's prompt;
//   2. LayerBudget(plan)           - per layer: this layer's budget given EVERY layer's stats.
// Each instance computes the same allocation from the same inputs and keeps its own share, so no
// instance talks to another.
//
// Hook order for one layer (the spy test in tests/sim checks it):
//   PrefillLayerStats, LayerBudget, OnPrefill, SelectVictims (after prefill, both regimes),
//   OnEvicted (per stream with victims), then for each decode step t = prompt_len .. T-1:
//   OnStep(t), and in the bounded regime SelectVictims(t) + OnEvicted.
//
// Observability by construction: views hold the resident entries (keys, values, positions),
// queries up to the current position (QueryHistory refuses later rows) and attention over the
// resident set. Full-cache attention and future queries reach only OraclePolicy, through the
// explicitly named FutureView.
//
// Contract (tests/policies contract suite, run over every registered name): victims are resident
// and unique; at least request.min_victims[s] of them per stream; same setup and inputs give the
// same decisions, whatever the thread count.
#include <Eigen/Dense>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/tensor.h"
#include "models/model_shape.h"
#include "sim/budget.h"
#include "sim/kv_cache.h"
#include "sim/prefill_attention.h"
#include "sim/quantization.h"

namespace kvsim::policies {

// Everything fixed for one layer of one replay; given to the factory.
struct PolicySetup {
  models::ModelShape shape;
  int layer = 0;
  sim::ReplayOptions options;
  int64_t prompt_len = 0;
  int64_t total_len = 0;  // T
  // Seed of this layer's instance, derived from (options.seed, layer); a policy derives per-stream
  // seeds from it and the stream index, never from thread ids.
  uint64_t seed = 0;

  int num_layers() const { return shape.layers; }
  // Streams per layer: KV heads, or query heads in GqaMode::kQueryHead.
  int num_streams() const {
    return options.gqa_mode == sim::GqaMode::kKvHead ? shape.kv_heads : shape.q_heads;
  }
  int queries_per_stream() const {
    return options.gqa_mode == sim::GqaMode::kKvHead ? shape.GroupSize() : 1;
  }
  int FirstQueryHead(int stream) const { return stream * queries_per_stream(); }
  int KvHeadOf(int stream) const {
    return options.gqa_mode == sim::GqaMode::kKvHead ? stream : stream / shape.GroupSize();
  }
};

// Queries of one layer up to and including `last_visible`; later rows are unreachable.
// Valid while the trace lives.
class QueryHistory {
 public:
  QueryHistory(const HeadTensor& queries, int64_t last_visible)
      : queries_(&queries), last_visible_(last_visible) {}
  int64_t last_visible() const { return last_visible_; }
  // Query head `q_head` (layer-local) at `position`. REQUIRES position <= last_visible().
  Eigen::Map<const Eigen::RowVectorXf> Row(int q_head, int64_t position) const {
    KVSIM_ASSERT(position >= 0 && position <= last_visible_,
                 "query position {} is not visible (last visible {})", position, last_visible_);
    return Eigen::Map<const Eigen::RowVectorXf>(queries_->Row(q_head, position), queries_->dim());
  }
  // Rows [begin, end) of `q_head`. REQUIRES 0 <= begin <= end <= last_visible() + 1.
  ConstMatrixMap Rows(int q_head, int64_t begin, int64_t end) const {
    KVSIM_ASSERT(begin >= 0 && begin <= end && end <= last_visible_ + 1,
                 "query rows [{}, {}) are not visible (last visible {})", begin, end,
                 last_visible_);
    return ConstMatrixMap(queries_->Row(q_head, begin), end - begin, queries_->dim());
  }

 private:
  const HeadTensor* queries_;
  int64_t last_visible_;
};

// One stream (KV head, or query head in kQueryHead mode) as the policy sees it.
struct StreamView {
  int stream = 0;
  int kv_head = 0;
  int first_q_head = 0;  // layer-local query heads [first_q_head, first_q_head + num_q_heads)
  int num_q_heads = 1;
  const sim::KvCache* cache = nullptr;
  // Weights of each of the stream's query heads over the resident slots, in slot order:
  // num_q_heads x cache->size(), each row a softmax over the resident set (rewritten entries as
  // they are). Null in PrefillView and in requests made right after prefill.
  const RowMatrixXf* attention = nullptr;
};

// The prompt block [begin, end) just admitted: [0, prompt_len) unless ReplayOptions::prefill_block
// splits the prompt (then once per block, in order; `attention` still holds whole-prompt
// statistics).
struct PrefillView {
  int layer = 0;
  int64_t begin = 0;
  int64_t end = 0;
  int64_t prompt_len = 0;
  std::span<const StreamView> streams;
  const sim::PrefillAttention* attention = nullptr;  // causal prompt attention statistics
  QueryHistory queries;                              // visible: [0, end)
  // Recorded Attention-Gate flags (trace dataset /gate_flags), per KV head of the layer: T keep
  // (1) / evict (0) values each; empty when the trace has none. Valid during the layer's replay.
  std::span<const std::span<const uint8_t>> gate_flags = {};
  // The trace's conversation segments (traces/FORMAT.md /segments); empty unless multi-turn.
  std::span<const traces::Segment> segments = {};
};

// Decode step `step`: token `step` is resident (just appended) and its queries have attended.
struct StepView {
  int layer = 0;
  int64_t step = 0;
  int64_t prompt_len = 0;
  std::span<const StreamView> streams;  // with attention
  QueryHistory queries;                 // visible: [0, step]
};

// Returned by LayerBudget for policies that never evict (`full`).
inline constexpr int64_t kUnlimitedTokens = INT64_MAX / 4;

// An evict phase. Streams carry attention at decode steps (the same the policy saw in OnStep) and
// none right after prefill.
struct EvictionRequest {
  int layer = 0;
  int64_t step = 0;  // decode step, or prompt_len - 1 right after prefill
  bool after_prefill = false;
  std::span<const StreamView> streams;
  std::span<const int64_t> budget_tokens;  // per stream (the cache's current budget)
  // Per stream: resident - (budget + slack), at least 0. The policy must remove at least this
  // many; it may remove more (e.g. a policy that compresses in chunks).
  std::span<const int64_t> min_victims;
  QueryHistory queries;                            // visible: [0, step]
  const sim::PrefillAttention* prefill = nullptr;  // this layer's prompt statistics
  // The uniform budget in force now when it changes over time (a serving pool's share,
  // sim::Budget::schedule): budget_tokens already follows it; a policy that enforces its budget
  // in other units (MiKV's bytes) caps them at this many full-precision tokens' worth.
  // kUnlimitedTokens otherwise.
  int64_t budget_cap_tokens = kUnlimitedTokens;
};

// Inputs of the cross-layer budget plan (hook 2).
struct BudgetPlanView {
  int layer = 0;
  int num_layers = 0;
  int64_t prompt_len = 0;
  int64_t uniform_budget_tokens = 0;  // the budget the user asked for, per (layer, stream)
  // layer_stats[l] = what PrefillLayerStats returned for layer l.
  std::span<const std::vector<double>> layer_stats;
};

class EvictionPolicy {
 public:
  virtual ~EvictionPolicy() = default;

  // The registry name ("h2o").
  virtual std::string_view Name() const = 0;

  // Planning hook 1 (optional): statistics of this layer's prompt for cross-layer allocation.
  // A policy that overrides it also overrides UsesPrefillLayerStats to return true, so a sweep
  // that reads the trace layer by layer knows whether it needs a planning pass over the layers.
  virtual std::vector<double> PrefillLayerStats(const PrefillView& /*prefill*/) { return {}; }
  virtual bool UsesPrefillLayerStats() const { return false; }
  // Planning hook 2 (optional): tokens per stream for this layer. Default: uniform. The engine
  // asserts that the layers' budgets sum to at most num_layers * uniform (kUnlimitedTokens
  // excepted) and gives each cache its layer's budget.
  virtual int64_t LayerBudget(const BudgetPlanView& plan) { return plan.uniform_budget_tokens; }
  // Tokens a policy may hold above its budget between its own eviction rounds (LazyEviction keeps
  // up to W-1 extra). The cache asserts size <= budget + slack after every evict phase.
  virtual int64_t BudgetSlackTokens() const { return 0; }
  // True when nothing the policy does depends on the budget it is given (`full`, `kivi`, `gate`:
  // LayerBudget is unlimited and no other hook reads the budget). A sweep then replays one cell
  // per parameter set and reports that cell's rows under every budget, which saves a full
  // attention pass and a cache of every token per extra budget; tests/policies/
  // budget_contract_test.cc checks the claim for every registered policy that makes it.
  virtual bool IgnoresBudget() const { return false; }

  // The prompt block has been admitted to every stream.
  virtual void OnPrefill(const PrefillView& /*prefill*/) {}
  // Decode step: the step's attention over the resident set is in the view.
  virtual void OnStep(const StepView& /*step*/) {}
  // Decides what each stream drops (decisions[s] for streams[s], empty on entry). No side effects
  // on the cache: the cache applies the decisions afterwards.
  virtual void SelectVictims(const EvictionRequest& request,
                             std::span<sim::EvictionDecision> decisions) = 0;
  // After the cache applied a stream's decision: the positions that left it.
  virtual void OnEvicted(int /*stream*/, std::span<const int64_t> /*positions*/) {}

  // Optional: the importance of each resident slot of `stream` (slot order, higher = keep), the
  // very score SelectVictims ranks victims by, as of the last hook the policy saw. A serving pool
  // that divides its memory by a global score across sequences reads it (sim/serving); a policy
  // without such a score returns false (the pool then gives it an equal share). Recent windows
  // and other protections are not reflected: it is the ranking score, not the decision.
  virtual bool ResidentScores(int /*stream*/,
                              const sim::KvCache& /*cache*/,
                              std::vector<double>& /*scores*/) const {
    return false;
  }

  // Bytes of bookkeeping the policy holds now (scores, windows); the ledger's policy_state.
  virtual int64_t StateBytes() const { return 0; }

  // Policies that keep entries below full precision (KIVI, MiKV) report the K/V bytes of the
  // layer's streams by tier (payload at full precision, packed quantized payload, scales and
  // zero points), exact for their scheme; the engine records them as kv_full / kv_quantized /
  // quant_metadata. Default (nullopt): every resident entry costs the full-precision price.
  virtual std::optional<sim::KvTierBytes> TierBytes(std::span<const StreamView> /*streams*/) const {
    return std::nullopt;
  }
  // The same for one stream of a policy that keeps every token (no eviction) after an evict
  // phase with `context` tokens admitted, known without replaying: the serving pool charges a
  // sequence this (sim/serving). Default (nullopt): context x the full-precision price. KIVI
  // overrides it; tests/policies check it against TierBytes step by step.
  virtual std::optional<sim::KvTierBytes> KeepAllStreamBytes(int64_t /*context*/) const {
    return std::nullopt;
  }
  // True: the engine runs an evict phase at every decode step in Regime::kPrefill too (KIVI
  // quantizes tokens as they leave its residual window; nothing is required to leave).
  virtual bool ActsEveryStep() const { return false; }

  // Sparse attention over the resident set (MPCache's dynamic stage): before query `step` of
  // `stream` attends, the policy may clear entries of `attend` (one per resident slot, slot
  // order, all 1 on entry) and return true; the softmax is then taken over the slots left at 1
  // only (at least one must be). stream.attention is not valid here. Memory is unchanged: the
  // resident set stays. Default: attend to every resident entry.
  virtual bool AttendMask(const StreamView& /*stream*/,
                          int64_t /*step*/,
                          const QueryHistory& /*queries*/,
                          std::vector<uint8_t>& /*attend*/) {
    return false;
  }
};

// ORACLE ONLY. The full-cache attention of one layer's decode steps, including steps that have
// not happened yet: information no deployable policy has. Only OraclePolicy receives it. Valid for
// the whole replay of the layer. A sweep streams the full attention in blocks of decode steps
// (analysis::FullAttentionStream), so FullAttention is guaranteed only for the block being
// replayed (the current step and the rest of its block; the first block covers the first decode
// steps while the prompt is compressed); the whole future reaches a policy as FutureMass.
class FutureView {
 public:
  virtual ~FutureView() = default;
  virtual int64_t prompt_len() const = 0;
  virtual int64_t total_len() const = 0;
  // Full-cache softmax weights of query head `q_head` (layer-local) at decode step `step` over
  // positions [0, step]; step in [prompt_len, total_len).
  virtual std::span<const float> FullAttention(int q_head, int64_t step) const = 0;
  // Full-cache attention summed over every decode step and over query heads [first_q_head,
  // first_q_head + num_q_heads), per position [0, total_len), in double, accumulated step by
  // step in increasing order and, within a step, head by head. The default reads every step
  // through FullAttention, so it suits views that hold every step.
  virtual std::vector<double> FutureMass(int first_q_head, int num_q_heads) const {
    std::vector<double> mass(static_cast<size_t>(total_len()), 0.0);
    for (int64_t t = prompt_len(); t < total_len(); ++t) {
      for (int h = first_q_head; h < first_q_head + num_q_heads; ++h) {
        const std::span<const float> weights = FullAttention(h, t);
        for (size_t j = 0; j < weights.size(); ++j) mass[j] += weights[j];
      }
    }
    return mass;
  }
};

// A policy that needs the future (`oracle`, later `laq-oracle`). The engine attaches the
// FutureView before any other hook; a replay without one refuses to run an OraclePolicy.
class OraclePolicy : public EvictionPolicy {
 public:
  virtual void AttachFuture(const FutureView& future) = 0;
};

}  // namespace kvsim::policies
