#include "analysis/plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include "analysis/plot_gnuplot.h"
#include "common/error.h"

namespace kvsim::analysis {
namespace {

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

Axes MakeAxes(std::string x_label, std::string y_label) {
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

constexpr auto& kPalette = kPlotPalette;
constexpr std::array<int, 6> kPointTypes = {7, 5, 9, 11, 13, 15};  // filled shapes

std::string Num(double value) { return fmt::format("{}", value); }

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

// ---------------------------------------------------------------------------------------------
// sweep.csv

constexpr std::string_view kFull = "full";
constexpr std::string_view kOracle = "oracle";

// Every column of sweep.csv; the first eight are identifiers, the rest metrics.
constexpr std::array<std::string_view, 27> kSweepColumns = {"trace",
                                                            "policy",
                                                            "params",
                                                            "budget",
                                                            "budget_tokens",
                                                            "regime",
                                                            "layer",
                                                            "steps",
                                                            "mass_recall_mean",
                                                            "mass_recall_p5",
                                                            "mass_recall_p50",
                                                            "mass_recall_p95",
                                                            "rel_l2_error_mean",
                                                            "rel_l2_error_p5",
                                                            "rel_l2_error_p50",
                                                            "rel_l2_error_p95",
                                                            "cosine_mean",
                                                            "cosine_p5",
                                                            "cosine_p50",
                                                            "cosine_p95",
                                                            "top1_recall_mean",
                                                            "top8_recall_mean",
                                                            "top32_recall_mean",
                                                            "resident_tokens_mean",
                                                            "resident_tokens_peak",
                                                            "kv_bytes_mean",
                                                            "kv_bytes_peak"};

void ValidateSweep(const CsvTable& t) {
  t.RequireColumns({kSweepColumns.begin(), kSweepColumns.end()});
  RequireRows(t);
  std::vector<std::string_view> optional(kSweepColumns.begin() + 8, kSweepColumns.end());
  CheckEachRow(t, {"steps"}, {"budget_tokens"}, optional, {"trace", "policy", "budget", "regime"});
  const std::size_t layer = t.Column("layer");
  std::map<std::tuple<std::string, std::string, std::string, std::string, std::string, std::string>,
           int>
      seen;
  for (std::size_t r = 0; r < t.num_rows(); ++r) {
    if (t.Text(r, layer) != "all" && t.Integer(r, layer) < 0) {
      ThrowInputError("{}:{}: column 'layer': '{}' is not a layer index or 'all'", t.source(),
                      t.Line(r), t.Text(r, layer));
    }
    if (t.Number(r, t.Column("budget_tokens")) <= 0) {
      ThrowInputError("{}:{}: column 'budget_tokens': {} is not positive", t.source(), t.Line(r),
                      t.Text(r, t.Column("budget_tokens")));
    }
    auto key = std::make_tuple(t.Text(r, t.Column("trace")), t.Text(r, t.Column("policy")),
                               t.Text(r, t.Column("params")), t.Text(r, t.Column("budget")),
                               t.Text(r, t.Column("regime")), t.Text(r, layer));
    const auto [it, inserted] = seen.emplace(key, t.Line(r));
    if (!inserted) {
      ThrowInputError(
          "{}:{}: duplicate row for trace '{}', policy '{}', params '{}', budget "
          "'{}', regime '{}', layer '{}' (first on line {})",
          t.source(), t.Line(r), std::get<0>(key), std::get<1>(key), std::get<2>(key),
          std::get<3>(key), std::get<4>(key), std::get<5>(key), it->second);
    }
  }
}

struct SweepContext {
  const CsvTable& table;
  bool several_regimes = false;
};

std::string SweepLabel(const SweepContext& ctx, std::size_t row, bool oracle_is_upper_bound) {
  const CsvTable& t = ctx.table;
  const std::string& policy = t.Text(row, t.Column("policy"));
  std::string label = policy;
  if (policy == kFull) label = "full cache";
  if (policy == kOracle && oracle_is_upper_bound) label = "oracle (upper bound)";
  const std::string& params = t.Text(row, t.Column("params"));
  if (!params.empty()) label += " (" + params + ")";
  if (ctx.several_regimes) label += " [" + t.Text(row, t.Column("regime")) + "]";
  return label;
}

// One series per policy label: rows of `layer`, averaged over traces per budget string; x is
// `x_column` (the budget, or the resident KV bytes for an equal-memory view).
Panel SweepPanel(const SweepContext& ctx,
                 std::string title,
                 std::string_view layer,
                 std::string_view metric,
                 bool oracle_is_upper_bound,
                 std::string_view x_column = "budget_tokens") {
  const CsvTable& t = ctx.table;
  struct Sums {
    double x = 0, y = 0;
    int nx = 0, ny = 0;
  };
  std::map<std::string, std::map<std::string, Sums>> cells;  // label -> budget -> sums
  std::map<std::string, Role> roles;
  for (std::size_t r = 0; r < t.num_rows(); ++r) {
    if (t.Text(r, t.Column("layer")) != layer) continue;
    const std::string label = SweepLabel(ctx, r, oracle_is_upper_bound);
    const std::string& policy = t.Text(r, t.Column("policy"));
    roles[label] = policy == kFull     ? Role::kReference
                   : policy == kOracle ? Role::kBound
                                       : Role::kPolicy;
    // A row without an x (an empty kv_bytes_mean) is left out of this panel only.
    const std::optional<double> x = t.OptionalNumber(r, t.Column(x_column));
    if (!x) continue;
    Sums& sums = cells[label][t.Text(r, t.Column("budget"))];
    sums.x += *x;
    ++sums.nx;
    if (const auto y = t.OptionalNumber(r, t.Column(metric))) {
      sums.y += *y;
      ++sums.ny;
    }
  }
  Panel panel;
  panel.title = std::move(title);
  for (const auto& [label, by_budget] : cells) {
    Series series;
    series.label = label;
    series.role = roles[label];
    series.columns = fmt::format("{} {}", x_column, metric);
    for (const auto& [budget, sums] : by_budget) {
      if (sums.ny == 0) continue;
      series.rows.push_back({sums.x / sums.nx, sums.y / sums.ny});
    }
    panel.series.push_back(std::move(series));
  }
  FinishPanel(panel);
  return panel;
}

bool HasSeries(const std::vector<Panel>& panels) {
  return std::any_of(panels.begin(), panels.end(),
                     [](const Panel& p) { return !p.series.empty(); });
}

constexpr std::string_view kBudgetAxis = "KV budget (tokens per layer and KV head)";

std::vector<FigureSpec> SweepFigures(const CsvTable& t) {
  ValidateSweep(t);
  SweepContext ctx{t};
  std::set<std::string> regimes, traces;
  for (std::size_t r = 0; r < t.num_rows(); ++r) {
    regimes.insert(t.Text(r, t.Column("regime")));
    traces.insert(t.Text(r, t.Column("trace")));
  }
  ctx.several_regimes = regimes.size() > 1;
  const std::string scope = traces.size() == 1 ? "trace " + *traces.begin()
                                               : fmt::format("mean over {} traces", traces.size());
  const std::string regime = regimes.size() == 1 ? ", " + *regimes.begin() + " regime" : "";

  std::vector<FigureSpec> specs;
  auto add = [&](std::string name, std::string title, std::vector<Panel> panels, Axes axes) {
    if (!HasSeries(panels)) return;
    ChooseXAxis(panels, axes, /*explicit_tics=*/true);
    specs.push_back({std::move(name), std::move(title), std::move(panels), std::move(axes), {}});
  };
  Axes recall_axes = MakeAxes(std::string(kBudgetAxis),
                              "attention-mass recall (fraction of full-cache mass, mean)");
  recall_axes.y_range = "[0:1.02]";
  add("recall_vs_budget",
      fmt::format("Attention-mass recall vs KV budget (all layers; {}{})", scope, regime),
      {SweepPanel(ctx, "", "all", "mass_recall_mean", true)}, recall_axes);

  // Equal memory (issue 13): a token budget is not a memory budget (quantized tiers, windows
  // above the budget, protected layers), so recall is also drawn against the bytes each cell
  // really held.
  Axes bytes_axes = MakeAxes("resident KV bytes, all layers (mean over decode steps)",
                             "attention-mass recall (fraction of full-cache mass, mean)");
  bytes_axes.y_range = "[0:1.02]";
  if (t.HasColumn("kv_bytes_mean")) {
    std::vector<Panel> panels = {
        SweepPanel(ctx, "", "all", "mass_recall_mean", true, "kv_bytes_mean")};
    if (HasSeries(panels)) {
      ChooseXAxis(panels, bytes_axes, /*explicit_tics=*/false);
      specs.push_back({"recall_vs_kv_bytes",
                       fmt::format("Attention-mass recall vs resident KV bytes (all layers; {}{})",
                                   scope, regime),
                       std::move(panels),
                       bytes_axes,
                       {}});
    }
  }

  Axes error_axes =
      MakeAxes(std::string(kBudgetAxis), "relative L2 error of the attention output (mean)");
  error_axes.y_range = "[0:*]";
  add("output_error_vs_budget",
      fmt::format("Attention-output error vs KV budget (all layers; {}{})", scope, regime),
      {SweepPanel(ctx, "", "all", "rel_l2_error_mean", false)}, error_axes);

  std::vector<Panel> topk;
  for (int k : {1, 8, 32}) {
    topk.push_back(SweepPanel(ctx, fmt::format("top-{} recall", k), "all",
                              fmt::format("top{}_recall_mean", k), true));
  }
  Axes topk_axes = MakeAxes("KV budget (tokens)", "fraction of full top-k tokens resident");
  topk_axes.y_range = "[0:1.02]";
  add("topk_recall_vs_budget",
      fmt::format("Top-k recall vs KV budget (all layers; {}{})", scope, regime), std::move(topk),
      topk_axes);

  std::set<std::int64_t> layers;
  for (std::size_t r = 0; r < t.num_rows(); ++r) {
    if (t.Text(r, t.Column("layer")) != "all") layers.insert(t.Integer(r, t.Column("layer")));
  }
  std::vector<Panel> by_layer;
  for (std::int64_t layer : layers) {
    by_layer.push_back(SweepPanel(ctx, fmt::format("layer {}", layer), std::to_string(layer),
                                  "mass_recall_mean", true));
  }
  Axes layer_axes = MakeAxes("KV budget (tokens)", "mass recall");
  layer_axes.y_range = "[0:1.02]";
  add("recall_by_layer",
      fmt::format("Attention-mass recall vs KV budget, per layer ({}{})", scope, regime),
      std::move(by_layer), layer_axes);
  std::set<std::string> labels;
  for (const FigureSpec& spec : specs) {
    for (const Panel& panel : spec.panels) {
      for (const Series& series : panel.series) {
        if (series.role == Role::kPolicy) labels.insert(series.label);
      }
    }
  }
  for (FigureSpec& spec : specs) spec.colour_order = labels;
  if (specs.empty()) {
    ThrowInputError(
        "{}: no metric values to plot (every mass_recall_mean, rel_l2_error_mean and "
        "top-k field is empty)",
        t.source());
  }
  return specs;
}

// ---------------------------------------------------------------------------------------------
// memory.csv

constexpr std::array<std::string_view, 5> kMemoryCategories = {
    "kv_full", "kv_quantized", "quant_metadata", "policy_state", "prefill_transient"};

std::vector<FigureSpec> MemoryFigures(const CsvTable& t) {
  t.RequireColumns({"step", "phase", "category", "layer", "bytes"});
  RequireRows(t);
  CheckEachRow(t, {"step", "layer"}, {"bytes"}, {}, {"category"});
  const std::size_t step_c = t.Column("step"), phase_c = t.Column("phase"),
                    cat_c = t.Column("category"), layer_c = t.Column("layer"),
                    bytes_c = t.Column("bytes");
  std::optional<std::int64_t> first_decode;
  bool has_prefill = false;
  for (std::size_t r = 0; r < t.num_rows(); ++r) {
    const std::string& phase = t.Text(r, phase_c);
    if (phase != "prefill" && phase != "decode") {
      ThrowInputError("{}:{}: column 'phase': '{}' is not 'prefill' or 'decode'", t.source(),
                      t.Line(r), phase);
    }
    RequireAtLeast(t, r, "bytes", 0);
    RequireAtLeast(t, r, "step", 0);
    const std::int64_t step = t.Integer(r, step_c);
    if (phase == "decode") first_decode = std::min(first_decode.value_or(step), step);
    has_prefill = has_prefill || phase == "prefill";
  }
  // Categories in RESULTS_FORMAT.md order, then any others by name.
  std::vector<std::string> categories;
  std::set<std::string> present;
  for (std::size_t r = 0; r < t.num_rows(); ++r) present.insert(t.Text(r, cat_c));
  for (auto c : kMemoryCategories) {
    if (present.erase(std::string(c))) categories.emplace_back(c);
  }
  categories.insert(categories.end(), present.begin(), present.end());

  std::vector<std::size_t> order(t.num_rows());
  for (std::size_t r = 0; r < order.size(); ++r) order[r] = r;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return t.Integer(a, step_c) < t.Integer(b, step_c);
  });
  std::map<std::pair<std::string, std::int64_t>, double> current;  // (category, layer) -> bytes
  std::map<std::string, double> category_bytes;
  std::map<std::string, Series> series;
  for (const auto& c : categories) series[c] = Series{c, Role::kPolicy, "step bytes", {}};
  Series total{"total", Role::kTotal, "step bytes", {}};
  double peak = -1;
  double peak_step = 0;
  for (std::size_t i = 0; i < order.size();) {
    const std::int64_t step = t.Integer(order[i], step_c);
    for (; i < order.size() && t.Integer(order[i], step_c) == step; ++i) {
      const std::size_t r = order[i];
      const std::string& cat = t.Text(r, cat_c);
      double& slot = current[{cat, t.Integer(r, layer_c)}];
      category_bytes[cat] += t.Number(r, bytes_c) - slot;
      slot = t.Number(r, bytes_c);
    }
    double sum = 0;
    for (const auto& c : categories) {
      series[c].rows.push_back({static_cast<double>(step), category_bytes[c]});
      sum += category_bytes[c];
    }
    total.rows.push_back({static_cast<double>(step), sum});
    if (sum > peak) {
      peak = sum;
      peak_step = static_cast<double>(step);
    }
  }
  const std::array<std::pair<double, std::string_view>, 4> units = {
      {{1024.0 * 1024 * 1024, "GiB"}, {1024.0 * 1024, "MiB"}, {1024.0, "KiB"}, {1.0, "bytes"}}};
  auto unit = units.back();
  for (const auto& u : units) {
    if (peak >= u.first) {
      unit = u;
      break;
    }
  }
  Axes axes = MakeAxes("simulated step (token position)", fmt::format("memory ({})", unit.second));
  axes.y_divisor = unit.first;
  axes.y_range = "[0:*]";
  axes.draw = Draw::kSteps;
  axes.pad_x = false;
  if (first_decode && has_prefill) {
    axes.extra = fmt::format(
        "set arrow from {0}, graph 0 to {0}, graph 1 nohead dt 3 lc rgb \"#555555\"\n"
        "set label \" decode starts\" at {0}, graph 0.97 left tc rgb \"#555555\"\n",
        *first_decode);
  }
  Panel panel;
  for (const auto& c : categories) panel.series.push_back(std::move(series[c]));
  if (categories.size() > 1) panel.series.push_back(std::move(total));
  panel.series.push_back(Series{
      fmt::format("peak {:.3g} {} at step {}", peak / unit.first, unit.second, Num(peak_step)),
      Role::kMarker,
      "step bytes",
      {{peak_step, peak}}});
  return {{"memory_timeline",
           "KV-cache memory over a replay (summed over layers)",
           {std::move(panel)},
           std::move(axes),
           {}}};
}

// ---------------------------------------------------------------------------------------------
// recurrence.csv

std::vector<FigureSpec> RecurrenceFigures(const CsvTable& t) {
  t.RequireColumns({"layer", "interval", "count"});
  RequireRows(t);
  CheckEachRow(t, {"layer", "interval", "count"}, {}, {}, {});
  std::map<std::int64_t, std::map<std::int64_t, double>> counts;  // layer -> interval -> count
  for (std::size_t r = 0; r < t.num_rows(); ++r) {
    RequireAtLeast(t, r, "layer", 0);
    RequireAtLeast(t, r, "interval", 1);
    RequireAtLeast(t, r, "count", 0);
    counts[t.Integer(r, t.Column("layer"))][t.Integer(r, t.Column("interval"))] +=
        static_cast<double>(t.Integer(r, t.Column("count")));
  }
  std::vector<Panel> panels;
  double min_count = INFINITY, max_count = 0;
  for (const auto& [layer, by_interval] : counts) {
    Series series{"gaps", Role::kPolicy, "interval count", {}};
    for (const auto& [interval, count] : by_interval) {
      series.rows.push_back({static_cast<double>(interval), count});
      if (count > 0) min_count = std::min(min_count, count);
      max_count = std::max(max_count, count);
    }
    panels.push_back(Panel{fmt::format("layer {}", layer), {std::move(series)}});
  }
  Axes axes = MakeAxes("recurrence interval (decode steps)", "gaps (count)");
  axes.draw = Draw::kImpulses;
  axes.key = false;
  axes.log_y = max_count > 0 && max_count / min_count > 1000;
  axes.y_range = axes.log_y ? "[0.8:*]" : "[0:*]";
  ChooseXAxis(panels, axes, /*explicit_tics=*/false);
  axes.log_x = axes.log_x && axes.x_tics.empty();
  return {{"recurrence_hist",
           "Recurrence intervals of important tokens, per layer",
           std::move(panels),
           std::move(axes),
           {}}};
}

// ---------------------------------------------------------------------------------------------
// paging_mrc.csv and paging_predictions.csv

struct StreamSelection {
  std::vector<std::size_t> rows;
  bool merged = false;  // only the `merged` stream's rows
  std::string scope;    // how the selection reads in a title
};

// Rows of the `merged` stream if there is one, else all rows.
StreamSelection SelectStream(const CsvTable& t) {
  const std::size_t stream_c = t.Column("stream");
  std::vector<std::size_t> merged, all;
  std::set<std::string> streams;
  for (std::size_t r = 0; r < t.num_rows(); ++r) {
    all.push_back(r);
    streams.insert(t.Text(r, stream_c));
    if (t.Text(r, stream_c) == "merged") merged.push_back(r);
  }
  if (!merged.empty()) return {merged, true, "stream merged"};
  if (streams.size() == 1) return {all, false, "stream " + *streams.begin()};
  return {all, false, fmt::format("{} streams pooled", streams.size())};
}

std::string ModeTitle(const std::string& mode) {
  if (mode == "offload") return "offload mode (a fault fetches the page back)";
  if (mode == "evict") return "evict mode (a missed page is lost)";
  return mode + " mode";
}

std::vector<FigureSpec> PagingMrcFigures(const CsvTable& t) {
  t.RequireColumns({"stream", "mode", "policy", "cache_size", "requests", "faults", "miss_ratio",
                    "opt_faults", "competitive_ratio", "fetched_bytes"});
  RequireRows(t);
  CheckEachRow(t, {"cache_size", "requests", "faults", "opt_faults"},
               {"miss_ratio", "fetched_bytes"}, {"competitive_ratio"},
               {"stream", "mode", "policy"});
  for (std::size_t r = 0; r < t.num_rows(); ++r) RequireAtLeast(t, r, "cache_size", 1);
  const StreamSelection selection = SelectStream(t);
  const std::size_t mode_c = t.Column("mode"), policy_c = t.Column("policy"),
                    size_c = t.Column("cache_size"), stream_c = t.Column("stream");
  struct Sums {
    double faults = 0, requests = 0;
    int rows = 0;
    std::size_t first_row = 0;
  };
  // mode -> policy -> size -> sums
  std::map<std::string, std::map<std::string, std::map<std::int64_t, Sums>>> cells;
  // mode -> size -> stream -> (opt_faults, requests): OPT once per stream, whatever the policy.
  std::map<std::string, std::map<std::int64_t, std::map<std::string, std::pair<double, double>>>>
      opt;
  for (std::size_t r : selection.rows) {
    const std::string& mode = t.Text(r, mode_c);
    const std::int64_t size = t.Integer(r, size_c);
    Sums& s = cells[mode][t.Text(r, policy_c)][size];
    if (s.rows == 0) s.first_row = r;
    s.faults += static_cast<double>(t.Integer(r, t.Column("faults")));
    s.requests += static_cast<double>(t.Integer(r, t.Column("requests")));
    ++s.rows;
    opt[mode][size].emplace(
        t.Text(r, stream_c),
        std::make_pair(static_cast<double>(t.Integer(r, t.Column("opt_faults"))),
                       static_cast<double>(t.Integer(r, t.Column("requests")))));
    if (selection.merged && s.rows > 1) {
      ThrowInputError(
          "{}:{}: duplicate row for stream 'merged', mode '{}', policy '{}', "
          "cache_size {} (first on line {})",
          t.source(), t.Line(r), mode, t.Text(r, policy_c), size, t.Line(s.first_row));
    }
  }
  std::vector<std::string> modes;
  for (std::string_view m : {"offload", "evict"}) {
    if (cells.count(std::string(m))) modes.emplace_back(m);
  }
  for (const auto& [mode, unused] : cells) {
    if (mode != "offload" && mode != "evict") modes.push_back(mode);
  }
  std::vector<Panel> panels;
  for (const std::string& mode : modes) {
    Panel panel{ModeTitle(mode), {}};
    for (const auto& [policy, by_size] : cells[mode]) {
      const bool is_opt = policy == "opt";
      Series series{is_opt ? "opt (Belady, lower bound)" : policy,
                    is_opt ? Role::kBound : Role::kPolicy,
                    "cache_size miss_ratio",
                    {}};
      for (const auto& [size, s] : by_size) {
        // One row: the file's own miss_ratio; pooled streams: faults over requests.
        const double miss = s.rows == 1      ? t.Number(s.first_row, t.Column("miss_ratio"))
                            : s.requests > 0 ? s.faults / s.requests
                                             : NAN;
        if (!std::isnan(miss)) series.rows.push_back({static_cast<double>(size), miss});
      }
      panel.series.push_back(std::move(series));
    }
    if (!cells[mode].count("opt")) {
      Series series{"opt (offline optimum, from opt_faults)",
                    Role::kBound,
                    "cache_size opt_faults/requests",
                    {}};
      for (const auto& [size, by_stream] : opt[mode]) {
        double faults = 0, requests = 0;
        for (const auto& [stream, fr] : by_stream) {
          faults += fr.first;
          requests += fr.second;
        }
        if (requests > 0) series.rows.push_back({static_cast<double>(size), faults / requests});
      }
      panel.series.push_back(std::move(series));
    }
    FinishPanel(panel);
    panels.push_back(std::move(panel));
  }
  Axes axes = MakeAxes("cache size (pages)", "miss ratio (faults / requests)");
  axes.y_range = "[0:*]";
  ChooseXAxis(panels, axes, /*explicit_tics=*/true);
  return {{"paging_mrc",
           fmt::format("Miss-ratio curves ({})", selection.scope),
           std::move(panels),
           std::move(axes),
           {}}};
}

std::vector<FigureSpec> PagingPredictionFigures(const CsvTable& t) {
  t.RequireColumns({"stream", "policy", "cache_size", "error_rate", "seed", "faults", "opt_faults",
                    "eta0", "eta1"});
  RequireRows(t);
  CheckEachRow(t, {"cache_size", "seed", "faults", "opt_faults"}, {"error_rate", "eta0", "eta1"},
               {}, {"stream", "policy"});
  for (std::size_t r = 0; r < t.num_rows(); ++r) {
    const double rate = t.Number(r, t.Column("error_rate"));
    if (rate < 0 || rate > 1) {
      ThrowInputError("{}:{}: column 'error_rate': {} is not a probability in [0, 1]", t.source(),
                      t.Line(r), t.Text(r, t.Column("error_rate")));
    }
  }
  const StreamSelection selection = SelectStream(t);
  // size -> policy -> error_rate -> seed -> (faults, opt_faults) summed over streams
  std::map<
      std::int64_t,
      std::map<std::string, std::map<double, std::map<std::int64_t, std::pair<double, double>>>>>
      cells;
  for (std::size_t r : selection.rows) {
    auto& slot = cells[t.Integer(r, t.Column("cache_size"))][t.Text(r, t.Column("policy"))]
                      [t.Number(r, t.Column("error_rate"))][t.Integer(r, t.Column("seed"))];
    slot.first += static_cast<double>(t.Integer(r, t.Column("faults")));
    slot.second += static_cast<double>(t.Integer(r, t.Column("opt_faults")));
  }
  std::vector<Panel> panels;
  for (const auto& [size, by_policy] : cells) {
    Panel panel{fmt::format("cache size {} pages", size), {}};
    double opt_sum = 0;
    int opt_n = 0;
    for (const auto& [policy, by_rate] : by_policy) {
      Series series{policy, Role::kPolicy, "error_rate faults_mean faults_min faults_max", {}};
      for (const auto& [rate, by_seed] : by_rate) {
        double sum = 0, lo = INFINITY, hi = -INFINITY;
        for (const auto& [seed, f] : by_seed) {
          sum += f.first;
          lo = std::min(lo, f.first);
          hi = std::max(hi, f.first);
          opt_sum += f.second;
          ++opt_n;
        }
        series.rows.push_back({rate, sum / static_cast<double>(by_seed.size()), lo, hi});
      }
      panel.series.push_back(std::move(series));
    }
    panel.series.push_back(Series{"OPT (Belady) faults",
                                  Role::kReference,
                                  "error_rate opt_faults_mean",
                                  {{0.0, opt_sum / opt_n}}});
    FinishPanel(panel);
    panels.push_back(std::move(panel));
  }
  Axes axes = MakeAxes("prediction error rate (bit-flip probability)", "faults (mean over seeds)");
  axes.y_range = "[0:*]";
  axes.draw = Draw::kErrorBars;
  ChooseXAxis(panels, axes, /*explicit_tics=*/true);
  return {
      {"paging_predictions",
       fmt::format("Faults vs prediction error ({}; bars: min to max over seeds)", selection.scope),
       std::move(panels),
       std::move(axes),
       {}}};
}

std::vector<FigureSpec> FigureSpecs(const CsvTable& table, ResultKind kind) {
  switch (kind) {
    case ResultKind::kSweep:
      return SweepFigures(table);
    case ResultKind::kMemory:
      return MemoryFigures(table);
    case ResultKind::kRecurrence:
      return RecurrenceFigures(table);
    case ResultKind::kPagingMrc:
      return PagingMrcFigures(table);
    case ResultKind::kPagingPredictions:
      return PagingPredictionFigures(table);
  }
  KVSIM_ASSERT(false, "unknown ResultKind {}", static_cast<int>(kind));
  return {};
}

}  // namespace

