#include "analysis/sweep_units.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <numeric>
#include <system_error>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/json_text.h"
#include "common/version.h"
#include "traces/trace_io.h"

namespace kvsim::analysis {
namespace {

constexpr int kJournalFormat = 1;

// Hex float: exact, and NaN / inf survive (JSON numbers cannot hold them).
std::string EncodeDouble(double value) { return fmt::format("{:a}", value); }

double DecodeDouble(const nlohmann::json& node, const std::string& what) {
  if (!node.is_string()) ThrowInputError("{}: a number field is not a hex-float string", what);
  const std::string& text = node.get_ref<const std::string&>();
  char* end = nullptr;
  const double value = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size()) {
    ThrowInputError("{}: '{}' is not a number", what, text);
  }
  return value;
}

nlohmann::json EncodeSummary(const Summary& s) {
  return nlohmann::json::array(
      {EncodeDouble(s.mean), EncodeDouble(s.p5), EncodeDouble(s.p50), EncodeDouble(s.p95)});
}

Summary DecodeSummary(const nlohmann::json& node, const std::string& what) {
  if (!node.is_array() || node.size() != 4) {
    ThrowInputError("{}: a summary is not [mean, p5, p50, p95]", what);
  }
  return Summary{.mean = DecodeDouble(node[0], what),
                 .p5 = DecodeDouble(node[1], what),
                 .p50 = DecodeDouble(node[2], what),
                 .p95 = DecodeDouble(node[3], what)};
}

nlohmann::json EncodeRow(const ResultRow& row) {
  nlohmann::json top = nlohmann::json::array();
  for (const double v : row.top_recall_mean) top.push_back(EncodeDouble(v));
  nlohmann::json top_worst = nlohmann::json::array();
  for (const double v : row.top_recall_worst_layer_mean) top_worst.push_back(EncodeDouble(v));
  return {{"trace", row.trace},
          {"policy", row.policy},
          {"params", row.params},
          {"budget", row.budget},
          {"budget_tokens", EncodeDouble(row.budget_tokens)},
          {"regime", row.regime},
          {"layer", row.layer},
          {"steps", row.steps},
          {"mass_recall", EncodeSummary(row.mass_recall)},
          {"rel_l2_error", EncodeSummary(row.rel_l2_error)},
          {"cosine", EncodeSummary(row.cosine)},
          {"top_recall_mean", top},
          {"resident_tokens_mean", EncodeDouble(row.resident_tokens_mean)},
          {"resident_tokens_peak", row.resident_tokens_peak},
          {"kv_bytes_mean", EncodeDouble(row.kv_bytes_mean)},
          {"kv_bytes_peak", row.kv_bytes_peak},
          {"kv_bytes_over_budget_peak", row.kv_bytes_over_budget_peak},
          {"mass_recall_worst_layer_mean", EncodeDouble(row.mass_recall_worst_layer_mean)},
          {"worst_layer", row.worst_layer},
          {"ranked_victims", row.ranked_victims},
          {"tie_victims", row.tie_victims},
          {"rel_l2_error_worst_layer_mean", EncodeDouble(row.rel_l2_error_worst_layer_mean)},
          {"cosine_worst_layer_mean", EncodeDouble(row.cosine_worst_layer_mean)},
          {"top_recall_worst_layer_mean", top_worst}};
}

ResultRow DecodeRow(const nlohmann::json& node, const std::string& what) {
  ResultRow row;
  row.trace = node.at("trace").get<std::string>();
  row.policy = node.at("policy").get<std::string>();
  row.params = node.at("params").get<std::string>();
  row.budget = node.at("budget").get<std::string>();
  row.budget_tokens = DecodeDouble(node.at("budget_tokens"), what);
  row.regime = node.at("regime").get<std::string>();
  row.layer = node.at("layer").get<std::string>();
  row.steps = node.at("steps").get<int64_t>();
  row.mass_recall = DecodeSummary(node.at("mass_recall"), what);
  row.rel_l2_error = DecodeSummary(node.at("rel_l2_error"), what);
  row.cosine = DecodeSummary(node.at("cosine"), what);
  const nlohmann::json& top = node.at("top_recall_mean");
  if (!top.is_array() || top.size() != row.top_recall_mean.size()) {
    ThrowInputError("{}: top_recall_mean has {} values, expected {}", what, top.size(),
                    row.top_recall_mean.size());
  }
  for (size_t k = 0; k < row.top_recall_mean.size(); ++k) {
    row.top_recall_mean[k] = DecodeDouble(top[k], what);
  }
  row.resident_tokens_mean = DecodeDouble(node.at("resident_tokens_mean"), what);
  row.resident_tokens_peak = node.at("resident_tokens_peak").get<int64_t>();
  row.kv_bytes_mean = DecodeDouble(node.at("kv_bytes_mean"), what);
  row.kv_bytes_peak = node.at("kv_bytes_peak").get<int64_t>();
  row.kv_bytes_over_budget_peak = node.at("kv_bytes_over_budget_peak").get<int64_t>();
  row.mass_recall_worst_layer_mean = DecodeDouble(node.at("mass_recall_worst_layer_mean"), what);
  row.worst_layer = node.at("worst_layer").get<std::string>();
  row.ranked_victims = node.at("ranked_victims").get<int64_t>();
  row.tie_victims = node.at("tie_victims").get<int64_t>();
  row.rel_l2_error_worst_layer_mean = DecodeDouble(node.at("rel_l2_error_worst_layer_mean"), what);
  row.cosine_worst_layer_mean = DecodeDouble(node.at("cosine_worst_layer_mean"), what);
  const nlohmann::json& top_worst = node.at("top_recall_worst_layer_mean");
  if (!top_worst.is_array() || top_worst.size() != row.top_recall_worst_layer_mean.size()) {
    ThrowInputError("{}: top_recall_worst_layer_mean has {} values, expected {}", what,
                    top_worst.size(), row.top_recall_worst_layer_mean.size());
  }
  for (size_t k = 0; k < row.top_recall_worst_layer_mean.size(); ++k) {
    row.top_recall_worst_layer_mean[k] = DecodeDouble(top_worst[k], what);
  }
  return row;
}

std::string CellLabel(const CellKey& cell) {
  return cell.params.empty() ? fmt::format("{} {}", cell.policy, cell.budget.text)
                             : fmt::format("{}[{}] {}", cell.policy, cell.params, cell.budget.text);
}

// The first key whose value differs, in words.
std::string FirstDifference(const nlohmann::json& was, const nlohmann::json& now) {
  for (const auto& [key, value] : now.items()) {
    if (!was.contains(key)) return fmt::format("'{}' is new", key);
    if (was[key] != value) {
      return fmt::format("'{}': {} then, {} now", key, JsonText(was[key]), JsonText(value));
    }
  }
  return "an entry of the journal's plan is no longer there";
}

}  // namespace

