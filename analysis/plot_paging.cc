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
// paging_mrc.csv and paging_predictions.csv

namespace {

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

}  // namespace

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

}  // namespace kvsim::analysis::plot_internal
