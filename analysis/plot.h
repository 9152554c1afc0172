#pragma once
// `kvsim plot`: figures from the result CSVs of analysis/RESULTS_FORMAT.md, drawn by gnuplot
// (analysis/plot_gnuplot.h says why gnuplot).
//
// Every figure is three files in the output directory: <name>.png, <name>.svg and <name>.dat,
// the exact numbers gnuplot drew. The .dat holds one block per line series, blocks separated by
// two blank lines (gnuplot's `index`), each block headed by comment lines `# panel: <title>`
// (multi-panel figures only), `# series: <label>` and `# columns: <names>`.
//
// How the CSV becomes lines (decisions the format leaves open):
//  - sweep.csv: one line per (policy, params) (and regime, when the file holds both regimes).
//    Rows of several traces with the same budget are averaged, trace by trace with equal weight,
//    both on x (budget_tokens) and y. `full` is drawn dashed across the x range, `oracle` as a
//    thick grey line. Empty metric fields ("does not apply") are left out; a line with no
//    points is not drawn.
//  - memory.csv: bytes summed over layers per category; a (category, layer) keeps its last
//    sample until its next one, so sparse (change-only) ledgers add up correctly.
//  - paging CSVs: the `merged` stream if the file has one, else every stream pooled (faults and
//    requests summed).
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/csv.h"

namespace kvsim::analysis {

enum class ResultKind { kSweep, kMemory, kRecurrence, kPagingMrc, kPagingPredictions };

// "sweep", "memory", "recurrence", "paging_mrc", "paging_predictions": the file stems of
// RESULTS_FORMAT.md and the values of `kvsim plot --kind`.
std::string_view ResultKindName(ResultKind kind);
// Throws InputError listing the valid names.
ResultKind ParseResultKind(std::string_view name);
// Recognises the kind from the header's distinctive columns. Throws InputError naming the file
// if none matches.
ResultKind DetectResultKind(const CsvTable& table);

struct PlottedFigure {
  std::string name;   // file stem, e.g. "recall_vs_budget"
  std::string title;  // one line, for captions
  std::filesystem::path png, svg, data;
};

// The numbers of a sweep figure as a table: `metric` (a sweep.csv column) of the `layer = all`
// rows, one row per plotted line (same labels and trace averaging as the figures), one column
// per budget (budget_tokens, ascending). Validates the table like PlotResults.
struct SweepSummary {
  std::vector<double> budget_tokens;
  std::vector<std::string> labels;
  std::vector<std::vector<std::optional<double>>> values;  // [label][budget]
};
SweepSummary SummarizeSweep(const CsvTable& table, std::string_view metric);

// Checks `table` as PlotResults does, drawing nothing. Throws InputError.
void ValidateResults(const CsvTable& table, ResultKind kind);

// Draws every figure `kind` has into `out_dir` (which must exist). Validates the whole table
// (every column of the schema present, every number parseable) before drawing anything, so a
// malformed CSV leaves no image; each figure is then written atomically. Throws InputError.
std::vector<PlottedFigure> PlotResults(const CsvTable& table,
                                       ResultKind kind,
                                       const std::filesystem::path& out_dir);

}  // namespace kvsim::analysis
