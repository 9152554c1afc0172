#pragma once
// The serving scheduler: continuous batching (Orca) of many sequences on one paged KV pool, in
// simulated time. Semantics in sim/serving/README.md; in short, every iteration
//  1. (evict) re-divides the pool among the running sequences and each drops to its share;
//     (preempt-*) grows every decoding sequence by one token, preempting the latest-arrived
//     running sequence while the pool is short (vLLM);
//  2. (preempt-swap) swaps sequences back in, oldest first, while they fit;
//  3. gives prefill chunks from a token budget (chunked prefill, Sarathi-Serve): first to
//     running sequences still in their prompt, then to waiting requests, admitted first come
//     first served while memory allows;
//  4. lasts IterationSeconds(cost, ...) of simulated time; then decodes advance one token,
//     chunks complete, finished sequences free their blocks.
// Scheduling sees only token counts: a sequence with allowance A holds min(context, A) tokens,
// A = budget + 1 (the evict-after-attend high-water mark of the replay engine). The attention
// quality that follows from the budgets is measured afterwards (serve.h). The one exception is
// BudgetShare::kGlobal, whose shares follow the policies' token scores: a SequenceScorer
// (live_scores.h) replays the running sequences alongside and the scheduler asks it for values.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/model_shape.h"
#include "sim/serving/cost_model.h"
#include "sim/serving/global_share.h"
#include "sim/serving/kv_pool.h"
#include "sim/serving/workload.h"

namespace kvsim::serving {

// What the pool does when it is full.
enum class OnFull {
  kQueue,             // admit a request only when its whole-life peak fits beside the
                      // reservations of the running ones; nothing is ever preempted
  kPreemptRecompute,  // admit when the next prompt chunk fits; preempt (free, re-prefill later)
  kPreemptSwap,       // as recompute, but the blocks go to host memory and come back
  kEvict,             // every running sequence gets a share of the pool as its budget
};
const char* OnFullName(OnFull on_full);  // "queue", "preempt-recompute", "preempt-swap", "evict"
OnFull ParseOnFull(const std::string& text, const std::string& context);

// kEvict: equal rows, by context length, or by the policies' token scores across sequences
// (global_share.h; equal without a SequenceScorer).
enum class BudgetShare { kEqual, kProportional, kGlobal };
const char* BudgetShareName(BudgetShare share);  // "equal" / "proportional" / "global"
BudgetShare ParseBudgetShare(const std::string& text, const std::string& context);

struct SchedulerConfig {
  OnFull on_full = OnFull::kPreemptRecompute;
  BudgetShare share = BudgetShare::kEqual;
  int64_t iteration_tokens = 512;  // chunked-prefill token budget per iteration (decodes count)
  int64_t max_running = 256;       // sequences in one batch (vLLM max_num_seqs)
  // kEvict: a request is admitted only if every running sequence would keep at least this many
  // tokens (budget + 1 >= min_budget_tokens + 1).
  int64_t min_budget_tokens = 16;

  void Validate(const std::string& context) const;  // throws InputError naming the field
};

// What one trace of the set costs the scheduler.
struct SequenceShape {
  int64_t prompt_len = 0;
  int64_t decode_len = 0;
  // The policy's own budget in tokens per (layer, KV head); policies::kUnlimitedTokens for none.
  int64_t policy_budget_tokens = 0;
  // The policy never evicts (full; kivi, charged at full precision): OnFull::kEvict cannot
  // squeeze it and falls back to kPreemptRecompute.
  bool keeps_every_token = false;
  // What one (layer, KV head) costs by token count when the policy keeps every token in a
  // cheaper form (KIVI; KvPool); null: full precision.
  std::shared_ptr<const StreamBytesTable> stream_bytes = nullptr;
};

struct RequestRecord {
  int64_t id = 0;
  int trace = 0;
  double arrival_s = 0.0;
  double first_scheduled_s = -1.0;  // first iteration that gave it a prefill chunk
  double first_token_s = -1.0;      // end of the iteration that completed its first prefill
  double finish_s = -1.0;           // end of its last decode step
  int64_t decode_tokens = 0;
  int preemptions = 0;
  bool rejected = false;  // its peak could never fit the pool: dropped on arrival
  // The smallest budget (tokens per layer and KV head) it ran under, as the replay reads it:
  // min over its running iterations of allowance - 1; policy_budget_tokens if never squeezed.
  int64_t min_budget_tokens = 0;
  // Mean over its decode steps of its budget (allowance - 1) capped at its trace's length: how
  // much the replay at min_budget_tokens understates what it had (0 before any decode).
  double mean_budget_tokens = 0.0;
  int64_t peak_tokens = 0;  // most tokens per (layer, KV head) it held at once
  // Its budget at each of its decode steps, in order: allowance - 1 of the iteration that
  // decoded position prompt_len + k, capped at its trace's length. The replay keeps entry k after
  // the evict phase of position prompt_len - 1 + k, so that position prompt_len + k attends over
  // at most the allowance's tokens, as the pool held them (sim::Budget::schedule).
  std::vector<int64_t> decode_budgets;
};

// The pool after one iteration (and the request counts then).
struct PoolSample {
  double time_s = 0.0;
  // K/V of held tokens by the ledger's categories: kv_full, kv_quantized, quant_metadata.
  int64_t used_bytes = 0;  // their sum
  int64_t kv_full_bytes = 0;
  int64_t kv_quantized_bytes = 0;
  int64_t quant_metadata_bytes = 0;
  int64_t fragmentation_bytes = 0;  // allocated - used
  int64_t free_bytes = 0;           // capacity - allocated
  int64_t swapped_bytes = 0;        // in host memory (preempt-swap), not in the pool
  // The ledger's prefill_transient: K/V of this iteration's prompt chunks beyond what their
  // sequences keep (a chunk's tokens exist while it is prefilled, then the policy drops them to
  // its allowance); activation memory beside the pool, not in its blocks.
  int64_t prefill_transient_bytes = 0;
  int64_t running = 0;
  int64_t waiting = 0;  // arrived, not running, not swapped, not finished
  int64_t swapped = 0;
  int64_t in_system = 0;     // arrived by time_s, not finished, not rejected (Little's law)
  int64_t batch_tokens = 0;  // tokens the iteration processed
  double iteration_s = 0.0;
};

struct ScheduleResult {
  std::vector<RequestRecord> requests;  // by id
  std::vector<PoolSample> timeline;     // one per iteration
  int64_t peak_allocated_bytes = 0;
  double peak_time_s = 0.0;
  double end_s = 0.0;  // when the last request finished
  int64_t iterations = 0;
};

// Runs the schedule. `shapes[r.trace]` describes request r's trace. Deterministic. `scorer`:
// the sequences' token scores for BudgetShare::kGlobal (null: every share is equal).
ScheduleResult Schedule(const SchedulerConfig& config,
                        const PoolGeometry& pool,
                        const CostModel& cost,
                        const models::ModelShape& shape,
                        const std::vector<SequenceShape>& shapes,
                        const std::vector<ServingRequest>& requests,
                        SequenceScorer* scorer = nullptr);

}  // namespace kvsim::serving
