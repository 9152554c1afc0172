#include "analysis/plot_validity.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <optional>
#include <span>
#include <string>

#include "analysis/plot_gnuplot.h"
#include "common/error.h"

namespace kvsim::analysis {
namespace {

std::string Num(double v) { return CsvWriter::Number(v); }

struct Point {
  std::optional<double> rho, low, high;
};

// target -> group -> proxy (in file order) -> point.
struct Table {
  std::vector<std::string> targets, groups, proxies;  // in order of first appearance
  std::map<std::string, std::map<std::string, std::map<std::string, Point>>> points;
};

void AddOnce(std::vector<std::string>& list, const std::string& value) {
  if (std::find(list.begin(), list.end(), value) == list.end()) list.push_back(value);
}

Table ReadTable(const CsvTable& t) {
  t.RequireColumns({"proxy", "target", "group", "oriented_rho", "ci_low", "ci_high"});
  if (t.num_rows() == 0) ThrowInputError("{}: no rows to plot", t.source());
  Table table;
  for (size_t r = 0; r < t.num_rows(); ++r) {
    Point p;
    std::optional<double>* fields[] = {&p.rho, &p.low, &p.high};
    const char* names[] = {"oriented_rho", "ci_low", "ci_high"};
    for (size_t i = 0; i < 3; ++i) {
      *fields[i] = t.OptionalNumber(r, t.Column(names[i]));
      if (*fields[i] && !(**fields[i] >= -1.0 && **fields[i] <= 1.0)) {
        ThrowInputError("{}:{}: column '{}': {} is not a correlation in [-1, 1]", t.source(),
                        t.Line(r), names[i], t.Text(r, t.Column(names[i])));
      }
    }
    const std::string& target = t.Text(r, t.Column("target"));
    const std::string& group = t.Text(r, t.Column("group"));
    const std::string& proxy = t.Text(r, t.Column("proxy"));
    AddOnce(table.targets, target);
    AddOnce(table.groups, group);
    AddOnce(table.proxies, proxy);
    table.points[target][group][proxy] = p;
  }
  return table;
}

}  // namespace

bool IsValidityTable(const CsvTable& table) { return table.HasColumn("oriented_rho"); }

void ValidateValidity(const CsvTable& table) { ReadTable(table); }

std::vector<PlottedFigure> PlotValidity(const CsvTable& t, const std::filesystem::path& dir) {
  const Table table = ReadTable(t);
  std::string xtics;
  for (size_t i = 0; i < table.proxies.size(); ++i) {
    xtics += fmt::format("{}{} {}", i == 0 ? "" : ", ", GnuplotString(table.proxies[i]), i);
  }
  // Series per panel: "all" with error bars, then every budget group as a dashed line.
  std::vector<std::string> series;
  for (const std::string& g : table.groups) {
    if (g == "all" || g.rfind("budget=", 0) == 0) series.push_back(g);
  }
  std::string data;
  std::string script = fmt::format(
      "set grid ytics\nset key bottom left box opaque\nset yrange [-1:1]\n"
      "set xrange [-0.5:{}]\nset xtics ({}) rotate by 30 right\n"
      "set ylabel \"Spearman rho, oriented (> 0: proxy ranks as the damage)\"\n"
      "set arrow 97 from graph 0, first 0 to graph 1, first 0 nohead lc rgb \"#000000\"\n",
      Num(static_cast<double>(table.proxies.size()) - 0.5), xtics);
  int index = 0;
  for (const std::string& target : table.targets) {
    std::string plot;
    int colour = 0;
    for (const std::string& group : series) {
      const auto by_group = table.points.at(target).find(group);
      if (by_group == table.points.at(target).end()) continue;
      std::string block;
      for (size_t i = 0; i < table.proxies.size(); ++i) {
        const auto it = by_group->second.find(table.proxies[i]);
        if (it == by_group->second.end() || !it->second.rho) continue;
        const Point& p = it->second;
        block += fmt::format("{} {} {} {}\n", i, Num(*p.rho), Num(p.low.value_or(*p.rho)),
                             Num(p.high.value_or(*p.rho)));
      }
      if (block.empty()) continue;
      data += fmt::format(
          "# panel: {}\n# series: {}\n# columns: proxy_index oriented_rho ci_low "
          "ci_high\n{}\n\n",
          target, group, block);
      const bool all = group == "all";
      plot +=
          fmt::format("{}DATA index {} u 1:2{} {} lc rgb \"{}\" title {}",
                      plot.empty() ? "plot " : ", \\\n  ", index, all ? ":3:4" : "",
                      all ? "with yerrorbars pt 7 ps 1.3 lw 2" : "with linespoints dt 2 pt 6 lw 1",
                      all ? std::string_view("#000000")
                          : kPlotPalette[static_cast<size_t>(colour++) % kPlotPalette.size()],
                      GnuplotString(all ? "all cells (bootstrap CI)" : group));
      ++index;
    }
    script += fmt::format("set title {}\n", GnuplotString("target: " + target));
    script += plot.empty() ? "set label 99 \"no rows\" at graph 0.5, graph 0.5 center\n"
                             "plot -2 notitle\nunset label 99\n"
                           : plot + "\n";
  }
  const auto panels = table.targets.size();
  const size_t columns = panels < 2 ? 1 : 2;
  const size_t rows = (panels + columns - 1) / columns;
  GnuplotFigure f;
  f.name = "validate_spearman";
  f.data = data;
  f.width_px = 640 * static_cast<int>(columns);
  f.height_px = 480 * static_cast<int>(rows);
  f.script = fmt::format("set multiplot layout {},{}\n{}unset multiplot\n", rows, columns, script);
  RenderFigure(f, dir);
  return {{f.name, "How well the open-loop proxies rank the closed-loop damage",
           dir / (f.name + ".png"), dir / (f.name + ".svg"), dir / (f.name + ".dat")}};
}

}  // namespace kvsim::analysis
