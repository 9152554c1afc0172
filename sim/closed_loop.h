#pragma once
// Closed-loop evaluation: the model decodes while a policy really evicts from its cache, so the
// hidden states of later steps change (unlike the open-loop replay of sim/replay.h, where the
// queries are always those of the full-cache run).
//
// Three greedy runs of the same prompt (positions [0, n) prefilled as one block, then
// `new_tokens` decode forwards at positions t = n .. T-1, T = n + new_tokens):
//  - full:    no eviction; the reference. Its tokens and tensors also form the full-cache trace,
//             which open-loop replays use to compute the cheap proxies of the same run;
//  - teacher: evicting, fed the full run's tokens (teacher forcing), so both runs see the same
//             sequence and their next-token distributions compare position by position
//             (perplexity, KL(full || evicted));
//  - free:    evicting, fed its own greedy tokens (next-token agreement, first divergence).
// Token n comes from the prefill logits, which every run computes over the full prompt before
// any eviction, so it is identical; step t's row compares the next-token distributions produced
// by the forward of token t.
//
// Per evicting run, one sim::KvCache per (layer, KV head) is kept in lock-step with the model's
// KvState: the forward's keys/values are appended to both, the policy's decision is applied to
// the KvCache and the same positions are dropped from the KvState. Hooks are called in the order
// sim/replay.cc calls them (policies/eviction_policy.h): PrefillLayerStats on every layer,
// LayerBudget on every layer, then per layer OnPrefill, SelectVictims(after_prefill), OnEvicted;
// per decode step, after the forward (evict-after-attend: the eviction of step t affects t+1 on):
// OnStep(t), then in the bounded regime (or at every step for ActsEveryStep policies: KIVI)
// SelectVictims(t) + OnEvicted. The attention in the views is recomputed from the KvCache with
// the step's post-RoPE queries (what the model attended with).
//
// Every policy that can run causally runs here as it does in the open-loop replay:
//  - rewritten entries (D2O merges, KIVI / MiKV quantized K/V) are written into the model's own
//    KvState (KvState::Overwrite), so the model attends to them as stored;
//  - a policy's sparse-attention mask (AttendMask: MPCache's dynamic stage) is asked once per
//    decode step and applied by the model's attention (ForwardObserver::AttendMask) and in the
//    policy's view, as sim/replay.cc applies it.
// Limits (InputError): GqaMode::kKvHead and EvictTiming::kAfterAttend only; OraclePolicy is
// refused (a closed loop has no future); `gate` replays recorded flags
// (ClosedLoopOptions::gate_flags, from a trace) and is refused without them. Greedy decoding
// only.
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/llama_model.h"
#include "policies/eviction_policy.h"
#include "sim/budget.h"
#include "traces/trace.h"

