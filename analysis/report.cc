#include "analysis/report.h"

#include <fmt/format.h>
#include <stdlib.h>

#include <algorithm>
#include <array>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>

#include "analysis/csv.h"
#include "analysis/plot.h"
#include "analysis/plot_serving.h"
#include "analysis/plot_validity.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "common/json_text.h"
#include "common/version.h"

namespace kvsim::analysis {
namespace {

constexpr std::array<std::string_view, 8> kResultFiles = {"sweep.csv",
                                                          "memory.csv",
                                                          "recurrence.csv",
                                                          "paging_mrc.csv",
                                                          "paging_predictions.csv",
                                                          "serve_pool.csv",
                                                          "serve_summary.csv",
                                                          "validate_spearman.csv"};

// Fields of sweep.json in RESULTS_FORMAT.md order; other fields follow alphabetically.
constexpr std::array<std::string_view, 10> kMetadataOrder = {
    "kvsim_version", "command", "traces",  "policies",     "budgets",
    "regime",        "seed",    "threads", "wall_seconds", "model"};

std::string Escape(std::string_view text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Base64(std::string_view bytes) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const auto n = static_cast<unsigned>(static_cast<unsigned char>(bytes[i])) << 16 |
                   static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 1])) << 8 |
                   static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 2]));
    out += kAlphabet[n >> 18 & 63];
    out += kAlphabet[n >> 12 & 63];
    out += kAlphabet[n >> 6 & 63];
    out += kAlphabet[n & 63];
  }
  if (i < bytes.size()) {
    const bool two = i + 1 < bytes.size();
    const auto n =
        static_cast<unsigned>(static_cast<unsigned char>(bytes[i])) << 16 |
        (two ? static_cast<unsigned>(static_cast<unsigned char>(bytes[i + 1])) << 8 : 0u);
    out += kAlphabet[n >> 18 & 63];
    out += kAlphabet[n >> 12 & 63];
    out += two ? kAlphabet[n >> 6 & 63] : '=';
    out += '=';
  }
  return out;
}

// A fresh private directory under the system temp dir, removed with its contents on destruction.
class ScratchDir {
 public:
  ScratchDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "kvsim-report-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      ThrowInputError("{}: cannot create a temporary directory for the figures", pattern);
    }
    path_ = pattern;
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

std::string JsonValueText(const nlohmann::json& value) {
  if (value.is_string()) return value.get<std::string>();
  if (value.is_array()) {
    std::vector<std::string> items;
    for (const auto& item : value) items.push_back(JsonValueText(item));
    return fmt::format("{}", fmt::join(items, ", "));
  }
  return JsonText(value);
}

std::string MetadataTable(const std::filesystem::path& path) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(ReadFileToString(path));
  } catch (const nlohmann::json::exception& e) {
    ThrowInputError("{}: not valid JSON ({})", path.string(), e.what());
  }
  if (!json.is_object()) ThrowInputError("{}: expected a JSON object at the top", path.string());
  std::string html = fmt::format("<h3>{}</h3>\n<table class=\"meta\">\n", Escape(path.string()));
  auto row = [&](const std::string& key) {
    html += fmt::format("<tr><th>{}</th><td>{}</td></tr>\n", Escape(key),
                        Escape(JsonValueText(json[key])));
  };
  for (std::string_view key : kMetadataOrder) {
    if (json.contains(key)) row(std::string(key));
  }
  for (const auto& [key, value] : json.items()) {  // nlohmann's object keeps keys sorted
    if (std::find(kMetadataOrder.begin(), kMetadataOrder.end(), key) == kMetadataOrder.end()) {
      row(key);
    }
  }
  return html + "</table>\n";
}

// One summary table of `metric` (layer = all rows). When the file has `worst_metric` (the worst
// layer's mean, issue 13), every cell shows it beside the mean: "mean (worst layer)".
std::string SummaryTable(const CsvTable& table,
                         std::string_view metric,
                         std::string_view worst_metric,
                         std::string_view title) {
  const SweepSummary summary = SummarizeSweep(table, metric);
  if (summary.labels.empty()) return "";
  std::optional<SweepSummary> worst;
  if (table.HasColumn(worst_metric)) worst = SummarizeSweep(table, worst_metric);
  std::string html = fmt::format(
      "<h3>{}{}</h3>\n<table class=\"summary\">\n<tr><th>policy \\ budget (tokens)</th>",
      Escape(title), worst ? " &mdash; mean over layers (worst layer)" : "");
  for (double budget : summary.budget_tokens) html += fmt::format("<th>{}</th>", budget);
  html += "</tr>\n";
  for (std::size_t i = 0; i < summary.labels.size(); ++i) {
    html += fmt::format("<tr><th>{}</th>", Escape(summary.labels[i]));
    for (std::size_t b = 0; b < summary.values[i].size(); ++b) {
      const auto& value = summary.values[i][b];
      if (!value) {
        html += "<td></td>";
        continue;
      }
      std::optional<double> w;
      if (worst) {  // matched by label and budget (a NaN worst value may drop a point)
        const auto li = std::find(worst->labels.begin(), worst->labels.end(), summary.labels[i]);
        const auto bi = std::find(worst->budget_tokens.begin(), worst->budget_tokens.end(),
                                  summary.budget_tokens[b]);
        if (li != worst->labels.end() && bi != worst->budget_tokens.end()) {
          w = worst->values[static_cast<std::size_t>(li - worst->labels.begin())]
                           [static_cast<std::size_t>(bi - worst->budget_tokens.begin())];
        }
      }
      html += w ? fmt::format("<td>{:.3f} ({:.3f})</td>", *value, *w)
                : fmt::format("<td>{:.3f}</td>", *value);
    }
    html += "</tr>\n";
  }
  return html + "</table>\n";
}

