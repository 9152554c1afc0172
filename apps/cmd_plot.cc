// `kvsim plot RESULTS.csv... -o OUTDIR`: figures (PNG + SVG + the .dat they were drawn from)
// for result CSVs; see analysis/plot.h.
#include <fmt/core.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "analysis/csv.h"
#include "analysis/plot.h"
#include "analysis/plot_paging_predictions.h"
#include "analysis/plot_serving.h"
#include "analysis/plot_validity.h"
#include "apps/command.h"
#include "common/error.h"

namespace kvsim::apps {

void RegisterPlotCommand(CLI::App& app) {
  struct Args {
    std::vector<std::string> inputs;
    std::string out_dir = ".";
    std::string kind;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "plot",
      "Draw PNG and SVG figures (with gnuplot) from result CSVs: sweep.csv, memory.csv, "
      "recurrence.csv, paging_mrc.csv, paging_predictions.csv, paging_eta.csv, serve_pool.csv, "
      "serve_summary.csv, validate_spearman.csv");
  cmd->add_option("results", args->inputs, "result CSV files (kind detected from the header)")
      ->required();
  cmd->add_option("-o,--out", args->out_dir,
                  "output directory, created if missing (default: the current directory)");
  cmd->add_option("--kind", args->kind,
                  "result kind instead of detecting it: sweep, memory, recurrence, paging_mrc, "
                  "paging_predictions");
  cmd->callback([args] {
    std::optional<analysis::ResultKind> forced;
    if (!args->kind.empty()) forced = analysis::ParseResultKind(args->kind);
    // Read and check every input before drawing anything.
    std::vector<std::pair<analysis::CsvTable, analysis::ResultKind>> inputs;
    std::vector<std::pair<analysis::CsvTable, analysis::ServingResultKind>> serving;
    std::vector<analysis::CsvTable> paging_eta;
    std::vector<analysis::CsvTable> validity;
    for (const std::string& input : args->inputs) {
      analysis::CsvTable table = analysis::CsvTable::Read(input);
      if (!forced) {
        if (analysis::IsPagingEtaTable(table)) {
          analysis::ValidatePagingEta(table);
          paging_eta.push_back(std::move(table));
          continue;
        }
        if (analysis::IsValidityTable(table)) {
          analysis::ValidateValidity(table);
          validity.push_back(std::move(table));
          continue;
        }
        if (const auto s = analysis::DetectServingResultKind(table)) {
          serving.emplace_back(std::move(table), *s);
          continue;
        }
      }
      const analysis::ResultKind kind = forced ? *forced : analysis::DetectResultKind(table);
      analysis::ValidateResults(table, kind);
      inputs.emplace_back(std::move(table), kind);
    }
    const std::filesystem::path out_dir(args->out_dir);
    std::error_code ec;
    std::filesystem::create_directories(out_dir, ec);
    if (ec) {
      ThrowInputError("-o {}: cannot create the output directory: {}", args->out_dir, ec.message());
    }
    for (const auto& [table, kind] : inputs) {
      for (const analysis::PlottedFigure& figure : analysis::PlotResults(table, kind, out_dir)) {
        fmt::print("{}\n{}\n{}\n", figure.png.string(), figure.svg.string(), figure.data.string());
      }
    }
    for (const analysis::CsvTable& table : paging_eta) {
      for (const auto& figure : analysis::PlotPagingEta(table, out_dir)) {
        fmt::print("{}\n{}\n{}\n", figure.png.string(), figure.svg.string(), figure.data.string());
      }
    }
    for (const analysis::CsvTable& table : validity) {
      for (const auto& figure : analysis::PlotValidity(table, out_dir)) {
        fmt::print("{}\n{}\n{}\n", figure.png.string(), figure.svg.string(), figure.data.string());
      }
    }
    for (const auto& [table, kind] : serving) {
      for (const auto& figure : analysis::PlotServingResults(table, kind, out_dir)) {
        fmt::print("{}\n{}\n{}\n", figure.png.string(), figure.svg.string(), figure.data.string());
      }
    }
  });
}

}  // namespace kvsim::apps