namespace kvsim::sim {

// What a model-in-the-loop policy (faithful LAQ) may use, fixed right after prefill. Pointers
// are valid until the policy's run ends.
struct ModelContext {
  const models::LlamaModel* model = nullptr;
  // The full prompt cache (every layer and KV head, positions [0, n)), before any eviction.
  // Copy it to run pseudo decode steps; never modify it.
  const models::KvState* prompt_state = nullptr;
  // Per layer: queries [q_heads, >= n, d] whose rows [0, n) are the prompt's post-RoPE queries.
  std::vector<const HeadTensor*> prompt_queries;
  int64_t prompt_len = 0;
  int32_t first_token = 0;    // y0: the greedy token after the prompt (the real first output)
  int64_t budget_tokens = 0;  // the uniform budget per (layer, KV head) the user asked for
  int32_t eos_token = -1;     // stop pseudo decoding here; -1 = never
};

// A policy that needs the model. The closed-loop engine calls AttachModel on every layer's
// instance after prefill, before the planning hooks. An open-loop replay of the full-cache run
// may attach the same context (its prompt is identical), see ClosedLoopResult::prompt_state.
class ModelInLoopPolicy : public policies::EvictionPolicy {
 public:
  virtual void AttachModel(const ModelContext& context) = 0;
};

// Builds the instance of one layer. A run calls it for layers 0 .. L-1 in order, once per run.
using LayerPolicyFactory =
    std::function<std::unique_ptr<policies::EvictionPolicy>(const policies::PolicySetup& setup)>;

struct ClosedLoopOptions {
  int64_t new_tokens = 0;  // decode forwards after the prompt, >= 1
  // Per (layer, KV head); policies::kUnlimitedTokens = never evict.
  int64_t budget_tokens = policies::kUnlimitedTokens;
  ReplayOptions replay;    // regime and seed are used; gqa/timing must be the defaults
  int32_t eos_token = -1;  // passed to ModelContext
  // Recorded Attention-Gate keep (1) / evict (0) flags for `gate` (a trace's /gate_flags, see
  // ReadGateFlagsForModel): [layer][kv_head] -> >= prompt + new_tokens flags by position. The
  // flags belong to positions, as in the open-loop replay: the free-running run applies them to
  // whatever token it generated there. Empty: none (then `gate` is refused).
  std::vector<std::vector<std::vector<uint8_t>>> gate_flags;
};

// Reads the /gate_flags of the trace at `path` for a closed loop of `model` over `total_len`
// positions. Throws InputError naming the file (and `context`, the option) when the trace has no
// flags, its layers or KV heads differ from the model's, or it has fewer than total_len positions.
std::vector<std::vector<std::vector<uint8_t>>> ReadGateFlagsForModel(
    const std::string& path,
    const models::LlamaModel& model,
    int64_t total_len,
    std::string_view context);

// One decode step t (the forward of token t at position t).
struct ClosedLoopStep {
  int64_t step = 0;
  int32_t full_next = 0;     // the full run's greedy next token (token t+1; the teacher's target)
  int32_t free_next = 0;     // the free-running evicting model's greedy next token
  int32_t teacher_next = 0;  // the teacher-forced evicting model's greedy next token
  double nll_full = 0.0;     // -log p_full(full_next), nats
  double nll_evicted = 0.0;  // -log p_teacher(full_next), nats
  double kl = 0.0;           // KL(p_full || p_teacher), nats; 0 when the logits are identical
  // Resident entries per (layer, KV head) at the step's attention in the teacher run (mean).
  double resident_mean = 0.0;
  // Recall measured in the loop (the open-loop metrics' definitions, sim/README.md "Metrics"),
  // on the teacher run's own attention: its query of this step against every key the run has
  // produced (positions <= t, evicted ones included, as computed before any rewrite), compared
  // with the entries resident when it attended. Means over layers and query heads:
  double mass_recall = 1.0;                            // attention mass on resident positions
  std::array<double, 3> top_recall = {1.0, 1.0, 1.0};  // k = kClosedLoopTopK, capped at t + 1
};

// The k of ClosedLoopStep::top_recall (the open loop's analysis::kTopK).
inline constexpr std::array<int, 3> kClosedLoopTopK = {1, 8, 32};

struct ClosedLoopResult {
  int64_t prompt_len = 0;
  std::vector<int32_t> full_tokens;   // prompt + generated, T + 1 (the last is full_next of T-1)
  std::vector<int32_t> free_tokens;   // same for the free-running evicting run
  std::vector<ClosedLoopStep> steps;  // T - n rows
  // First step whose free_next != full_next, or -1 if none diverged.
  int64_t first_divergence = -1;
  double agreement = 0.0;           // fraction of steps with free_next == full_next
  double teacher_agreement = 0.0;   // fraction of steps with teacher_next == full_next
  double perplexity_full = 0.0;     // exp(mean nll_full)
  double perplexity_evicted = 0.0;  // exp(mean nll_evicted)
  double kl_mean = 0.0;
  double mass_recall_mean = 1.0;                            // mean of the steps' mass_recall
  std::array<double, 3> top_recall_mean = {1.0, 1.0, 1.0};  // mean of the steps' top_recall
  // The full run as a trace (float32, T positions, greedy tokens), for open-loop replays.
  traces::Trace full_trace;
  // The full prompt cache after prefill (ModelContext::prompt_state for open-loop replays).
  models::KvState prompt_state;
};

// Runs the three runs above. `prompt` >= 1 token; prompt + new_tokens <= context length
// (InputError otherwise, naming --new-tokens). `make_policy` builds per-layer instances for each
// evicting run (called twice per layer).
ClosedLoopResult RunClosedLoop(const models::LlamaModel& model,
                               std::span<const int32_t> prompt,
                               const ClosedLoopOptions& options,
                               const LayerPolicyFactory& make_policy);

// KL(p || q) in nats of the softmax distributions of two logit rows (double precision).
double KlDivergence(std::span<const float> logits_p, std::span<const float> logits_q);
// -log softmax(logits)[token] in nats.
double NegLogLikelihood(std::span<const float> logits, int32_t token);

}  // namespace kvsim::sim
