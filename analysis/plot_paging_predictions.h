#pragma once
// `kvsim plot` figure of the per-type prediction-error sweep of `kvsim paging` (PREFIX_eta.csv,
// analysis/RESULTS_FORMAT.md), after "Paging with Succinct Predictions" (Antoniadis et al., ICML
// 2023): one row of three panels per cache size, every prediction policy a line,
//  - faults / OPT against eta0 / OPT (the perfect bits at x = 0: consistency; the slope:
//    smoothness in wrong "keep" bits), the least-squares slope (extra faults per error) in the
//    legend;
//  - the same against eta1 / OPT (wrong "discard" bits);
//  - faults / OPT against the adversarial budget (robustness), with k (the bound every marking
//    algorithm keeps) dashed.
// The `merged` stream if the file has one, else every stream pooled (faults, OPT and error
// counts summed per policy, size, model, rate and seed). Kept apart from analysis/plot.cc; same
// files per figure (<name>.png, .svg, .dat) through RenderFigure.
#include <filesystem>
#include <vector>

#include "analysis/csv.h"
#include "analysis/plot.h"

namespace kvsim::analysis {

// True for PREFIX_eta.csv (its `error_model` column).
bool IsPagingEtaTable(const CsvTable& table);

// Checks the table as PlotPagingEta does, drawing nothing. Throws InputError.
void ValidatePagingEta(const CsvTable& table);

// Validates the whole table first (columns, numbers, models, rates), then draws `paging_eta`;
// throws InputError naming the file, line and column of a bad field.
std::vector<PlottedFigure> PlotPagingEta(const CsvTable& table, const std::filesystem::path& dir);

}  // namespace kvsim::analysis
