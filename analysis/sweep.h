#pragma once
// Sweeps: every (trace, policy, budget) cell replayed layer by layer, in parallel, sharing the
// expensive per-layer work across cells (full-cache attention, prompt attention statistics).
//
// Engine (issue 11): a trace file is read one layer at a time. Cross-layer policies (CAKE, D2O)
// first get a planning pass over the layers' prompt statistics. Then, per layer, every cell
// advances in lockstep through blocks of decode steps: the block's full-cache attention is
// computed once (FullAttentionStream, parallel over query heads), every cell replays the block
// (parallel over cells; each takes its resident logits from the block), and the block is
// dropped. Peak memory is one layer's tensors + one block + per-cell state (resident positions,
// policy state, metric samples), whatever the decode length. Rows are assembled in plan order,
// so the numbers are identical for any thread count and any block size.
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "analysis/result_table.h"
#include "policies/policy_params.h"
#include "sim/budget.h"
#include "sim/memory_ledger.h"
#include "traces/trace.h"

namespace kvsim::analysis {

struct PolicySpec {
  std::string name;
  policies::PolicyParams params;
};

struct SweepPlan {
  std::vector<std::string> traces;  // trace file paths (Run() reads them)
  std::vector<PolicySpec> policies;
  std::vector<sim::Budget> budgets;
  sim::ReplayOptions options;
  int threads = 0;          // 0 = every core TBB sees
  int64_t block_steps = 0;  // decode steps per streamed block; 0 = automatic (memory-bounded)
  // Cells take their pristine entries' logits from the shared full-cache block (fast). false:
  // each cell computes q . k over its own resident keys, as the engine before the streamed one
  // did. The two differ only in float rounding of the logits, which can flip exact ties between
  // pooled scores (PyramidKV, the LAQ oracles on the stories260K trace: up to 3e-3 in a
  // percentile); with false, kvsim 0.1's sweep of that trace is reproduced to the last digit.
  bool share_logits = true;
  bool progress = false;  // progress bar on stderr (drawn only on a terminal)
  // A cell's `all` row needs every layer's samples, so a sweep keeps them to the end: cells x
  // layers x decode steps x query heads floats. When that estimate exceeds this many bytes,
  // finished layers' metric and ledger samples wait in an anonymous temporary file
  // (common/spill_file.h) and come back one cell at a time; the rows are identical either way.
  // 0 = always spill (when there is more than one layer), -1 = never.
  int64_t spill_threshold_bytes = int64_t{256} << 20;
  // Keep each cell's merged memory ledger in SweepResult::ledgers (`kvsim replay` writes it as
  // memory.csv); `kvsim sweep` does not need them and turns this off.
  bool keep_ledgers = true;

  // Throws InputError if a list is empty, a policy is unknown or its parameters are invalid.
  void Validate() const;
  int EffectiveThreads() const;
};

// Reads a sweep file (TOML). Keys: traces = ["a.h5", ...] (relative to the file's directory),
// budgets = ["256", "0.25p", 512] (strings or integers), regime = "bounded" | "prefill",
// gqa = "kv-head" | "query-head", evict = "after-attend" | "before-attend", seed = 0,
// threads = 0, and either policies = ["full", "h2o"] or [[policy]] tables with name = "h2o" and
// an optional params = { recent_ratio = 0.3 } (values: strings, numbers or booleans).
// Throws InputError naming the file and the key for anything else.
SweepPlan ReadSweepFile(const std::filesystem::path& path);

struct CellKey {
  std::string policy;
  std::string params;  // non-default key=value;...
  sim::Budget budget;
};

struct SweepResult {
  ResultTable table;
  // Per cell (policy-major, then budget), per trace in order: the layers' ledgers merged. Empty
  // unless SweepPlan::keep_ledgers.
  std::vector<sim::MemoryLedger> ledgers;
  std::vector<CellKey> cells;
  double wall_seconds = 0.0;
};

// The plan's cells: policy-major, then budget (the order of sweep.csv's rows for one trace).
// Throws InputError for an unknown policy or invalid parameters.
std::vector<CellKey> PlanCells(const SweepPlan& plan);

// Replays every cell of `plan` on an in-memory trace named `trace_name` in the CSV.
SweepResult RunSweepOnTrace(const SweepPlan& plan,
                            const traces::Trace& trace,
                            std::string_view trace_name);
// Reads each plan trace (one at a time) and replays every cell on it.
SweepResult RunSweep(const SweepPlan& plan);
// Replays the cells [first_cell, first_cell + num_cells) of PlanCells(plan) on one trace file
// (the unit of a distributed sweep, analysis/sweep_units.h). The rows equal those cells' rows in
// RunSweep, bit for bit: cells do not interact.
SweepResult RunSweepCells(const SweepPlan& plan,
                          const std::string& trace_path,
                          int first_cell,
                          int num_cells);

// How a sweep ran, beyond the plan: recorded in sweep.json. These fields (with `threads` and
// `wall_seconds`) describe the run, not its results: they may differ between runs whose
// sweep.csv is byte-identical.
struct SweepRunInfo {
  int ranks = 1;
  int cells_resumed = 0;  // (trace, cell) pairs read back from the journal
  std::vector<std::pair<std::string, std::string>> failures;  // (unit, error), --keep-going
};

// sweep.csv and sweep.json (analysis/RESULTS_FORMAT.md) in `dir`, each written atomically.
void WriteSweepOutputs(const std::filesystem::path& dir,
                       const SweepPlan& plan,
                       const SweepResult& result,
                       std::string_view command,
                       const SweepRunInfo& run = {});
// memory.csv: one row per ledger sample, sorted by (step, layer, category).
void WriteMemoryCsv(const std::filesystem::path& path, const sim::MemoryLedger& ledger);

}  // namespace kvsim::analysis
