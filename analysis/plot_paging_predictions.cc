#include "analysis/plot_paging_predictions.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <span>
#include <string>
#include <tuple>

#include "analysis/plot_gnuplot.h"
#include "common/error.h"
#include "sim/paging/predictions.h"

namespace kvsim::analysis {
namespace {

// The first seven colours: one per series before they repeat.
constexpr std::span<const std::string_view> kPalette(kPlotPalette.data(), 7);

std::string Num(double v) { return CsvWriter::Number(v); }

// Pooled numbers of one (policy, size, model, rate, seed).
struct Cell {
  double faults = 0, opt = 0, eta0 = 0, eta1 = 0;
};
// size -> policy -> model -> rate -> seed -> cell
using Cells = std::map<
    int64_t,
    std::map<std::string, std::map<std::string, std::map<double, std::map<int64_t, Cell>>>>>;

Cells ReadCells(const CsvTable& t) {
  t.RequireColumns({"stream", "policy", "cache_size", "error_model", "rate", "seed", "faults",
                    "opt_faults", "eta0", "eta1"});
  if (t.num_rows() == 0) ThrowInputError("{}: no rows to plot", t.source());
  const size_t stream_c = t.Column("stream");
  bool has_merged = false;
  for (size_t r = 0; r < t.num_rows(); ++r)
    has_merged = has_merged || t.Text(r, stream_c) == "merged";
  Cells cells;
  for (size_t r = 0; r < t.num_rows(); ++r) {
    const std::string& model = t.Text(r, t.Column("error_model"));
    if (model != "perfect" && model != "eta0" && model != "eta1" && model != "adversarial") {
      ThrowInputError(
          "{}:{}: column 'error_model': '{}', expected perfect, eta0, eta1 or adversarial",
          t.source(), t.Line(r), model);
    }
    const double rate = t.Number(r, t.Column("rate"));
    if (!(rate >= 0 && rate <= 1)) {
      ThrowInputError("{}:{}: column 'rate': {} is outside [0, 1]", t.source(), t.Line(r),
                      t.Text(r, t.Column("rate")));
    }
    const int64_t size = t.Integer(r, t.Column("cache_size"));
    if (size < 1) {
      ThrowInputError("{}:{}: column 'cache_size': {} is not a cache of at least one page",
                      t.source(), t.Line(r), size);
    }
    for (const char* c : {"faults", "opt_faults", "eta0", "eta1", "seed"}) {
      if (t.Integer(r, t.Column(c)) < 0) {
        ThrowInputError("{}:{}: column '{}' is negative", t.source(), t.Line(r), c);
      }
    }
    if (has_merged && t.Text(r, stream_c) != "merged") continue;
    Cell& cell =
        cells[size][t.Text(r, t.Column("policy"))][model][rate][t.Integer(r, t.Column("seed"))];
    cell.faults += static_cast<double>(t.Integer(r, t.Column("faults")));
    cell.opt += static_cast<double>(t.Integer(r, t.Column("opt_faults")));
    cell.eta0 += static_cast<double>(t.Integer(r, t.Column("eta0")));
    cell.eta1 += static_cast<double>(t.Integer(r, t.Column("eta1")));
  }
  return cells;
}

}  // namespace

bool IsPagingEtaTable(const CsvTable& table) { return table.HasColumn("error_model"); }

void ValidatePagingEta(const CsvTable& table) { ReadCells(table); }

std::vector<PlottedFigure> PlotPagingEta(const CsvTable& t, const std::filesystem::path& dir) {
  const Cells cells = ReadCells(t);
  // Panels drawn: the models the file has (perfect bits appear in both eta panels at x = 0).
  std::array<bool, 3> present{};
  for (const auto& [size, by_policy] : cells) {
    for (const auto& [policy, by_model] : by_policy) {
      present[0] = present[0] || by_model.count("eta0") > 0;
      present[1] = present[1] || by_model.count("eta1") > 0;
      present[2] = present[2] || by_model.count("adversarial") > 0;
    }
  }
  const auto columns = std::count(present.begin(), present.end(), true);
  if (columns == 0) {
    ThrowInputError("{}: only perfect-bit rows; nothing to draw against an error count",
                    t.source());
  }
  std::string data;
  std::string script = "set grid\nset key top left box opaque\n";
  int index = 0;
  for (const auto& [size, by_policy] : cells) {
    // Panels: eta0, eta1, adversarial.
    std::array<std::string, 3> plots;
    std::array<double, 3> ymax{};
    int colour = 0;
    for (const auto& [policy, by_model] : by_policy) {
      const std::string_view col = kPalette[static_cast<size_t>(colour++) % kPalette.size()];
      auto perfect = by_model.find("perfect");
      for (int panel = 0; panel < 3; ++panel) {
        const std::string model = panel == 0 ? "eta0" : panel == 1 ? "eta1" : "adversarial";
        auto it = by_model.find(model);
        if (it == by_model.end()) continue;
        // Points: perfect (x = 0) then each rate, means over seeds; the slope over every seed.
        std::vector<double> xs, ys;  // raw counts for the fit
        std::string block;
        auto add = [&](double rate, const std::map<int64_t, Cell>& by_seed) {
          double x = 0, y = 0, opt = 0;
          for (const auto& [seed, c] : by_seed) {
            const double errors = panel == 0 ? c.eta0 : c.eta1;
            x += panel == 2 ? rate : errors;
            y += c.faults;
            opt += c.opt;
            xs.push_back(errors);
            ys.push_back(c.faults);
          }
          if (opt <= 0) return;  // OPT made no fault: no ratio
          const double xm = panel == 2 ? rate : x / opt;
          block += fmt::format("{} {}\n", Num(xm), Num(y / opt));
          ymax[static_cast<size_t>(panel)] = std::max(ymax[static_cast<size_t>(panel)], y / opt);
        };
        if (panel < 2 && perfect != by_model.end()) add(0.0, perfect->second.begin()->second);
        for (const auto& [rate, by_seed] : it->second) {
          if (panel < 2 && rate == 0.0 && perfect != by_model.end()) continue;
          add(rate, by_seed);
        }
        if (block.empty()) continue;
        std::string label = policy;
        if (panel < 2) {
          const paging::LineFit fit = paging::FitLine(xs, ys);
          label += std::isnan(fit.slope) ? " (slope -)"
                                         : fmt::format(" (slope {:.2f} faults/error)", fit.slope);
        }
        data += fmt::format("# panel: cache {} pages, {}\n# series: {}\n# columns: {} {}\n", size,
                            model, label, panel == 2 ? "adversarial_budget" : model + "_over_opt",
                            "faults_over_opt");
        data += block + "\n\n";
        plots[static_cast<size_t>(panel)] +=
            fmt::format("{}DATA index {} u 1:2 with linespoints lw 2 pt 7 lc rgb \"{}\" title {}",
                        plots[static_cast<size_t>(panel)].empty() ? "plot " : ", \\\n     ", index,
                        col, GnuplotString(label));
        ++index;
      }
    }
    const std::array<std::string, 3> titles = {
        fmt::format("cache {}: wrong keeps (eta0); x = 0: perfect bits", size),
        fmt::format("cache {}: wrong discards (eta1); x = 0: perfect bits", size),
        // k (the marking bound) is drawn only when it does not flatten the lines.
        fmt::format("cache {}: adversarial bits ({}k = {})", size,
                    ymax[2] * 2 >= static_cast<double>(size) ? "dashed: " : "marking bound ",
                    size)};
    const std::array<std::string, 3> xlabels = {"eta0 / OPT faults", "eta1 / OPT faults",
                                                "adversarial error budget (fraction of requests)"};
    for (size_t p = 0; p < 3; ++p) {
      if (!present[p]) continue;
      script += fmt::format("set title {}\nset xlabel {}\nset ylabel \"faults / OPT\"\n",
                            GnuplotString(titles[p]), GnuplotString(xlabels[p]));
      if (plots[p].empty()) {
        // An empty frame (the constant lies outside the range), so the grid stays aligned.
        script +=
            "set label 99 \"not run\" at graph 0.5, graph 0.5 center\nset yrange [0:1]\n"
            "plot -1 notitle\nunset label 99\nset autoscale y\n";
        continue;
      }
      const bool k_line = p == 2 && ymax[2] * 2 >= static_cast<double>(size);
      if (k_line) {
        script += fmt::format(
            "set arrow 98 from graph 0, first {k} to graph 1, first {k} nohead dt 2 lw 1.5 "
            "lc rgb \"#000000\"\nset yrange [0:{top}]\n",
            fmt::arg("k", size),
            fmt::arg("top", Num(1.1 * std::max(ymax[2], static_cast<double>(size)))));
      }
      script += plots[p] + "\n";
      if (k_line) script += "unset arrow 98\nset autoscale y\n";
    }
  }
  GnuplotFigure f;
  f.name = "paging_eta";
  f.data = data;
  f.width_px = 550 * static_cast<int>(columns);
  f.height_px = 460 * static_cast<int>(cells.size());
  f.script =
      fmt::format("set multiplot layout {},{}\n{}unset multiplot\n", cells.size(), columns, script);
  RenderFigure(f, dir);
  return {{f.name,
           "Paging with succinct predictions: consistency, smoothness (per error type) and "
           "robustness",
           dir / (f.name + ".png"), dir / (f.name + ".svg"), dir / (f.name + ".dat")}};
}

}  // namespace kvsim::analysis
