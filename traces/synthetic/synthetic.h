#pragma once
// Synthetic traces whose attention has known, controllable structure (`kvsim synth`): attention
// sinks, recency, heavy hitters, recurring tokens, needles, shifted decode queries and
// multi-turn topic structure. Seeded and deterministic: the same shape and params give a
// bitwise-identical trace, whatever the thread count (within one build: the compiler's
// vectorization and FMA choices may change the last bits between builds).
//
// Construction (per layer and KV head). Everything is built in "logit units", where the
// attention logit q.k/sqrt(d) equals the dot product of the unscaled vectors; both are finally
// scaled by d^(1/4) and rotated by a random orthogonal matrix (dot products are preserved).
// Each kind of structure owns one "direction" (sinks, heavy hitters, every recurring token,
// every needle, every topic, the two shifted sets) or a plane per frequency (recency). A key
// carries a coefficient on the directions of the structures it belongs to; a query carries
// gain/coefficient on the directions it should attend to, so the targeted tokens get a logit
// gain of `gain` (times a per-head factor in [0.85, 1.15] and a per-query-head factor in
// [0.9, 1.1], so layers and heads differ). The rest of the space holds N(0, 1) key noise and
// query noise scaled so that untargeted logits are ~N(0, noise^2). Recency uses random Fourier
// features (Rahimi & Recht, "Random Features for Large-Scale Kernel Machines"): frequencies
// ~ N(0, 1/recent_window^2) give a logit gain of ~recent_gain * exp(-lag^2 / (2 w^2)).
// When the head dimension is too small for orthogonal directions (e.g. stories260k, d = 8),
// directions are random unit vectors instead and structures leak into each other.
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "models/model_shape.h"
#include "traces/trace.h"

namespace kvsim::traces::synthetic {

enum class Scenario { kMixed, kRecurrence, kNoRecurrence, kShiftedQueries, kNeedle, kMultiTurn };

// "mixed", "recurrence", "no-recurrence", "shifted-queries", "needle", "multi-turn".
const char* ScenarioName(Scenario scenario);
std::vector<std::string> ScenarioNames();
// Throws InputError naming --scenario and listing the known names.
Scenario ParseScenario(std::string_view name);

// Lengths are in positions; gains are logit increments; counts are tokens. Error messages name
// the `kvsim synth` argument of each field (--prompt, --sinks, ...). A count of 0 turns the
// structure off.
struct SynthParams {
  Scenario scenario = Scenario::kMixed;
  int64_t prompt_len = 0;  // >= 1
  int64_t decode_len = 0;  // >= 0
  uint64_t seed = 1;
  double noise = 1.0;  // std of the unstructured logits

