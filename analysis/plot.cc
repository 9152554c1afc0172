#include "analysis/plot.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include "analysis/plot_figure.h"
#include "analysis/plot_gnuplot.h"
#include "common/error.h"

namespace kvsim::analysis {
namespace plot_internal {
namespace {

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

constexpr std::string_view kBudgetAxis = "KV budget (tokens per layer and KV head)";

}  // namespace

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

}  // namespace plot_internal

namespace {

using namespace plot_internal;

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
