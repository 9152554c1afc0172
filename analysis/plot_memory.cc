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

namespace kvsim::analysis::plot_internal {

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

}  // namespace kvsim::analysis::plot_internal
