#pragma once
// `kvsim plot` figure of `kvsim validate`'s validate_spearman.csv (analysis/RESULTS_FORMAT.md):
// one panel per closed-loop target; x = the open-loop proxies, y = oriented Spearman rho (> 0:
// the proxy ranks cells as the real damage does), all cells with the bootstrap interval as error
// bars, and one dashed line per budget (where the proxies stop being trustworthy shows as the
// small budgets' lines dropping). Kept apart from analysis/plot.cc; same files per figure
// (<name>.png, .svg, .dat) through RenderFigure.
#include <filesystem>
#include <vector>

#include "analysis/csv.h"
#include "analysis/plot.h"

namespace kvsim::analysis {

// True for validate_spearman.csv (its `oriented_rho` column).
bool IsValidityTable(const CsvTable& table);

// Checks the table as PlotValidity does, drawing nothing. Throws InputError.
void ValidateValidity(const CsvTable& table);

// Validates the whole table first (columns, numbers in [-1, 1] or empty), then draws
// `validate_spearman`; throws InputError naming the file, line and column of a bad field.
std::vector<PlottedFigure> PlotValidity(const CsvTable& table, const std::filesystem::path& dir);

}  // namespace kvsim::analysis
