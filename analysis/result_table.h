#pragma once
// Rows of sweep.csv (analysis/RESULTS_FORMAT.md): one per (trace, policy, params, budget) cell and
// layer, plus one `layer = all` row per cell. Written atomically, columns exactly as documented.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "analysis/metrics.h"

namespace kvsim::analysis {

struct ResultRow {
  std::string trace;           // basename
  std::string policy;          // registry name
  std::string params;          // non-default parameters, key=value;...
  std::string budget;          // as given ("256", "0.25p")
  double budget_tokens = 0.0;  // per (layer, stream); mean over layers in the `all` row
  std::string regime;          // "bounded" / "prefill"
  std::string layer;           // index or "all"
  int64_t steps = 0;
  Summary mass_recall;
  Summary rel_l2_error;
  Summary cosine;
  std::array<double, kTopK.size()> top_recall_mean{};
  double resident_tokens_mean = 0.0;
  int64_t resident_tokens_peak = 0;
  double kv_bytes_mean = 0.0;
  int64_t kv_bytes_peak = 0;
  // Peak KV bytes above what the asked budget allows (0: within it). See RESULTS_FORMAT.md.
  int64_t kv_bytes_over_budget_peak = 0;
  // The lowest per-layer mass_recall_mean of the cell and its layer (issue 13: uneven layer
  // budgets raise the layer mean while the worst layer drops). On a layer row: its own.
  double mass_recall_worst_layer_mean = 0.0;
  std::string worst_layer;
  // The worst layer's mean of every other metric, each on its own (the worst layer of one metric
  // need not be another's): the highest rel_l2_error_mean, the lowest cosine_mean and
  // top-k recall means over layers. On a layer row: its own means.
  double rel_l2_error_worst_layer_mean = 0.0;
  double cosine_worst_layer_mean = 0.0;
  std::array<double, kTopK.size()> top_recall_worst_layer_mean{};
  // Victims ranked by score, and the share of them a tie at the selection boundary decided
  // (sim::LayerReplayResult::tie_victims / ranked_victims; 0 when nothing was ranked).
  int64_t ranked_victims = 0;
  int64_t tie_victims = 0;
  double tie_share() const {
    return ranked_victims > 0
               ? static_cast<double>(tie_victims) / static_cast<double>(ranked_victims)
               : 0.0;
  }
};

class ResultTable {
 public:
  // The sweep.csv header, in order.
  static const std::vector<std::string>& Header();
  void Add(ResultRow row) { rows_.push_back(std::move(row)); }
  void Append(const ResultTable& other);
  const std::vector<ResultRow>& rows() const { return rows_; }
  // One row's fields, in Header() order (numbers round-trip; NaN = empty field).
  static std::vector<std::string> Fields(const ResultRow& row);
  // Writes sweep.csv atomically. Throws InputError naming the path on failure.
  void WriteCsv(const std::filesystem::path& path) const;

 private:
  std::vector<ResultRow> rows_;
};

}  // namespace kvsim::analysis
