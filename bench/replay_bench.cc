// Replay and sweep throughput on a Llama-3-8B-shaped random trace (4 of its 32 layers, 32 query
// heads, 8 KV heads, d = 128; 4096 prompt + 256 decode tokens): decode steps per second,
// attention GFLOP/s, and what a sweep of 8 policies x 6 budgets costs relative to one replay
// (the sweep shares each layer's full-cache attention and prompt statistics across its cells).
// Prints figures; never asserts on time.
#include <fmt/core.h>
#include <tbb/info.h>

#include <chrono>
#include <string>
#include <vector>

#include "analysis/sweep.h"
#include "models/model_shape.h"
#include "sim/random_trace.h"

namespace {

using kvsim::analysis::SweepPlan;
using kvsim::analysis::SweepResult;

constexpr int64_t kPrompt = 4096;
constexpr int64_t kDecode = 256;

SweepPlan Plan(const std::vector<std::string>& policies, const std::vector<std::string>& budgets) {
  SweepPlan plan;
  for (const std::string& p : policies) plan.policies.push_back({p, {}});
  for (const std::string& b : budgets) plan.budgets.push_back(kvsim::sim::Budget::Parse(b, "b"));
  return plan;
}

// FLOPs of the attention a sweep performed: every replayed step's q.K over the resident set and
// its weighted sum of V (4 d per resident token and query head), plus the full-cache reference
// (computed once per layer and query head).
double AttentionFlops(const SweepResult& result, const kvsim::models::ModelShape& shape) {
  double flops = 0.0;
  for (const auto& row : result.table.rows()) {
    if (row.layer == "all") continue;
    flops += row.resident_tokens_mean * static_cast<double>(row.steps) * shape.q_heads * 4.0 *
             shape.head_dim;
  }
  const double total_len = static_cast<double>(kPrompt + kDecode);
  const double full_per_step = 0.5 * (2.0 * static_cast<double>(kPrompt) + kDecode) / total_len;
  flops += shape.layers * static_cast<double>(shape.q_heads) * kDecode * total_len * 4.0 *
           shape.head_dim * full_per_step;
  return flops;
}

void Report(const char* label, const SweepResult& result, const kvsim::models::ModelShape& shape) {
  const double layer_steps = static_cast<double>(result.cells.size()) * shape.layers * kDecode;
  fmt::print(
      "{:<28} {:>3} cells  {:>8.2f} s  {:>10.0f} layer-steps/s  {:>7.0f} model-steps/s  "
      "{:>6.1f} attention GFLOP/s\n",
      label, result.cells.size(), result.wall_seconds, layer_steps / result.wall_seconds,
      layer_steps / shape.layers / result.wall_seconds,
      AttentionFlops(result, shape) / result.wall_seconds / 1e9);
}

}  // namespace

int main() {
  const kvsim::models::ModelShape shape =
      kvsim::models::WithLayers(kvsim::models::ShapePreset("llama-3-8b"), 4);
  fmt::print("replay_bench: {} cut to {} layers, prompt {}, decode {}, {} threads\n", shape.name,
             shape.layers, kPrompt, kDecode, tbb::info::default_concurrency());
  const auto t0 = std::chrono::steady_clock::now();
  const kvsim::traces::Trace trace = kvsim::sim::RandomTrace(shape, kPrompt, kPrompt + kDecode, 1);
  fmt::print("random trace generated in {:.2f} s\n",
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  const SweepResult single = kvsim::analysis::RunSweepOnTrace(Plan({"h2o"}, {"512"}), trace, "b");
  Report("single replay (h2o @ 512)", single, shape);

  const std::vector<std::string> policies = {"full", "random", "streaming", "h2o",
                                             "tova", "snapkv", "pyramidkv", "oracle"};
  const std::vector<std::string> budgets = {"64", "128", "256", "512", "1024", "2048"};
  const SweepResult sweep = kvsim::analysis::RunSweepOnTrace(Plan(policies, budgets), trace, "b");
  Report("sweep 8 policies x 6 budgets", sweep, shape);
  fmt::print(
      "sweep / single replay wall time: {:.2f} for {} cells ({:.3f} per cell; 1.0 per "
      "cell = no sharing)\n",
      sweep.wall_seconds / single.wall_seconds, sweep.cells.size(),
      sweep.wall_seconds / single.wall_seconds / static_cast<double>(sweep.cells.size()));
  return 0;
}
