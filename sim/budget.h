#pragma once
// How much KV cache a replay may keep, and the knobs that decide how it is enforced. These are
// plain values shared by the replay engine, the policies and the sweep; every field has a default
// that matches the official codes' common case (see sim/README.md, "Semantics").
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace kvsim::sim {

// A cache budget as the user gave it. Resolves to tokens per (layer, stream), where a stream is
// one KV head (GqaMode::kKvHead) or one query head (GqaMode::kQueryHead).
// Syntax: "256" (tokens), "0.25p" (fraction of the prompt length) or bytes of the whole cache
// ("64MiB", "512KiB", "1GiB", "4096B"): divided over layers and streams by the full-precision
// bytes of one token, so a bytes budget buys the same tokens as the equivalent token budget for
// an eviction policy, and the same bytes for a quantizing one (`mikv` reads its token budget as
// that many full-precision tokens' worth of bytes).
struct Budget {
  enum class Kind { kTokens, kPromptFraction, kBytes };
  Kind kind = Kind::kTokens;
  double value = 0.0;  // tokens (an integer >= 1), a fraction in (0, 1] or bytes (>= 1)
  std::string text;    // as given, e.g. "0.25p"; the sweep CSV's `budget` column
  // Optional, set only by code (the serving simulation, issue 14; no text syntax): the budget
  // over time, in the bounded regime. Entry k caps the tokens per stream kept after the evict
  // phase at position prompt_len - 1 + k (k = 0: the compression right after prefill); later
  // positions keep the last entry, earlier prefill blocks the first. ResolveTokens() (the
  // uniform budget the planning hooks see) is the budget the cell would have had unsqueezed, so
  // REQUIRES kind == kTokens and every entry in [1, value]. A layer that the plan gives b tokens
  // keeps max(1, floor(b * entry / value)): uniform policies keep exactly the entry.
  std::shared_ptr<const std::vector<int64_t>> schedule;

  // Parses `text`; throws InputError naming `context` (e.g. "--budget"), the value and the syntax.
  static Budget Parse(std::string_view text, std::string_view context);
  // Tokens per (layer, stream) for a prompt of `prompt_len` tokens: the token count,
  // max(1, floor(value * prompt_len)) for a fraction, or max(1, floor(bytes / bytes_per_token))
  // for bytes, where bytes_per_token = full-precision K/V bytes of one token over every layer and
  // stream (ModelShape::KvBytesPerToken(), times the group size in GqaMode::kQueryHead).
  // REQUIRES bytes_per_token > 0 for a bytes budget (asserted).
  int64_t ResolveTokens(int64_t prompt_len, int64_t bytes_per_token = 0) const;
  friend bool operator==(const Budget&, const Budget&) = default;
};

// Two budget regimes, both from the literature (card section 0, "Prefill-only methods").
enum class Regime {
  kBounded,  // H2O style: the budget holds after every evict phase, prefill and decode
  kPrefill,  // kvpress style: compress once after the prompt, then the cache grows by one token
             // per decode step and nothing is evicted
};
const char* RegimeName(Regime regime);  // "bounded" / "prefill", as in sweep.csv
Regime ParseRegime(std::string_view text, std::string_view context);

// GQA granularity (card section 0). In kKvHead mode a stream is one KV head whose selection
// aggregates the scores of its g query heads (mean unless a policy says otherwise); in
// kQueryHead mode every query head keeps its own copy of its KV head's K/V (the official codes'
// repeat_kv), evicts independently, and costs g times the memory of native GQA.
enum class GqaMode { kKvHead, kQueryHead };
const char* GqaModeName(GqaMode mode);  // "kv-head" / "query-head"
GqaMode ParseGqaMode(std::string_view text, std::string_view context);

// When a decode step's eviction happens relative to its attention (card section 0,
// "Evict-after-attend"). kAfterAttend (the official codes): query t attends over the resident set
// including token t, metrics are taken, then the policy scores and the cache evicts, so the
// eviction affects step t+1 on. kBeforeAttend: the policy observes the same attention, the cache
// evicts, and the step's output and metrics are computed over the survivors.
enum class EvictTiming { kAfterAttend, kBeforeAttend };
const char* EvictTimingName(EvictTiming timing);  // "after-attend" / "before-attend"
EvictTiming ParseEvictTiming(std::string_view text, std::string_view context);

// How a score-ranked selection orders candidates whose scores are equal (issue 13: SnapKV's max
// pooling makes flat runs of equal scores, and the reference codes' torch.topk leaves their order
// unspecified). kKeepNewest (default): the older position goes first, the newer stays;
// kKeepOldest: the reverse; kRandom: a seeded pseudo-random order per (layer, step).
enum class TieRule { kKeepNewest, kKeepOldest, kRandom };
const char* TieRuleName(TieRule rule);  // "newest" / "oldest" / "random"
TieRule ParseTieRule(std::string_view text, std::string_view context);

// Replay knobs of one sweep cell.
struct ReplayOptions {
  Regime regime = Regime::kBounded;
  GqaMode gqa_mode = GqaMode::kKvHead;
  EvictTiming timing = EvictTiming::kAfterAttend;
  uint64_t seed = 0;  // base seed; policies derive theirs from (seed, layer, stream)
  TieRule ties = TieRule::kKeepNewest;
  // Tokens per prefill block; 0 = the whole prompt as one block. With blocks, the prompt is
  // admitted block by block with an evict phase after each (EpiCache's block-wise prefill,
  // memory-and-paging.md card 1), and conversation turns that start inside the prompt also
  // start a new block. Peak memory is then budget + block instead of the whole prompt.
  int64_t prefill_block = 0;
};

}  // namespace kvsim::sim
