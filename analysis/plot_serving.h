#pragma once
// `kvsim plot` figures of `kvsim serve` outputs (analysis/RESULTS_FORMAT.md, "Serving outputs"):
//  - serve_pool.csv: one figure per cell (policy, params, rate, capacity; the first 16 cells in
//    file order), the pool over simulated time stacked by category (kv_full, then internal
//    fragmentation on top), the capacity as a dashed line and the peak marked;
//  - serve_summary.csv: p95 latency, p95 time to first token and mean recall against the
//    arrival rate, one line per (policy, params, capacity).
// Kept apart from analysis/plot.cc (the replay figures); same files per figure (<name>.png,
// .svg, .dat) through RenderFigure.
#include <filesystem>
#include <optional>
#include <vector>

#include "analysis/csv.h"
#include "analysis/plot.h"

namespace kvsim::analysis {

enum class ServingResultKind { kPool, kSummary };

// Recognises serve_pool.csv (kv_full_bytes and fragmentation_bytes columns) and
// serve_summary.csv (latency_p95_s); nullopt for any other table.
std::optional<ServingResultKind> DetectServingResultKind(const CsvTable& table);

// Validates the whole table first (columns, numbers), then draws; throws InputError naming the
// file, line and column for a bad field.
std::vector<PlottedFigure> PlotServingResults(const CsvTable& table,
                                              ServingResultKind kind,
                                              const std::filesystem::path& out_dir);

}  // namespace kvsim::analysis