std::vector<SweepUnit> MakeUnits(int num_traces,
                                 int num_cells,
                                 int cells_per_unit,
                                 std::span<const double> cost_per_cell,
                                 const FinishedCells& finished) {
  KVSIM_ASSERT(cells_per_unit >= 1 && cost_per_cell.size() == static_cast<size_t>(num_traces),
               "cells_per_unit {} and {} trace costs for {} traces", cells_per_unit,
               cost_per_cell.size(), num_traces);
  std::vector<SweepUnit> units;
  for (int t = 0; t < num_traces; ++t) {
    int c = 0;
    while (c < num_cells) {
      if (finished.contains({t, c})) {
        ++c;
        continue;
      }
      SweepUnit unit{.trace = t, .first_cell = c, .num_cells = 0, .cost = 0.0};
      while (c < num_cells && !finished.contains({t, c}) && unit.num_cells < cells_per_unit) {
        ++unit.num_cells;
        ++c;
      }
      unit.cost = cost_per_cell[static_cast<size_t>(t)] * unit.num_cells;
      units.push_back(unit);
    }
  }
  return units;
}

std::vector<int> LongestFirst(std::span<const SweepUnit> units) {
  std::vector<int> order(units.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return units[static_cast<size_t>(a)].cost > units[static_cast<size_t>(b)].cost;
  });
  return order;
}

