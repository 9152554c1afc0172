#pragma once
// Runs a serving scenario: for every cell (policy x rate x capacity) the schedule is simulated on
// token counts (scheduler.h), in parallel over cells (TBB; each cell owns its result slot, so
// the output is identical for any thread count). Then every request's open-loop attention
// metrics are measured by replaying its trace with its policy under the budget it had at each
// decode step (RequestRecord::decode_budgets, a sim::Budget::schedule), through the same sweep
// engine as `kvsim replay`; and once more at the smallest budget it ran under, a conservative
// bound. Identical replays are run once and shared. Under share = "global" with a policy that
// has token scores, each cell's schedule also replays its running sequences live
// (live_scores.h), with every trace held whole in memory.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/metrics.h"
#include "sim/serving/scenario.h"
#include "sim/serving/scheduler.h"

namespace kvsim::serving {

// Open-loop attention metrics of one replay (the `all` row of its sweep.csv cell).
struct ReplayQuality {
  int64_t budget_tokens = 0;  // replayed fixed budget per (layer, KV head); -1 for a schedule
  double mass_recall_mean = 0.0;
  double mass_recall_p5 = 0.0;
  double cosine_mean = 0.0;
  double top8_recall = 0.0;
};

struct CellSummary {
  int64_t requests = 0;
  int64_t completed = 0;
  int64_t rejected = 0;
  double end_s = 0.0;
  double output_tokens_per_s = 0.0;  // decode tokens of finished requests / end_s
  double requests_per_s = 0.0;
  // Percentiles p50 / p95 / p99 over completed requests.
  std::array<double, 3> latency_s{};  // arrival -> last token
  std::array<double, 3> ttft_s{};
  std::array<double, 3> tpot_s{};  // (finish - first token) / decode tokens
  std::array<double, 3> queue_s{};
  int64_t preemptions = 0;
  int64_t peak_bytes = 0;  // allocated (used + fragmentation)
  double peak_time_s = 0.0;
  double mean_fragmentation_bytes = 0.0;   // time-weighted over iterations
  double mean_recall = 0.0;                // mass_recall_mean over completed requests
  double mean_recall_at_min_budget = 0.0;  // the same, each replayed at its smallest budget
  // Little's law: time-averaged requests in system (iteration samples) vs arrival rate x mean
  // time in system, both over [0, end_s].
  double little_l = 0.0;
  double little_lambda_w = 0.0;
};

struct ServingCell {
  analysis::PolicySpec policy;
  double rate_per_s = 0.0;
  int64_t capacity_bytes = 0;
  OnFull on_full = OnFull::kQueue;  // as run (evict falls back to recompute for full)
  ScheduleResult schedule;
  // Per request (rejected: NaN): under the budgets it had at each decode step, and at the
  // smallest of them (a conservative bound).
  std::vector<ReplayQuality> quality;
  std::vector<ReplayQuality> quality_at_min;
  CellSummary summary;
};

struct ServingResult {
  std::vector<ServingCell> cells;  // policy-major, then rate, then capacity
  std::vector<std::string> trace_names;
  double wall_seconds = 0.0;
};

// REQUIRES scenario.Validate() passed. Throws InputError for unreadable traces or traces of
// different shapes (one pool serves one model).
ServingResult RunServing(const ServingScenario& scenario);

// serve_requests.csv, serve_pool.csv, serve_summary.csv and serve.json in `dir` (created if
// missing), each written atomically. Columns: analysis/RESULTS_FORMAT.md.
void WriteServingOutputs(const std::filesystem::path& dir,
                         const ServingScenario& scenario,
                         const ServingResult& result);

}  // namespace kvsim::serving