  // Attention sinks (Xiao et al., "Efficient Streaming Language Models with Attention Sinks"):
  // the first `sinks` positions, attended by every query.
  int sinks = 0;
  double sink_gain = 8.0;
  // Locality: logit gain ~ recent_gain * exp(-lag^2 / (2 recent_window^2)).
  int recent_window = 0;
  double recent_gain = 4.0;
  // Heavy hitters (Zhang et al., "H2O"): prompt tokens attended by every later query.
  int heavy_hitters = 0;
  double heavy_gain = 6.0;
  // Recurring tokens: important for `recurrence_on` steps, ignored for `recurrence_gap` steps
  // (the W of LazyEviction), important again, ... with a random phase per token.
  int recurring = 0;
  int recurrence_gap = 128;
  int recurrence_on = 16;
  double recurrence_gain = 8.0;
  // Needles: a prompt token that exactly one late query attends to.
  int needles = 0;
  double needle_gain = 16.0;  // must beat sinks (4 x e^8) by far
  // Shifted queries: the last `observation_window` prompt queries attend to one set of
  // `shifted` prompt tokens, every decode query to another, disjoint set (SnapKV's observation
  // window, Li et al., "SnapKV", is then misleading).
  int shifted = 0;
  int observation_window = 32;
  double shifted_gain = 7.0;
  // Multi-turn: the prompt is `turns` segments (user/assistant alternating), each on one of
  // `topics` topics (keys of a topic share a direction), then a user question of
  // `question_len` positions; the question's and the answer's (decode) queries attend to the
  // tokens of one topic.
  int topics = 0;
  int turns = 0;  // 0: 2 * topics
  int question_len = 32;
  double topic_gain = 5.0;
};

// The default knobs of a scenario (prompt_len and decode_len left 0):
//  mixed: 4 sinks, recency 64, 8 heavy hitters, 4 recurring (W = 128), 1 needle.
//  recurrence: 4 sinks, recency 64, 16 recurring tokens (on 16, W = 128).
//  no-recurrence: as recurrence, but the 16 tokens are heavy hitters (always important).
//  shifted-queries: 2 sinks, recency 32, 32 + 32 shifted tokens, observation window 32.
//  needle: 4 sinks, recency 64, 4 needles.
//  multi-turn: 4 sinks, recency 32, 4 topics over 8 turns, question of 32.
SynthParams ScenarioParams(Scenario scenario);

// Throws InputError naming the argument if a field is out of range or the prompt is too short
// to place the requested tokens.
void ValidateSynthParams(const SynthParams& params);

// Ground truth of a generated trace: which positions carry which structure. Tests use it to
// know which tokens to examine, and measure the structure from the attention itself.
struct RecurringToken {
  int64_t position = 0;
  // Query t > position attends to it iff (t + phase) % (recurrence_on + recurrence_gap) <
  // recurrence_on.
  int64_t phase = 0;
};
struct NeedleToken {
  int64_t position = 0;
  int64_t query_position = 0;  // the only query that attends to it
};
struct SynthLayout {
  std::vector<int64_t> sinks;
  std::vector<int64_t> heavy_hitters;
  std::vector<RecurringToken> recurring;
  std::vector<NeedleToken> needles;
  std::vector<int64_t> window_targets;  // attended by the last observation_window prompt queries
  std::vector<int64_t> decode_targets;  // attended by every decode query
  std::vector<int> segment_topics;      // per TraceMeta::segments entry; -1 question/answer
  int question_topic = -1;              // the topic the question and answer attend to
};

struct SynthTrace {
  Trace trace;
  SynthLayout layout;
};

// Generates a synthetic trace of `shape` (all its layers; cut with models::WithLayers) one
// layer at a time, so a trace larger than memory can be streamed to disk
// (traces::WriteTraceByLayer) holding one layer. meta().storage is float16; meta().source is
// "synthetic:<scenario> key=value ..." listing every param and, for multi-turn,
// `segment_topics=t0,t1,...` (one per segment, -1 for question/answer) and
// `question_topic=<e>`. Token ids are deterministic pseudo-random ids in [0, 32000).
//
// Layer(l) splits its work into (head, block of positions) items on `threads` threads (0:
// std::thread::hardware_concurrency()). Every item draws from counter-based streams keyed by
// (seed, layer, head), so the bits depend on neither the thread count nor the order in which
// layers are generated. Thread-safe: Layer() may be called concurrently.
class SynthGenerator {
 public:
  // Throws InputError (see ValidateSynthParams) on bad params or shape.
  SynthGenerator(const models::ModelShape& shape, const SynthParams& params, int threads = 0);
  ~SynthGenerator();
  SynthGenerator(SynthGenerator&&) noexcept;
  SynthGenerator& operator=(SynthGenerator&&) noexcept;

  // Everything but the tensors: shape, lengths, tokens, segments, source.
  const TraceMeta& meta() const;
  const SynthLayout& layout() const;
  // Queries, keys and values of `layer` over all total_len positions (no pre-RoPE tensors).
  LayerTensors Layer(int layer) const;
  // The same into `out`, reusing its buffers where their shapes already match (fresh memory
  // costs a page fault per 4 KiB; see traces::WriteTraceByLayer).
  void Layer(int layer, LayerTensors* out) const;

 private:
  struct State;
  std::unique_ptr<const State> state_;
};

// The whole trace in memory: SynthGenerator(shape, params, threads).Layer(l) for every l.
SynthTrace GenerateSynthetic(const models::ModelShape& shape,
                             const SynthParams& params,
                             int threads = 0);

}  // namespace kvsim::traces::synthetic