std::string_view ResultKindName(ResultKind kind) {
  switch (kind) {
    case ResultKind::kSweep:
      return "sweep";
    case ResultKind::kMemory:
      return "memory";
    case ResultKind::kRecurrence:
      return "recurrence";
    case ResultKind::kPagingMrc:
      return "paging_mrc";
    case ResultKind::kPagingPredictions:
      return "paging_predictions";
  }
  KVSIM_ASSERT(false, "unknown ResultKind {}", static_cast<int>(kind));
  return "";
}

ResultKind ParseResultKind(std::string_view name) {
  for (ResultKind kind : {ResultKind::kSweep, ResultKind::kMemory, ResultKind::kRecurrence,
                          ResultKind::kPagingMrc, ResultKind::kPagingPredictions}) {
    if (ResultKindName(kind) == name) return kind;
  }
  ThrowInputError(
      "--kind '{}' is not a result kind (expected sweep, memory, recurrence, "
      "paging_mrc or paging_predictions)",
      name);
}

ResultKind DetectResultKind(const CsvTable& table) {
  // Each kind's most distinctive column (RESULTS_FORMAT.md); the full schema is checked later.
  if (table.HasColumn("mass_recall_mean")) return ResultKind::kSweep;
  if (table.HasColumn("error_rate")) return ResultKind::kPagingPredictions;
  if (table.HasColumn("miss_ratio")) return ResultKind::kPagingMrc;
  if (table.HasColumn("interval")) return ResultKind::kRecurrence;
  if (table.HasColumn("category") && table.HasColumn("bytes")) return ResultKind::kMemory;
  ThrowInputError(
      "{}: cannot tell which result file this is from its header ({}); expected the "
      "columns of sweep.csv, memory.csv, recurrence.csv, paging_mrc.csv or "
      "paging_predictions.csv (analysis/RESULTS_FORMAT.md), or pass --kind",
      table.source(), fmt::join(table.header(), ","));
}

