// `kvsim report DIR_OR_FILES... -o report.html`: one self-contained HTML page with the figures,
// summary tables and run metadata; see analysis/report.h.
#include <fmt/core.h>

#include <string>
#include <vector>

#include "analysis/report.h"
#include "apps/command.h"

namespace kvsim::apps {

void RegisterReportCommand(CLI::App& app) {
  struct Args {
    std::vector<std::string> inputs;
    std::string out = "report.html";
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "report",
      "Write one self-contained HTML page (figures embedded) with the summary table and run "
      "metadata of result directories or files");
  cmd->add_option("results", args->inputs,
                  "result directories (sweep.csv, memory.csv, ..., sweep.json) or files")
      ->required();
  cmd->add_option("-o,--out", args->out, "output HTML file (default: report.html)");
  cmd->callback([args] {
    analysis::WriteReport(analysis::CollectReportInputs(args->inputs), args->out);
    fmt::print("{}\n", args->out);
  });
}

}  // namespace kvsim::apps
