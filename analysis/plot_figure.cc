#include "analysis/plot_figure.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include "analysis/plot_gnuplot.h"
#include "common/error.h"

namespace kvsim::analysis::plot_internal {

std::string Num(double value) { return fmt::format("{}", value); }

namespace {

constexpr auto& kPalette = kPlotPalette;
constexpr std::array<int, 6> kPointTypes = {7, 5, 9, 11, 13, 15};  // filled shapes

std::string Style(const Series& series, int policy_index, Draw draw) {
  switch (series.role) {
    case Role::kBound:
      return fmt::format("with {} lc rgb \"#9a9a9a\" lw 7 pt 7 ps 0.9",
                         draw == Draw::kErrorBars ? "yerrorlines" : "linespoints");
    case Role::kReference:
      return "with lines lc rgb \"#000000\" lw 2 dt 2";
    case Role::kTotal:
      return "with steps lc rgb \"#000000\" lw 3";
    case Role::kMarker:
      return "with points lc rgb \"#D62728\" pt 6 ps 3 lw 3";
    case Role::kPolicy:
      break;
  }
  const auto color = kPalette[static_cast<std::size_t>(policy_index) % kPalette.size()];
  const int point = kPointTypes[static_cast<std::size_t>(policy_index) % kPointTypes.size()];
  switch (draw) {
    case Draw::kSteps:
      return fmt::format("with steps lc rgb \"{}\" lw 2", color);
    case Draw::kImpulses:
      return fmt::format("with impulses lc rgb \"{}\" lw 4", color);
    case Draw::kErrorBars:
      return fmt::format("with yerrorlines lc rgb \"{}\" lw 2 pt {} ps 1.1", color, point);
    case Draw::kLinesPoints:
      break;
  }
  return fmt::format("with linespoints lc rgb \"{}\" lw 2 pt {} ps 1.1", color, point);
}

std::string Using(const Series& series, const Axes& axes) {
  const std::string y = axes.y_divisor == 1.0 ? "2" : fmt::format("($2/{})", Num(axes.y_divisor));
  if (axes.draw == Draw::kErrorBars && series.rows.front().size() == 4) {
    if (axes.y_divisor != 1.0) {
      return fmt::format("1:{0}:($3/{1}):($4/{1})", y, Num(axes.y_divisor));
    }
    return "1:2:3:4";
  }
  return "1:" + y;
}

std::string AxisCommands(const Axes& axes) {
  std::string s = "set grid back lc rgb \"#d9d9d9\" lw 1\n";
  s += "set xlabel " + GnuplotString(axes.x_label) + "\n";
  s += "set ylabel " + GnuplotString(axes.y_label) + "\n";
  if (axes.log_x) s += "set logscale x 2\n";
  if (axes.log_y) s += "set logscale y 10\n";
  if (!axes.x_tics.empty()) {
    std::vector<std::string> tics;
    for (double x : axes.x_tics) tics.push_back(fmt::format("\"{:.4g}\" {}", x, Num(x)));
    s += fmt::format("set xtics ({})\n", fmt::join(tics, ", "));
  }
  s += "set yrange " + axes.y_range + "\n";
  // Keep points off the frame on autoscaled axes (offsets do not move a fixed range).
  s += axes.pad_x ? "set offsets graph 0.03, graph 0.03, graph 0.03, graph 0.03\n"
                  : "set offsets 0, 0, graph 0.03, graph 0.03\nset autoscale xfix\n";
  return s + axes.extra;
}

GnuplotFigure BuildFigure(FigureSpec spec) {
  // A panel with nothing to draw (a metric that does not apply) is left out, not drawn empty.
  std::erase_if(spec.panels, [](const Panel& p) { return p.series.empty(); });
  // A policy keeps its colour in every panel: index by sorted label over the whole figure.
  std::set<std::string> policy_labels = spec.colour_order;
  for (const Panel& panel : spec.panels) {
    for (const Series& series : panel.series) {
      if (series.role == Role::kPolicy) policy_labels.insert(series.label);
    }
  }
  auto policy_index = [&](const std::string& label) {
    return static_cast<int>(std::distance(policy_labels.begin(), policy_labels.find(label)));
  };

  GnuplotFigure figure;
  figure.name = spec.name;
  figure.data =
      fmt::format("# {}\n# blocks: one per series (gnuplot index), y in raw units\n\n", spec.title);
  int block = 0;
  std::vector<std::string> panel_plots;
  // (label, style) of every series for the shared key, first appearance first.
  std::vector<std::pair<std::string, std::string>> key_entries;
  for (const Panel& panel : spec.panels) {
    std::vector<std::string> clauses;
    for (const Series& series : panel.series) {
      if (series.rows.empty()) continue;
      if (!panel.title.empty()) figure.data += "# panel: " + panel.title + "\n";
      figure.data += "# series: " + series.label + "\n# columns: " + series.columns + "\n";
      for (const auto& row : series.rows) {
        std::vector<std::string> cells;
        for (double v : row) cells.push_back(Num(v));
        figure.data += fmt::format("{}\n", fmt::join(cells, " "));
      }
      figure.data += "\n\n";
      const std::string style = Style(series, policy_index(series.label), spec.axes.draw);
      clauses.push_back(fmt::format("DATA index {} using {} {} title {}", block,
                                    Using(series, spec.axes), style, GnuplotString(series.label)));
      if (std::none_of(key_entries.begin(), key_entries.end(),
                       [&](const auto& e) { return e.first == series.label; })) {
        key_entries.emplace_back(series.label, style);
      }
      ++block;
    }
    panel_plots.push_back(
        clauses.empty() ? "" : "plot " + fmt::format("{}", fmt::join(clauses, ", \\\n     ")));
  }

  std::string& s = figure.script;
  s += AxisCommands(spec.axes);
  if (spec.panels.size() == 1) {
    s += "set title " + GnuplotString(spec.title) + " font \",13\"\n";
    if (spec.axes.key) {
      s += "set key outside right top vertical Left reverse samplen 3 spacing 1.2\n";
    } else {
      s += "unset key\n";
    }
    s += panel_plots.front() + "\n";
    return figure;
  }
  const bool key_panel = spec.axes.key && !key_entries.empty();
  const int cells = static_cast<int>(spec.panels.size()) + (key_panel ? 1 : 0);
  // Up to three cells in one row; more in a near-square grid.
  const int cols =
      cells <= 3 ? cells
                 : std::min(6, static_cast<int>(std::ceil(std::sqrt(static_cast<double>(cells)))));
  const int rows = (cells + cols - 1) / cols;
  figure.width_px = std::max(960, 380 * cols);
  figure.height_px = std::max(600, 300 * rows + 60);
  s += fmt::format("set multiplot layout {},{} title {} font \",14\"\n", rows, cols,
                   GnuplotString(spec.title));
  s += "unset key\n";
  for (std::size_t p = 0; p < spec.panels.size(); ++p) {
    s += "set title " + GnuplotString(spec.panels[p].title) + "\n";
    s += panel_plots[p] + "\n";
  }
  if (key_panel) {
    s += "unset title\nunset xlabel\nunset ylabel\nunset border\nunset tics\nunset grid\n"
         "unset logscale\nunset arrow\nunset label\nset xrange [0:1]\nset yrange [0:1]\n"
         "set key center center vertical Left reverse samplen 3 spacing 1.3\n";
    std::vector<std::string> clauses;
    for (const auto& [label, style] : key_entries) {
      // yerrorlines needs data columns; a plain line and point carry the same colour.
      std::string key_style = style;
      const std::string err = "yerrorlines";
      if (const auto at = key_style.find(err); at != std::string::npos) {
        key_style.replace(at, err.size(), "linespoints");
      }
      clauses.push_back(fmt::format("NaN {} title {}", key_style, GnuplotString(label)));
    }
    s += fmt::format("plot {}\n", fmt::join(clauses, ", \\\n     "));
  }
  s += "unset multiplot\n";
  return figure;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Validation helpers.

void CheckEachRow(const CsvTable& t,
                  const std::vector<std::string_view>& integer_columns,
                  const std::vector<std::string_view>& number_columns,
                  const std::vector<std::string_view>& optional_columns,
                  const std::vector<std::string_view>& text_columns) {
  for (std::size_t r = 0; r < t.num_rows(); ++r) {
    for (auto name : integer_columns) t.Integer(r, t.Column(name));
    for (auto name : number_columns) t.Number(r, t.Column(name));
    for (auto name : optional_columns) t.OptionalNumber(r, t.Column(name));
    for (auto name : text_columns) {
      if (t.Text(r, t.Column(name)).empty()) {
        ThrowInputError("{}:{}: column '{}' is empty (expected a name)", t.source(), t.Line(r),
                        name);
      }
    }
  }
}

void RequireAtLeast(const CsvTable& t, std::size_t row, std::string_view column, double min) {
  const double v = t.Number(row, t.Column(column));
  if (v < min) {
    ThrowInputError("{}:{}: column '{}': {} is below the minimum {}", t.source(), t.Line(row),
                    column, Num(v), Num(min));
  }
}

void RequireRows(const CsvTable& t) {
  if (t.num_rows() == 0) ThrowInputError("{}: no data rows (only a header)", t.source());
}

// log2 x axis when the values span more than 8x (budgets and cache sizes are usually powers
// of two); explicit tics at the values themselves when there are few enough to label.
void ChooseXAxis(const std::vector<Panel>& panels, Axes& axes, bool explicit_tics) {
  std::set<double> xs;
  for (const Panel& panel : panels) {
    for (const Series& series : panel.series) {
      if (series.role == Role::kReference) continue;
      for (const auto& row : series.rows) xs.insert(row[0]);
    }
  }
  if (xs.empty()) return;
  axes.log_x = *xs.begin() > 0 && *xs.rbegin() / *xs.begin() > 8.0;
  if (explicit_tics && xs.size() <= 10) axes.x_tics.assign(xs.begin(), xs.end());
}

// Points sorted by x; a reference series with a single x is drawn across the panel's x range.
void FinishPanel(Panel& panel) {
  double x_min = INFINITY;
  double x_max = -INFINITY;
  for (Series& series : panel.series) {
    std::sort(series.rows.begin(), series.rows.end());
    for (const auto& row : series.rows) {
      x_min = std::min(x_min, row[0]);
      x_max = std::max(x_max, row[0]);
    }
  }
  for (Series& series : panel.series) {
    if (series.role == Role::kReference && series.rows.size() == 1 && x_max > x_min) {
      const double y = series.rows.front()[1];
      series.rows = {{x_min, y}, {x_max, y}};
    }
  }
  std::stable_sort(panel.series.begin(), panel.series.end(), [](const Series& a, const Series& b) {
    auto rank = [](Role r) { return r == Role::kBound ? 0 : r == Role::kPolicy ? 1 : 2; };
    return rank(a.role) < rank(b.role);
  });
  std::erase_if(panel.series, [](const Series& s) { return s.rows.empty(); });
}

std::vector<PlottedFigure> RenderAll(const std::vector<FigureSpec>& specs,
                                     const std::filesystem::path& out_dir) {
  // Build every script before drawing any, so a data problem stops before the first image.
  std::vector<GnuplotFigure> figures;
  for (const FigureSpec& spec : specs) figures.push_back(BuildFigure(spec));
  std::vector<PlottedFigure> plotted;
  for (std::size_t i = 0; i < figures.size(); ++i) {
    RenderFigure(figures[i], out_dir);
    const std::string& name = specs[i].name;
    plotted.push_back({name, specs[i].title, out_dir / (name + ".png"), out_dir / (name + ".svg"),
                       out_dir / (name + ".dat")});
  }
  return plotted;
}

bool HasSeries(const std::vector<Panel>& panels) {
  return std::any_of(panels.begin(), panels.end(),
                     [](const Panel& p) { return !p.series.empty(); });
}

}  // namespace kvsim::analysis::plot_internal