SweepSummary SummarizeSweep(const CsvTable& table, std::string_view metric) {
  ValidateSweep(table);
  table.Column(metric);
  SweepContext ctx{table};
  std::set<std::string> regimes;
  for (std::size_t r = 0; r < table.num_rows(); ++r)
    regimes.insert(table.Text(r, table.Column("regime")));
  ctx.several_regimes = regimes.size() > 1;
  const Panel panel = SweepPanel(ctx, "", "all", metric, /*oracle_is_upper_bound=*/false);
  std::set<double> budgets;
  for (const Series& series : panel.series) {
    for (const auto& row : series.rows) budgets.insert(row[0]);
  }
  SweepSummary summary;
  summary.budget_tokens.assign(budgets.begin(), budgets.end());
  for (const Series& series : panel.series) {
    summary.labels.push_back(series.label);
    auto& values = summary.values.emplace_back(budgets.size());
    for (const auto& row : series.rows) {
      values[static_cast<std::size_t>(std::distance(budgets.begin(), budgets.find(row[0])))] =
          row[1];
    }
  }
  return summary;
}

void ValidateResults(const CsvTable& table, ResultKind kind) { FigureSpecs(table, kind); }

std::vector<PlottedFigure> PlotResults(const CsvTable& table,
                                       ResultKind kind,
                                       const std::filesystem::path& out_dir) {
  return RenderAll(FigureSpecs(table, kind), out_dir);
}

}  // namespace kvsim::analysis
