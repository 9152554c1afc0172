#pragma once
// Internals of `kvsim plot` (analysis/plot.h), shared by its files: the figure model (panels of
// line series, turned into a .dat file plus a gnuplot script, plot_figure.cc), validation helpers,
// and the figure builders of each result kind (plot.cc: sweep.csv; plot_memory.cc: memory.csv,
// recurrence.csv; plot_paging.cc: paging_mrc.csv, paging_predictions.csv). Not for other callers.
#include <filesystem>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "analysis/csv.h"
#include "analysis/plot.h"

namespace kvsim::analysis::plot_internal {

// ---------------------------------------------------------------------------------------------
// Figure model: panels of line series, turned into a .dat file plus a gnuplot script.

enum class Role {
  kPolicy,     // one of the compared policies: a palette colour and marker
  kBound,      // oracle / Belady: thick grey, drawn first so the policies stay visible on top
  kReference,  // the full cache or OPT's fault count: dashed black line
  kTotal,      // a sum of the other series: thick black
  kMarker,     // a single marked point (a peak)
};

enum class Draw { kLinesPoints, kSteps, kImpulses, kErrorBars };

struct Series {
  std::string label;
  Role role = Role::kPolicy;
  std::string columns;                    // names of the data columns, for the .dat header
  std::vector<std::vector<double>> rows;  // x, y[, y_low, y_high]
};

struct Panel {
  std::string title;
  std::vector<Series> series;
};

struct Axes {
  std::string x_label;
  std::string y_label;
  bool log_x = false;
  bool log_y = false;
  std::string y_range = "[*:*]";
  std::vector<double> x_tics;  // explicit tick positions; empty: gnuplot's
  double y_divisor = 1.0;      // the .dat keeps raw numbers; the plot divides y by this
  Draw draw = Draw::kLinesPoints;
  bool key = true;
  bool pad_x = true;  // leave a margin left and right of the data (off for time axes)
  std::string extra;  // commands for every data panel (arrows, labels)
};

inline Axes MakeAxes(std::string x_label, std::string y_label) {
  Axes axes;
  axes.x_label = std::move(x_label);
  axes.y_label = std::move(y_label);
  return axes;
}

struct FigureSpec {
  std::string name;
  std::string title;
  std::vector<Panel> panels;
  Axes axes;
  // Policy labels in palette order, shared by related figures so a policy keeps its colour
  // across them; empty: the figure's own labels, sorted.
  std::set<std::string> colour_order;
};

// Shortest text of a number, as gnuplot data and labels show it.
std::string Num(double value);

// Builds every figure's script first (a data problem stops before the first image), then draws.
std::vector<PlottedFigure> RenderAll(const std::vector<FigureSpec>& specs,
                                     const std::filesystem::path& out_dir);

// Validation: every row's listed columns parse as integers / numbers / optional numbers /
// non-empty names (InputError naming file, line and column otherwise).
void CheckEachRow(const CsvTable& t,
                  const std::vector<std::string_view>& integer_columns,
                  const std::vector<std::string_view>& number_columns,
                  const std::vector<std::string_view>& optional_columns,
                  const std::vector<std::string_view>& text_columns);
void RequireAtLeast(const CsvTable& t, std::size_t row, std::string_view column, double min);
void RequireRows(const CsvTable& t);

// Log x when the data spans more than 8x; explicit tics at the data's x when asked and few.
void ChooseXAxis(const std::vector<Panel>& panels, Axes& axes, bool explicit_tics);
// Points sorted by x; a reference series with a single x is drawn across the panel's x range.
void FinishPanel(Panel& panel);
bool HasSeries(const std::vector<Panel>& panels);

std::vector<FigureSpec> SweepFigures(const CsvTable& t);
std::vector<FigureSpec> MemoryFigures(const CsvTable& t);
std::vector<FigureSpec> RecurrenceFigures(const CsvTable& t);
std::vector<FigureSpec> PagingMrcFigures(const CsvTable& t);
std::vector<FigureSpec> PagingPredictionFigures(const CsvTable& t);

}  // namespace kvsim::analysis::plot_internal