std::string UnitName(const SweepPlan& plan, std::span<const CellKey> cells, const SweepUnit& unit) {
  const std::string trace =
      std::filesystem::path(plan.traces[static_cast<size_t>(unit.trace)]).filename().string();
  const int last = unit.first_cell + unit.num_cells - 1;
  const CellKey& first_key = cells[static_cast<size_t>(unit.first_cell)];
  if (unit.num_cells == 1) {
    return fmt::format("{} cell {} ({})", trace, unit.first_cell, CellLabel(first_key));
  }
  return fmt::format("{} cells {}-{} ({} .. {})", trace, unit.first_cell, last,
                     CellLabel(first_key), CellLabel(cells[static_cast<size_t>(last)]));
}

std::string EncodeUnitRows(const SweepUnit& unit, const std::vector<ResultRow>& rows) {
  KVSIM_ASSERT(unit.num_cells > 0 && rows.size() % static_cast<size_t>(unit.num_cells) == 0,
               "{} rows for {} cells", rows.size(), unit.num_cells);
  const size_t per_cell = rows.size() / static_cast<size_t>(unit.num_cells);
  nlohmann::json cells = nlohmann::json::array();
  for (int c = 0; c < unit.num_cells; ++c) {
    nlohmann::json cell_rows = nlohmann::json::array();
    for (size_t r = 0; r < per_cell; ++r) {
      cell_rows.push_back(EncodeRow(rows[static_cast<size_t>(c) * per_cell + r]));
    }
    cells.push_back(std::move(cell_rows));
  }
  const nlohmann::json record = {{"format", kJournalFormat},
                                 {"trace", unit.trace},
                                 {"first_cell", unit.first_cell},
                                 {"cells", std::move(cells)}};
  return JsonText(record) + "\n";
}

FinishedCells DecodeUnitRows(std::string_view text, const std::string& what) {
  FinishedCells finished;
  try {
    const nlohmann::json record = nlohmann::json::parse(text);
    if (record.at("format").get<int>() != kJournalFormat) {
      ThrowInputError("{}: unit record format {}, expected {}", what,
                      record.at("format").get<int>(), kJournalFormat);
    }
    const int trace = record.at("trace").get<int>();
    const int first = record.at("first_cell").get<int>();
    const nlohmann::json& cells = record.at("cells");
    if (trace < 0 || first < 0 || !cells.is_array()) {
      ThrowInputError("{}: not a unit record (trace {}, first_cell {})", what, trace, first);
    }
    for (size_t c = 0; c < cells.size(); ++c) {
      std::vector<ResultRow> rows;
      for (const nlohmann::json& row : cells[c]) rows.push_back(DecodeRow(row, what));
      finished[{trace, first + static_cast<int>(c)}] = std::move(rows);
    }
  } catch (const nlohmann::json::exception& e) {
    ThrowInputError("{}: not a unit record: {}", what, e.what());
  }
  return finished;
}

nlohmann::json SweepFingerprint(const SweepPlan& plan) {
  nlohmann::json traces = nlohmann::json::array();
  for (const std::string& path : plan.traces) {
    std::error_code ec;
    const auto bytes = std::filesystem::file_size(path, ec);
    const auto mtime =
        ec ? std::filesystem::file_time_type() : std::filesystem::last_write_time(path, ec);
    if (ec) {
      traces.push_back({{"path", path}, {"unreadable", ec.message()}});
      continue;
    }
    traces::TraceMeta meta;
    try {
      meta = traces::TraceReader(path).meta();
    } catch (const InputError& e) {
      traces.push_back({{"path", path}, {"unreadable", e.what()}});
      continue;
    }
    traces.push_back(
        {{"path", path},
         {"bytes", bytes},
         {"mtime_ns",
          std::chrono::duration_cast<std::chrono::nanoseconds>(mtime.time_since_epoch()).count()},
         {"shape", fmt::format("{} L{} Hq{} Hkv{} d{}", meta.shape.name, meta.shape.layers,
                               meta.shape.q_heads, meta.shape.kv_heads, meta.shape.head_dim)},
         {"prompt_len", meta.prompt_len},
         {"total_len", meta.total_len},
         {"source", meta.source}});
  }
  nlohmann::json cells = nlohmann::json::array();
  for (const CellKey& cell : PlanCells(plan)) cells.push_back(CellLabel(cell));
  return {{"format", kJournalFormat},
          {"kvsim_version", kVersion},
          {"traces", std::move(traces)},
          {"cells", std::move(cells)},
          {"regime", sim::RegimeName(plan.options.regime)},
          {"gqa", sim::GqaModeName(plan.options.gqa_mode)},
          {"evict", sim::EvictTimingName(plan.options.timing)},
          {"ties", sim::TieRuleName(plan.options.ties)},
          {"seed", plan.options.seed},
          {"prefill_block", plan.options.prefill_block},
          {"share_logits", plan.share_logits},
          {"block_steps", plan.block_steps}};
}