// The overall rows of a validate_spearman.csv: proxies x targets, "rho [low, high]".
// serve_summary.csv as a table: what each (policy, rate, capacity) cell delivered and lost.
std::string ServingSummaryTable(const CsvTable& table) {
  table.RequireColumns({"policy", "params", "rate_per_s", "capacity_bytes", "on_full",
                        "output_tokens_per_s", "latency_p95_s", "peak_bytes", "preemptions",
                        "mean_recall"});
  const auto number = [&](std::size_t r, const char* column, const char* format) {
    const std::optional<double> v = table.OptionalNumber(r, table.Column(column));
    return v ? fmt::format(fmt::runtime(format), *v) : std::string("-");
  };
  const bool has_bound = table.HasColumn("mean_recall_at_min_budget");
  std::string html = fmt::format(
      "<h3>Serving</h3>\n<p>From <code>{}</code>: throughput and latency in simulated time, the "
      "pool's peak, and the mean attention-mass recall of completed requests, each replayed "
      "under the budget it had at every decode step{}.</p>\n<table class=\"summary\">\n"
      "<tr><th>policy</th><th>rate/s</th><th>capacity (B)</th><th>reaction</th>"
      "<th>output tokens/s</th><th>p95 latency (s)</th><th>peak (B)</th><th>preemptions</th>"
      "<th>mean recall</th>{}</tr>\n",
      Escape(table.source()),
      has_bound ? " (and, as a conservative bound, at its smallest budget)" : "",
      has_bound ? "<th>at smallest budget</th>" : "");
  for (std::size_t r = 0; r < table.num_rows(); ++r) {
    const std::string& params = table.Text(r, table.Column("params"));
    html += fmt::format(
        "<tr><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td>{}</tr>\n",
        Escape(table.Text(r, table.Column("policy"))),
        params.empty() ? "" : " (" + Escape(params) + ")",
        Escape(table.Text(r, table.Column("rate_per_s"))),
        Escape(table.Text(r, table.Column("capacity_bytes"))),
        Escape(table.Text(r, table.Column("on_full"))), number(r, "output_tokens_per_s", "{:.0f}"),
        number(r, "latency_p95_s", "{:.3f}"), number(r, "peak_bytes", "{:.0f}"),
        number(r, "preemptions", "{:.0f}"), number(r, "mean_recall", "{:.3f}"),
        has_bound ? "<td>" + number(r, "mean_recall_at_min_budget", "{:.3f}") + "</td>" : "");
  }
  return html + "</table>\n";
}

std::string ValidityTable(const CsvTable& table) {
  std::vector<std::string> proxies, targets;
  std::map<std::pair<std::string, std::string>, std::string> cells;
  for (std::size_t r = 0; r < table.num_rows(); ++r) {
    if (table.Text(r, table.Column("group")) != "all") continue;
    const std::string& proxy = table.Text(r, table.Column("proxy"));
    const std::string& target = table.Text(r, table.Column("target"));
    if (std::find(proxies.begin(), proxies.end(), proxy) == proxies.end()) {
      proxies.push_back(proxy);
    }
    if (std::find(targets.begin(), targets.end(), target) == targets.end()) {
      targets.push_back(target);
    }
    const auto rho = table.OptionalNumber(r, table.Column("oriented_rho"));
    const auto low = table.OptionalNumber(r, table.Column("ci_low"));
    const auto high = table.OptionalNumber(r, table.Column("ci_high"));
    cells[{proxy, target}] = !rho ? ""
                             : low && high
                                 ? fmt::format("{:.3f} [{:.2f}, {:.2f}]", *rho, *low, *high)
                                 : fmt::format("{:.3f}", *rho);
  }
  if (proxies.empty()) return "";
  std::string html = fmt::format(
      "<h3>How far the open-loop proxies rank cells as the closed-loop damage does</h3>\n"
      "<p>From <code>{}</code>: Spearman rho over all cells, oriented (&gt; 0: the proxy ranks "
      "cells as the damage does), with the bootstrap interval over prompts.</p>\n"
      "<table class=\"summary\">\n<tr><th>proxy \\ target</th>",
      Escape(table.source()));
  for (const std::string& t : targets) html += fmt::format("<th>{}</th>", Escape(t));
  html += "</tr>\n";
  for (const std::string& p : proxies) {
    html += fmt::format("<tr><th>{}</th>", Escape(p));
    for (const std::string& t : targets) html += fmt::format("<td>{}</td>", cells[{p, t}]);
    html += "</tr>\n";
  }
  return html + "</table>\n";
}

