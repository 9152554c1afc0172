// The files `kvsim serve` writes (columns: analysis/RESULTS_FORMAT.md, "Serving outputs").
#include <nlohmann/json.hpp>

#include "analysis/csv.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "common/json_text.h"
#include "common/version.h"
#include "sim/serving/serve.h"

namespace kvsim::serving {
namespace {

using analysis::CsvWriter;

std::string Num(double v) { return CsvWriter::Number(v); }
std::string Int(int64_t v) { return std::to_string(v); }
// A time that may not have happened (-1): empty field.
std::string Time(double v) { return v < 0.0 ? std::string() : Num(v); }

std::vector<std::string> CellKey(const ServingCell& cell) {
  return {cell.policy.name, cell.policy.params.ToString(), Num(cell.rate_per_s),
          Int(cell.capacity_bytes), OnFullName(cell.on_full)};
}
const std::vector<std::string> kKeyHeader = {"policy", "params", "rate_per_s", "capacity_bytes",
                                             "on_full"};

std::vector<std::string> Header(std::vector<std::string> tail) {
  std::vector<std::string> h = kKeyHeader;
  h.insert(h.end(), tail.begin(), tail.end());
  return h;
}

void Append(std::vector<std::string>& row, const std::vector<std::string>& tail) {
  row.insert(row.end(), tail.begin(), tail.end());
}

const std::vector<std::string>& SummaryHeader() {
  static const std::vector<std::string> h = Header({"requests",
                                                    "completed",
                                                    "rejected",
                                                    "end_s",
                                                    "output_tokens_per_s",
                                                    "requests_per_s",
                                                    "latency_p50_s",
                                                    "latency_p95_s",
                                                    "latency_p99_s",
                                                    "ttft_p50_s",
                                                    "ttft_p95_s",
                                                    "ttft_p99_s",
                                                    "tpot_p50_s",
                                                    "tpot_p95_s",
                                                    "tpot_p99_s",
                                                    "queue_p50_s",
                                                    "queue_p95_s",
                                                    "queue_p99_s",
                                                    "preemptions",
                                                    "peak_bytes",
                                                    "peak_time_s",
                                                    "mean_fragmentation_bytes",
                                                    "mean_recall",
                                                    "mean_recall_at_min_budget",
                                                    "little_l",
                                                    "little_lambda_w"});
  return h;
}

std::vector<std::string> SummaryFields(const ServingCell& cell) {
  const CellSummary& s = cell.summary;
  std::vector<std::string> row = CellKey(cell);
  Append(row, {Int(s.requests), Int(s.completed), Int(s.rejected), Num(s.end_s),
               Num(s.output_tokens_per_s), Num(s.requests_per_s)});
  for (const auto* a : {&s.latency_s, &s.ttft_s, &s.tpot_s, &s.queue_s}) {
    for (double v : *a) row.push_back(Num(v));
  }
  Append(row, {Int(s.preemptions), Int(s.peak_bytes), Num(s.peak_time_s),
               Num(s.mean_fragmentation_bytes), Num(s.mean_recall),
               Num(s.mean_recall_at_min_budget), Num(s.little_l), Num(s.little_lambda_w)});
  return row;
}

}  // namespace

void WriteServingOutputs(const std::filesystem::path& dir,
                         const ServingScenario& scenario,
                         const ServingResult& result) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (!std::filesystem::is_directory(dir)) {
    ThrowInputError("--out {}: not a directory and cannot be created", dir.string());
  }
  CsvWriter requests(dir / "serve_requests.csv", Header({"request",
                                                         "trace",
                                                         "arrival_s",
                                                         "first_scheduled_s",
                                                         "first_token_s",
                                                         "finish_s",
                                                         "queue_s",
                                                         "ttft_s",
                                                         "tpot_s",
                                                         "latency_s",
                                                         "decode_tokens",
                                                         "preemptions",
                                                         "rejected",
                                                         "peak_tokens",
                                                         "mean_budget_tokens",
                                                         "min_budget_tokens",
                                                         "mass_recall_mean",
                                                         "mass_recall_p5",
                                                         "cosine_mean",
                                                         "top8_recall",
                                                         "mass_recall_mean_at_min_budget"}));
  CsvWriter pool(dir / "serve_pool.csv",
                 Header({"iteration", "time_s", "iteration_s", "kv_full_bytes",
                         "kv_quantized_bytes", "quant_metadata_bytes", "fragmentation_bytes",
                         "free_bytes", "swapped_bytes", "prefill_transient_bytes", "running",
                         "waiting", "swapped", "in_system", "batch_tokens"}));
  CsvWriter summary(dir / "serve_summary.csv", SummaryHeader());
  nlohmann::json cells = nlohmann::json::array();
  for (const ServingCell& cell : result.cells) {
    const std::vector<std::string> key = CellKey(cell);
    for (size_t i = 0; i < cell.schedule.requests.size(); ++i) {
      const RequestRecord& q = cell.schedule.requests[i];
      const ReplayQuality& m = cell.quality[i];
      const bool done = q.finish_s >= 0.0;
      std::vector<std::string> row = key;
      Append(row, {Int(q.id),
                   result.trace_names.at(static_cast<size_t>(q.trace)),
                   Num(q.arrival_s),
                   Time(q.first_scheduled_s),
                   Time(q.first_token_s),
                   Time(q.finish_s),
                   q.first_scheduled_s < 0.0 ? "" : Num(q.first_scheduled_s - q.arrival_s),
                   q.first_token_s < 0.0 ? "" : Num(q.first_token_s - q.arrival_s),
                   done && q.decode_tokens > 0
                       ? Num((q.finish_s - q.first_token_s) / static_cast<double>(q.decode_tokens))
                       : "",
                   done ? Num(q.finish_s - q.arrival_s) : "",
                   Int(q.decode_tokens),
                   Int(q.preemptions),
                   q.rejected ? "1" : "0",
                   Int(q.peak_tokens),
                   done ? Num(q.mean_budget_tokens) : "",
                   q.rejected ? "" : Int(cell.quality_at_min[i].budget_tokens),
                   Num(m.mass_recall_mean),
                   Num(m.mass_recall_p5),
                   Num(m.cosine_mean),
                   Num(m.top8_recall),
                   Num(cell.quality_at_min[i].mass_recall_mean)});
      requests.AddRow(row);
    }
    for (size_t i = 0; i < cell.schedule.timeline.size(); ++i) {
      const PoolSample& x = cell.schedule.timeline[i];
      std::vector<std::string> row = key;
      Append(row, {Int(static_cast<int64_t>(i)), Num(x.time_s), Num(x.iteration_s),
                   Int(x.kv_full_bytes), Int(x.kv_quantized_bytes), Int(x.quant_metadata_bytes),
                   Int(x.fragmentation_bytes), Int(x.free_bytes), Int(x.swapped_bytes),
                   Int(x.prefill_transient_bytes), Int(x.running), Int(x.waiting), Int(x.swapped),
                   Int(x.in_system), Int(x.batch_tokens)});
      pool.AddRow(row);
    }
    const std::vector<std::string> fields = SummaryFields(cell);
    summary.AddRow(fields);
    nlohmann::json j = nlohmann::json::object();
    const auto& header = SummaryHeader();
    for (size_t k = 0; k < header.size(); ++k) j[header[k]] = fields[k];
    cells.push_back(j);
  }
  nlohmann::json meta;
  meta["kvsim_version"] = kVersion;
  meta["traces"] = result.trace_names;
  meta["budget"] = scenario.budget ? *scenario.budget : std::string();
  meta["arrivals"] = WorkloadKindName(scenario.workload.kind);
  meta["requests"] = scenario.workload.num_requests;
  meta["workload_seed"] = scenario.workload.seed;
  meta["cv"] = scenario.workload.cv;
  meta["block_tokens"] = scenario.block_tokens;
  meta["on_full"] = OnFullName(scenario.scheduler.on_full);
  meta["share"] = BudgetShareName(scenario.scheduler.share);
  meta["min_budget_tokens"] = scenario.scheduler.min_budget_tokens;
  meta["iteration_tokens"] = scenario.scheduler.iteration_tokens;
  meta["max_running"] = scenario.scheduler.max_running;
  meta["cost"] = {{"hbm_bytes_per_s", scenario.cost.hbm_bytes_per_s},
                  {"peak_flops", scenario.cost.peak_flops},
                  {"swap_bytes_per_s", scenario.cost.swap_bytes_per_s},
                  {"overhead_s", scenario.cost.overhead_s},
                  {"params", scenario.cost.params},
                  {"weight_bytes", scenario.cost.weight_bytes}};
  // Metrics replay each request under the budget it had at each decode step ("schedule"); the
  // *_at_min_budget columns at its smallest budget (a conservative bound).
  meta["recall_budget"] = "schedule";
  meta["seed"] = scenario.seed;
  meta["wall_seconds"] = result.wall_seconds;
  meta["cells"] = cells;
  // CSVs first: a failure there leaves no JSON; the JSON is small and written last.
  requests.Commit();
  pool.Commit();
  summary.Commit();
  WriteFileAtomically(dir / "serve.json", JsonText(meta, 2) + "\n");
}

}  // namespace kvsim::serving
