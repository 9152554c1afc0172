#include "analysis/plot_serving.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>
#include <span>
#include <string>
#include <tuple>

#include "analysis/plot_gnuplot.h"
#include "common/error.h"

namespace kvsim::analysis {
namespace {

constexpr size_t kMaxPoolFigures = 16;
// The first seven colours: one per series before they repeat.
constexpr std::span<const std::string_view> kPalette(kPlotPalette.data(), 7);

std::string Num(double v) { return CsvWriter::Number(v); }

std::pair<double, std::string> Unit(double bytes) {
  if (bytes >= 1024.0 * 1024 * 1024) return {1024.0 * 1024 * 1024, "GiB"};
  if (bytes >= 1024.0 * 1024) return {1024.0 * 1024, "MiB"};
  if (bytes >= 1024.0) return {1024.0, "KiB"};
  return {1.0, "bytes"};
}

std::string CellLabel(const CsvTable& t, size_t row) {
  const std::string& params = t.Text(row, t.Column("params"));
  return fmt::format("{}{} rate {}/s capacity {} B ({})", t.Text(row, t.Column("policy")),
                     params.empty() ? "" : " (" + params + ")", t.Text(row, t.Column("rate_per_s")),
                     t.Text(row, t.Column("capacity_bytes")), t.Text(row, t.Column("on_full")));
}

PlottedFigure Render(GnuplotFigure figure, std::string title, const std::filesystem::path& dir) {
  RenderFigure(figure, dir);
  return {figure.name, std::move(title), dir / (figure.name + ".png"), dir / (figure.name + ".svg"),
          dir / (figure.name + ".dat")};
}

// A category column that older serve_pool.csv files (before quantized tiers) do not have: 0.
double OptionalBytes(const CsvTable& t, size_t row, const char* column) {
  if (!t.HasColumn(column)) return 0.0;
  const double v = t.Number(row, t.Column(column));
  if (v < 0.0) ThrowInputError("{}:{}: column '{}' is negative", t.source(), t.Line(row), column);
  return v;
}

std::vector<PlottedFigure> PoolFigures(const CsvTable& t, const std::filesystem::path& dir) {
  t.RequireColumns({"policy", "params", "rate_per_s", "capacity_bytes", "on_full", "time_s",
                    "kv_full_bytes", "fragmentation_bytes", "swapped_bytes"});
  if (t.num_rows() == 0) ThrowInputError("{}: no rows to plot", t.source());
  // Cells in file order: consecutive rows with the same key.
  std::vector<std::pair<size_t, size_t>> cells;  // [begin, end) rows
  const auto key = [&](size_t r) {
    return std::make_tuple(t.Text(r, 0), t.Text(r, 1), t.Text(r, 2), t.Text(r, 3));
  };
  for (size_t r = 0; r < t.num_rows(); ++r) {
    for (const char* c : {"time_s", "kv_full_bytes", "fragmentation_bytes", "swapped_bytes"}) {
      if (t.Number(r, t.Column(c)) < 0.0) {
        ThrowInputError("{}:{}: column '{}' is negative", t.source(), t.Line(r), c);
      }
    }
    (void)t.Number(r, t.Column("capacity_bytes"));
    if (cells.empty() || key(cells.back().first) != key(r)) cells.push_back({r, r});
    cells.back().second = r + 1;
  }
  std::vector<PlottedFigure> figures;
  for (size_t i = 0; i < cells.size() && i < kMaxPoolFigures; ++i) {
    const auto [begin, end] = cells[i];
    const double capacity = t.Number(begin, t.Column("capacity_bytes"));
    const auto [div, unit] = Unit(capacity);
    // Stacked by the ledger's categories (quantized tiers appear with KIVI), then fragmentation.
    std::string data = fmt::format(
        "# series: {}\n# columns: time_s kv_full plus_kv_quantized plus_quant_metadata "
        "plus_fragmentation swapped ({})\n",
        CellLabel(t, begin), unit);
    double peak = -1.0, peak_t = 0.0;
    for (size_t r = begin; r < end; ++r) {
      const double full = t.Number(r, t.Column("kv_full_bytes"));
      const double quantized = full + OptionalBytes(t, r, "kv_quantized_bytes");
      const double metadata = quantized + OptionalBytes(t, r, "quant_metadata_bytes");
      const double alloc = metadata + t.Number(r, t.Column("fragmentation_bytes"));
      const double time = t.Number(r, t.Column("time_s"));
      if (alloc > peak) {
        peak = alloc;
        peak_t = time;
      }
      data += fmt::format("{} {} {} {} {} {}\n", Num(time), Num(full / div), Num(quantized / div),
                          Num(metadata / div), Num(alloc / div),
                          Num(t.Number(r, t.Column("swapped_bytes")) / div));
    }
    GnuplotFigure f;
    f.name = cells.size() == 1 ? "serve_pool_timeline" : fmt::format("serve_pool_timeline_{}", i);
    f.data = data;
    f.script = fmt::format(
        "set title {title}\nset xlabel \"simulated time (s)\"\n"
        "set ylabel \"KV pool ({unit})\"\nset yrange [0:{ymax}]\nset key below horizontal\n"
        "set grid\n"
        "set arrow from graph 0, first {cap} to graph 1, first {cap} nohead dt 2 lc rgb "
        "\"#555555\"\n"
        "set label \" capacity\" at graph 0, first {cap} left offset 0,0.6 tc rgb \"#555555\"\n"
        "plot DATA u 1:2 with filledcurves y1=0 lc rgb \"{c0}\" title \"kv_full\", \\\n"
        "     DATA u 1:2:3 with filledcurves lc rgb \"{c3}\" title \"kv_quantized\", \\\n"
        "     DATA u 1:3:4 with filledcurves lc rgb \"{c4}\" title \"quant_metadata\", \\\n"
        "     DATA u 1:4:5 with filledcurves lc rgb \"{c1}\" title \"internal fragmentation\", "
        "\\\n"
        "     DATA u 1:6 with lines lw 2 lc rgb \"{c2}\" title \"swapped to host\", \\\n"
        "     '-' u 1:2 with points pt 7 ps 1.5 lc rgb \"#000000\" title {peak}\n"
        "{pt} {pv}\ne\n",
        fmt::arg("title", GnuplotString(CellLabel(t, begin))), fmt::arg("unit", unit),
        fmt::arg("ymax", Num(capacity / div * 1.12)), fmt::arg("cap", Num(capacity / div)),
        fmt::arg("c0", kPalette[0]), fmt::arg("c1", kPalette[1]), fmt::arg("c2", kPalette[2]),
        fmt::arg("c3", kPalette[3]), fmt::arg("c4", kPalette[4]),
        fmt::arg("peak", GnuplotString(
                             fmt::format("peak {:.3g} {} at {:.3g} s", peak / div, unit, peak_t))),
        fmt::arg("pt", Num(peak_t)), fmt::arg("pv", Num(peak / div)));
    figures.push_back(
        Render(std::move(f), "KV pool over simulated time: " + CellLabel(t, begin), dir));
  }
  return figures;
}

std::vector<PlottedFigure> SummaryFigures(const CsvTable& t, const std::filesystem::path& dir) {
  t.RequireColumns({"policy", "params", "rate_per_s", "capacity_bytes", "latency_p95_s",
                    "ttft_p95_s", "mean_recall"});
  if (t.num_rows() == 0) ThrowInputError("{}: no rows to plot", t.source());
  // Lines: (policy, params, capacity) -> rows sorted by rate.
  std::map<std::string, std::vector<std::array<std::optional<double>, 4>>> lines;
  for (size_t r = 0; r < t.num_rows(); ++r) {
    const std::string& params = t.Text(r, t.Column("params"));
    const std::string label = fmt::format("{}{} {} B", t.Text(r, t.Column("policy")),
                                          params.empty() ? "" : " (" + params + ")",
                                          t.Text(r, t.Column("capacity_bytes")));
    lines[label].push_back({t.Number(r, t.Column("rate_per_s")),
                            t.OptionalNumber(r, t.Column("latency_p95_s")),
                            t.OptionalNumber(r, t.Column("ttft_p95_s")),
                            t.OptionalNumber(r, t.Column("mean_recall"))});
  }
  std::string data;
  size_t index = 0;
  std::array<std::string, 3> plots;
  for (auto& [label, rows] : lines) {
    std::sort(rows.begin(), rows.end());
    data += fmt::format(
        "# series: {}\n# columns: rate_per_s latency_p95_s ttft_p95_s "
        "mean_recall\n",
        label);
    for (const auto& row : rows) {
      data += fmt::format("{} {} {} {}\n", Num(*row[0]), row[1] ? Num(*row[1]) : "NaN",
                          row[2] ? Num(*row[2]) : "NaN", row[3] ? Num(*row[3]) : "NaN");
    }
    data += "\n\n";
    for (size_t p = 0; p < plots.size(); ++p) {
      plots[p] += fmt::format(
          "{}DATA index {} u 1:{} with linespoints lw 2 pt 7 lc rgb \"{}\" "
          "title {}",
          index == 0 ? "plot " : ", \\\n     ", index, p + 2, kPalette[index % kPalette.size()],
          GnuplotString(label));
    }
    ++index;
  }
  GnuplotFigure f;
  f.name = "serve_vs_rate";
  f.data = data;
  f.width_px = 1500;
  f.height_px = 520;
  f.script = fmt::format(
      "set multiplot layout 1,3\nset grid\nset key top left\nset xlabel \"arrival rate "
      "(requests / simulated s)\"\n"
      "set title \"p95 latency\"\nset ylabel \"seconds\"\n{}\n"
      "set title \"p95 time to first token\"\nset ylabel \"seconds\"\n{}\n"
      "set title \"mean attention-mass recall\"\nset ylabel \"recall\"\nset yrange [0:1.05]\n{}\n"
      "unset multiplot\n",
      plots[0], plots[1], plots[2]);
  return {Render(std::move(f), "Latency and recall against the arrival rate", dir)};
}

}  // namespace

std::optional<ServingResultKind> DetectServingResultKind(const CsvTable& table) {
  if (table.HasColumn("kv_full_bytes") && table.HasColumn("fragmentation_bytes")) {
    return ServingResultKind::kPool;
  }
  if (table.HasColumn("latency_p95_s")) return ServingResultKind::kSummary;
  return std::nullopt;
}

std::vector<PlottedFigure> PlotServingResults(const CsvTable& table,
                                              ServingResultKind kind,
                                              const std::filesystem::path& out_dir) {
  return kind == ServingResultKind::kPool ? PoolFigures(table, out_dir)
                                          : SummaryFigures(table, out_dir);
}

}  // namespace kvsim::analysis
