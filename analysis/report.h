#pragma once
// `kvsim report`: one self-contained HTML page (no external files, no scripts) with every figure
// `kvsim plot` draws for the given results (PNG embedded as base64 data URIs), the summary
// tables of sweep.csv, and the run's metadata from sweep.json.
#include <filesystem>
#include <string>
#include <vector>

namespace kvsim::analysis {

struct ReportInputs {
  std::vector<std::filesystem::path> csvs;            // result CSVs, kind read from the header
  std::vector<std::filesystem::path> metadata_jsons;  // sweep.json files
};

// Expands the command line: a directory contributes the RESULTS_FORMAT.md file names found in
// it (sweep.csv, memory.csv, recurrence.csv, paging_mrc.csv, paging_predictions.csv, sweep.json);
// a file is taken as is (*.json as metadata, anything else as a CSV), and a sweep CSV's
// `<stem>.json` sibling is picked up when it exists. Throws InputError for a path that does not
// exist, or if nothing is found.
ReportInputs CollectReportInputs(const std::vector<std::string>& paths);

// Reads and validates every input, draws the figures in a temporary directory (removed after),
// and writes the page to `out_html` atomically: on any error no page is left. Throws InputError.
void WriteReport(const ReportInputs& inputs, const std::filesystem::path& out_html);

}  // namespace kvsim::analysis