// The `all` rows whose victims were decided by a tie more than 1% of the time: their numbers
// depend on the tie rule (issue 13), so the report names them. Empty if none or no column.
std::string TieSensitiveCells(const CsvTable& table) {
  if (!table.HasColumn("tie_share")) return "";
  const std::size_t tie = table.Column("tie_share");
  const std::size_t layer = table.Column("layer");
  std::string rows;
  for (std::size_t r = 0; r < table.num_rows(); ++r) {
    if (table.Text(r, layer) != "all") continue;
    const std::optional<double> share = table.OptionalNumber(r, tie);
    if (!share || *share <= 0.01) continue;
    rows += "<tr>";
    for (const char* column : {"trace", "policy", "params", "budget"}) {
      rows += fmt::format("<td>{}</td>", Escape(table.Text(r, table.Column(column))));
    }
    rows += fmt::format("<td>{:.1f}%</td></tr>\n", 100.0 * *share);
  }
  if (rows.empty()) return "";
  return "<h3>Cells decided by ties</h3>\n<p>In these cells more than 1% of the victims were "
         "chosen among equal scores, so the tie rule decides part of the result: rerun them with "
         "<code>--ties oldest</code> or <code>--ties random</code> to see the spread.</p>\n"
         "<table class=\"summary\">\n<tr><th>trace</th><th>policy</th><th>params</th>"
         "<th>budget</th><th>victims decided by a tie</th></tr>\n" +
         rows + "</table>\n";
}

// One figure embedded as a PNG data URI, captioned with its title, name and source file.
std::string Figure(const PlottedFigure& figure, const std::string& source) {
  return fmt::format(
      "<figure>\n<img alt=\"{1}\" src=\"data:image/png;base64,{2}\">\n"
      "<figcaption>{1} <small>(<code>{0}</code> from <code>{3}</code>)</small>"
      "</figcaption>\n</figure>\n",
      Escape(figure.name), Escape(figure.title), Base64(ReadFileToString(figure.png)),
      Escape(source));
}

constexpr std::string_view kStyle = R"(<style>
body { font-family: sans-serif; max-width: 1240px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; }
td { text-align: right; font-variant-numeric: tabular-nums; }
table.meta th, table.summary th { text-align: left; background: #f4f4f4; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; }
footer { color: #777; margin-top: 3em; font-size: 0.9em; }
</style>
)";

}  // namespace

ReportInputs CollectReportInputs(const std::vector<std::string>& paths) {
  ReportInputs inputs;
  auto add_unique = [](std::vector<std::filesystem::path>& list, const std::filesystem::path& p) {
    if (std::find(list.begin(), list.end(), p) == list.end()) list.push_back(p);
  };
  std::error_code ec;
  for (const std::string& arg : paths) {
    const std::filesystem::path path(arg);
    if (std::filesystem::is_directory(path, ec)) {
      for (std::string_view name : kResultFiles) {
        if (std::filesystem::is_regular_file(path / name, ec)) add_unique(inputs.csvs, path / name);
      }
      if (std::filesystem::is_regular_file(path / "sweep.json", ec)) {
        add_unique(inputs.metadata_jsons, path / "sweep.json");
      }
    } else if (std::filesystem::is_regular_file(path, ec)) {
      if (path.extension() == ".json") {
        add_unique(inputs.metadata_jsons, path);
      } else {
        add_unique(inputs.csvs, path);
        std::filesystem::path json = path;
        json.replace_extension(".json");
        if (std::filesystem::is_regular_file(json, ec)) add_unique(inputs.metadata_jsons, json);
      }
    } else {
      ThrowInputError(
          "{}: no such file or directory (expected result CSVs or a directory of "
          "them)",
          arg);
    }
  }
  if (inputs.csvs.empty()) {
    ThrowInputError(
        "{}: no result CSV found (expected one of sweep.csv, memory.csv, "
        "recurrence.csv, paging_mrc.csv, paging_predictions.csv, serve_pool.csv, "
        "serve_summary.csv, validate_spearman.csv)",
        fmt::join(paths, " "));
  }
  return inputs;
}