SweepJournal::SweepJournal(const std::filesystem::path& out_dir, const nlohmann::json& fingerprint)
    : dir_(out_dir / "sweep.journal") {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) ThrowInputError("{}: cannot create the sweep journal: {}", dir_.string(), ec.message());
  const std::filesystem::path plan = dir_ / "plan.json";
  if (std::filesystem::exists(plan)) {
    nlohmann::json was;
    try {
      was = nlohmann::json::parse(ReadStateFile(plan));
    } catch (const nlohmann::json::exception& e) {
      ThrowInputError("{}: not valid JSON ({}); delete {} to start the sweep afresh", plan.string(),
                      e.what(), dir_.string());
    }
    // As written: a path that is not UTF-8 was stored with U+FFFD in place of its bad bytes.
    CheckSameInputs(was, nlohmann::json::parse(JsonText(fingerprint)));
  }
  WriteFileAtomically(plan, JsonText(fingerprint, 2) + "\n");
}

// Everything but the traces' identities must be equal. A trace may have changed only if no cell
// of it finished (e.g. a corrupt trace, replaced after a --keep-going run): nothing of it to mix.
void SweepJournal::CheckSameInputs(const nlohmann::json& was, const nlohmann::json& now) const {
  const auto refuse = [&](const std::string& difference) {
    ThrowInputError(
        "{} holds a sweep of other inputs ({}): refusing to mix results. Re-run the command "
        "that wrote it, use another --out, or delete {} to start afresh",
        dir_.string(), difference, dir_.string());
  };
  nlohmann::json was_rest = was;
  nlohmann::json now_rest = now;
  was_rest.erase("traces");
  now_rest.erase("traces");
  if (was_rest != now_rest) refuse(FirstDifference(was_rest, now_rest));
  const nlohmann::json& old_traces = was.value("traces", nlohmann::json::array());
  const nlohmann::json& new_traces = now.at("traces");
  if (old_traces.size() != new_traces.size()) {
    refuse(fmt::format("the trace list: {} traces then, {} now", old_traces.size(),
                       new_traces.size()));
  }
  const FinishedCells finished = Load();
  for (size_t t = 0; t < new_traces.size(); ++t) {
    const std::string path = new_traces[t].value("path", std::string("?"));
    if (old_traces[t].value("path", std::string()) != path) {
      refuse(fmt::format("trace {}: '{}' then, '{}' now", t,
                         old_traces[t].value("path", std::string("?")), path));
    }
    if (old_traces[t] == new_traces[t]) continue;
    const auto first = finished.lower_bound({static_cast<int>(t), 0});
    if (first != finished.end() && first->first.first == static_cast<int>(t)) {
      refuse(
          fmt::format("trace '{}' changed since its finished units were recorded (size, "
                      "modification time or header)",
                      path));
    }
  }
}

FinishedCells SweepJournal::Load() const {
  FinishedCells finished;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(dir_)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with("unit-") && name.ends_with(".json")) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const std::filesystem::path& file : files) {
    FinishedCells cells = DecodeUnitRows(ReadStateFile(file), file.string());
    finished.merge(cells);
  }
  return finished;
}

void SweepJournal::Record(const SweepUnit& unit, const std::string& encoded_rows) const {
  WriteFileAtomically(
      dir_ / fmt::format("unit-t{}-c{}-n{}.json", unit.trace, unit.first_cell, unit.num_cells),
      encoded_rows);
}

}  // namespace kvsim::analysis
