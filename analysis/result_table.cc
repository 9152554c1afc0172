#include "analysis/result_table.h"

#include "analysis/csv.h"

namespace kvsim::analysis {

const std::vector<std::string>& ResultTable::Header() {
  static const std::vector<std::string> header = [] {
    std::vector<std::string> h = {"trace",         "policy", "params", "budget",
                                  "budget_tokens", "regime", "layer",  "steps"};
    for (const char* metric : {"mass_recall", "rel_l2_error", "cosine"}) {
      for (const char* stat : {"mean", "p5", "p50", "p95"}) {
        h.push_back(std::string(metric) + "_" + stat);
      }
    }
    for (const int k : kTopK) h.push_back("top" + std::to_string(k) + "_recall_mean");
    for (const char* c :
         {"resident_tokens_mean", "resident_tokens_peak", "kv_bytes_mean", "kv_bytes_peak",
          "mass_recall_worst_layer_mean", "worst_layer", "ranked_victims", "tie_share"}) {
      h.emplace_back(c);
    }
    h.emplace_back("rel_l2_error_worst_layer_mean");
    h.emplace_back("cosine_worst_layer_mean");
    for (const int k : kTopK) h.push_back("top" + std::to_string(k) + "_recall_worst_layer_mean");
    h.emplace_back("kv_bytes_over_budget_peak");
    return h;
  }();
  return header;
}

void ResultTable::Append(const ResultTable& other) {
  rows_.insert(rows_.end(), other.rows_.begin(), other.rows_.end());
}

std::vector<std::string> ResultTable::Fields(const ResultRow& row) {
  using N = CsvWriter;
  std::vector<std::string> f = {row.trace,
                                row.policy,
                                row.params,
                                row.budget,
                                N::Number(row.budget_tokens),
                                row.regime,
                                row.layer,
                                N::Number(static_cast<double>(row.steps))};
  for (const Summary* s : {&row.mass_recall, &row.rel_l2_error, &row.cosine}) {
    for (const double v : {s->mean, s->p5, s->p50, s->p95}) f.push_back(N::Number(v));
  }
  for (const double v : row.top_recall_mean) f.push_back(N::Number(v));
  f.push_back(N::Number(row.resident_tokens_mean));
  f.push_back(N::Number(static_cast<double>(row.resident_tokens_peak)));
  f.push_back(N::Number(row.kv_bytes_mean));
  f.push_back(N::Number(static_cast<double>(row.kv_bytes_peak)));
  f.push_back(N::Number(row.mass_recall_worst_layer_mean));
  f.push_back(row.worst_layer);
  f.push_back(N::Number(static_cast<double>(row.ranked_victims)));
  f.push_back(N::Number(row.tie_share()));
  f.push_back(N::Number(row.rel_l2_error_worst_layer_mean));
  f.push_back(N::Number(row.cosine_worst_layer_mean));
  for (const double v : row.top_recall_worst_layer_mean) f.push_back(N::Number(v));
  f.push_back(N::Number(static_cast<double>(row.kv_bytes_over_budget_peak)));
  return f;
}

void ResultTable::WriteCsv(const std::filesystem::path& path) const {
  CsvWriter csv(path, Header());
  for (const ResultRow& row : rows_) csv.AddRow(Fields(row));
  csv.Commit();
}

}  // namespace kvsim::analysis
