// `kvsim stats TRACE [--force]`: computes the causal prompt column sums of every layer (the
// O(n^2) statistic of H2O, D2O, MiKV and LazyEviction) and stores them beside the trace as
// TRACE.stats.h5 (traces/FORMAT.md, "Prompt-statistics sidecar"), so replays need not recompute
// them. Skips the work when the sidecar is already current.
#include "apps/cmd_stats.h"

#include <fmt/core.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "apps/command.h"
#include "common/progress.h"
#include "sim/prefill_attention.h"
#include "traces/prompt_stats.h"
#include "traces/trace_io.h"

namespace kvsim::apps {

PromptStatsUpdate UpdatePromptStats(const std::string& trace, bool force, bool per_layer) {
  const auto start = std::chrono::steady_clock::now();
  const auto since = [](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
  };
  const traces::TraceReader reader(trace);
  const traces::TraceMeta& meta = reader.meta();
  const traces::PromptStatsShape shape = traces::PromptStatsShape::Of(meta);
  PromptStatsUpdate update;
  update.sidecar = traces::PromptStatsPath(trace).string();
  update.layers = shape.layers;
  // Layers stream into a temporary file; it is committed only if something was computed, so an
  // up-to-date sidecar is never rewritten.
  traces::PromptStatsWriter writer(trace, shape);
  ProgressBar progress("stats", shape.layers, /*enabled=*/per_layer);
  for (int l = 0; l < shape.layers; ++l) {
    const auto layer_start = std::chrono::steady_clock::now();
    const traces::LayerTensors tensors = reader.ReadLayer(l);
    const uint64_t hash = traces::PromptContentHash(tensors, meta.prompt_len);
    std::optional<traces::LayerPromptStats> stats;
    if (!force) {
      stats = traces::LoadPromptStats(trace, l, shape, hash, traces::OnStale::kQuiet);
    }
    const bool reused = stats.has_value();
    if (!reused) stats = traces::LayerPromptStats{sim::ComputeColumnSums(tensors, meta.prompt_len)};
    writer.AddLayer(l, hash, *stats);
    ++(reused ? update.reused : update.computed);
    progress.Advance();
    if (per_layer) {
      fmt::print("layer {}/{}: {} ({:.2f} s)\n", l + 1, shape.layers,
                 reused ? "up to date" : "computed", since(layer_start));
    }
  }
  progress.Finish();
  if (update.computed > 0) {
    writer.Commit();
    update.written = true;
  }
  update.seconds = since(start);
  return update;
}

void RegisterStatsCommand(CLI::App& app) {
  struct Args {
    std::string trace;
    bool force = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "stats",
      "Compute the causal prompt attention column sums of every layer (H2O, D2O, MiKV, "
      "LazyEviction's prefill scores; O(prompt^2) per layer) and store them beside the trace as "
      "TRACE.stats.h5, so that replays can read them instead of recomputing. Layers already "
      "stored for the same data are kept; the trace itself is never modified.");
  cmd->add_option("trace", args->trace, "trace file (HDF5, traces/FORMAT.md)")->required();
  cmd->add_flag("--force", args->force,
                "recompute every layer even if the sidecar is current (also replaces a corrupt "
                "sidecar)");
  cmd->callback([args] {
    const PromptStatsUpdate u = UpdatePromptStats(args->trace, args->force, /*per_layer=*/true);
    if (!u.written) {
      fmt::print("{}: up to date ({} layers; checked in {:.2f} s)\n", u.sidecar, u.layers,
                 u.seconds);
    } else {
      fmt::print("wrote {}: {} layers ({} computed, {} reused) in {:.2f} s\n", u.sidecar, u.layers,
                 u.computed, u.reused, u.seconds);
    }
  });
}

}  // namespace kvsim::apps
