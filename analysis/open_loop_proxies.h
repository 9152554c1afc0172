#pragma once
// The cheap open-loop numbers of one closed-loop run (sim/closed_loop.h): the full-cache run's
// own trace replayed with fresh instances of the same policy and budget through the open-loop
// engine (sim/replay.h + analysis/metrics.h), i.e. exactly what `kvsim replay` reports on a
// capture of that run. `kvsim closed-loop` prints them beside the real damage and `kvsim
// validate` correlates them with it.
#include <vector>

#include "analysis/metrics.h"
#include "models/llama_model.h"
#include "sim/closed_loop.h"

namespace kvsim::analysis {

struct OpenLoopProxies {
  // Per decode step, the mean over layers and query heads.
  std::vector<double> step_mass_recall;
  std::vector<double> step_rel_l2_error;
  std::vector<double> step_cosine;
  // Per layer, the mean over decode steps and query heads (the worst layer's is the minimum).
  std::vector<double> layer_mass_recall;
  // Every (layer, step, query head) sample in layer order, with the top-k recall sums.
  MetricSamples all;
};

// Replays `run.full_trace` with the policies `make_policy` builds (one per layer, as the closed
// loop does), the closed loop's budget and replay options; a model-in-the-loop policy is attached
// to `model` and the run's prompt state.
OpenLoopProxies ReplayOpenLoop(const models::LlamaModel& model,
                               const sim::ClosedLoopResult& run,
                               const sim::ClosedLoopOptions& options,
                               const sim::LayerPolicyFactory& make_policy);

}  // namespace kvsim::analysis
