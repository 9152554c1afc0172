#pragma once
// The live replays behind share = "global" (sim/serving/README.md, Scheduler): while the
// scheduler runs, every decoding sequence's trace is replayed with its policy through the sweep
// engine (sim::LayerReplay, one per layer), one decode step at a time under the budget the pool
// gives it, so that the pool can read the policy's own token scores
// (EvictionPolicy::ResidentScores) across sequences. The replay is built exactly as the quality
// pass builds it (same setup, seeds, planning at the policy's own budget, and the pool's budgets
// as a schedule), so the quality replay afterwards makes the same evictions.
//
// Timing: the pool decides the shares of an iteration from the scores as of one decode step
// earlier (at the share for position P the state is through P - 2); then the sequence's state
// advances through the evict phase at P - 1 under the share just decided.
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "analysis/sweep.h"
#include "sim/replay.h"
#include "sim/serving/global_share.h"
#include "traces/trace.h"

namespace kvsim::serving {

struct LiveScoresInput {
  // By trace index: the whole trace in memory (read once and shared by every cell) and the
  // policy's own budget on it (SequenceShape::policy_budget_tokens).
  std::vector<const traces::Trace*> traces;
  std::vector<int64_t> own_budget_tokens;
  analysis::PolicySpec policy;
  sim::ReplayOptions options;      // as the quality pass replays (its seed)
  std::vector<int> request_trace;  // by request id
  // Tests: an observer for request `id`'s layer `layer` (may return null); it must outlive the
  // scorer.
  std::function<sim::ReplayObserver*(int64_t id, int layer)> observe = nullptr;
};

// The live replays hold every trace whole in memory as float32 (Q, K and V of every layer).
// Throws InputError, naming the first trace and the sizes, when the traces need more than
// `limit_bytes`: a clear refusal instead of dying in the allocator.
void CheckTracesFitInMemory(const std::vector<std::string>& paths,
                            const std::vector<traces::TraceMeta>& metas,
                            int64_t limit_bytes);

// True when `policy` ranks its victims by a score it can report (EvictionPolicy::ResidentScores).
bool PolicyHasScores(const analysis::PolicySpec& policy, const traces::TraceMeta& meta);

// The scorer of one schedule (one cell). REQUIRES PolicyHasScores. Not thread-safe: one
// schedule drives it.
std::unique_ptr<SequenceScorer> MakeLiveScorer(LiveScoresInput input);

}  // namespace kvsim::serving