void WriteReport(const ReportInputs& inputs, const std::filesystem::path& out_html) {
  // Read and validate everything before drawing: a bad input leaves nothing behind. Serving
  // outputs (kvsim serve) are drawn by their own module after the replay figures.
  std::vector<std::pair<CsvTable, ResultKind>> tables;
  std::vector<std::pair<CsvTable, ServingResultKind>> serving;
  std::vector<CsvTable> validity;
  for (const auto& path : inputs.csvs) {
    CsvTable table = CsvTable::Read(path);
    if (IsValidityTable(table)) {
      ValidateValidity(table);
      validity.push_back(std::move(table));
      continue;
    }
    if (const std::optional<ServingResultKind> s = DetectServingResultKind(table)) {
      serving.emplace_back(std::move(table), *s);
      continue;
    }
    const ResultKind kind = DetectResultKind(table);
    ValidateResults(table, kind);
    tables.emplace_back(std::move(table), kind);
  }
  std::string metadata;
  for (const auto& json : inputs.metadata_jsons) metadata += MetadataTable(json);

  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<title>kvsim report</title>\n";
  html += kStyle;
  html += "</head>\n<body>\n<h1>kvsim report</h1>\n";
  html += "<h2>Run</h2>\n";
  html += metadata.empty() ? "<p>No sweep.json metadata was given.</p>\n" : metadata;
  html += "<h2>Inputs</h2>\n<ul>\n";
  for (const auto& [table, kind] : tables) {
    html += fmt::format("<li><code>{}</code>: {}, {} rows</li>\n", Escape(table.source()),
                        ResultKindName(kind), table.num_rows());
  }
  for (const auto& [table, kind] : serving) {
    html += fmt::format("<li><code>{}</code>: serving {}, {} rows</li>\n", Escape(table.source()),
                        kind == ServingResultKind::kPool ? "pool timeline" : "summary",
                        table.num_rows());
  }
  for (const CsvTable& table : validity) {
    html += fmt::format("<li><code>{}</code>: validity study, {} rows</li>\n",
                        Escape(table.source()), table.num_rows());
  }
  html += "</ul>\n";

  std::string summaries;
  for (const auto& [table, kind] : tables) {
    if (kind != ResultKind::kSweep) continue;
    summaries += fmt::format(
        "<p>From <code>{}</code>, rows with <code>layer = all</code>; several "
        "traces are averaged with equal weight.</p>\n",
        Escape(table.source()));
    summaries += SummaryTable(table, "mass_recall_mean", "mass_recall_worst_layer_mean",
                              "Attention-mass recall (mean)");
    summaries += SummaryTable(table, "rel_l2_error_mean", "rel_l2_error_worst_layer_mean",
                              "Relative L2 error of the attention output (mean)");
    summaries += SummaryTable(table, "top8_recall_mean", "top8_recall_worst_layer_mean",
                              "Top-8 recall (mean)");
    summaries += TieSensitiveCells(table);
  }
  for (const CsvTable& table : validity) summaries += ValidityTable(table);
  for (const auto& [table, kind] : serving) {
    if (kind == ServingResultKind::kSummary) summaries += ServingSummaryTable(table);
  }
  if (!summaries.empty()) html += "<h2>Summary</h2>\n" + summaries;

  html += "<h2>Figures</h2>\n";
  ScratchDir scratch;
  for (std::size_t i = 0; i < tables.size(); ++i) {
    const auto& [table, kind] = tables[i];
    const std::filesystem::path dir = scratch.path() / std::to_string(i);
    std::filesystem::create_directory(dir);
    for (const PlottedFigure& figure : PlotResults(table, kind, dir)) {
      html += Figure(figure, table.source());
    }
  }
  for (std::size_t i = 0; i < serving.size(); ++i) {
    const auto& [table, kind] = serving[i];
    const std::filesystem::path dir = scratch.path() / ("serve" + std::to_string(i));
    std::filesystem::create_directory(dir);
    for (const PlottedFigure& figure : PlotServingResults(table, kind, dir)) {
      html += Figure(figure, table.source());
    }
  }
  for (std::size_t i = 0; i < validity.size(); ++i) {
    const std::filesystem::path dir = scratch.path() / ("validate" + std::to_string(i));
    std::filesystem::create_directory(dir);
    for (const PlottedFigure& figure : PlotValidity(validity[i], dir)) {
      html += Figure(figure, validity[i].source());
    }
  }
  html += fmt::format("<footer>Generated by kvsim {}.</footer>\n</body>\n</html>\n", kVersion);
  WriteFileAtomically(out_html, html);
}

}  // namespace kvsim::analysis
