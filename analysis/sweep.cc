#include "analysis/sweep.h"

#include <fmt/format.h>
#include <tbb/blocked_range.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <toml++/toml.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>

#include "analysis/csv.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "common/progress.h"
#include "common/version.h"
#include "policies/registry.h"
#include "sim/prefill_attention.h"
#include "sim/replay.h"
#include "traces/trace_io.h"

namespace kvsim::analysis {
namespace {

// One (cell, layer) replay's outcome.
struct LayerOutcome {
  sim::LayerReplayResult replay;
  MetricSamples samples;
};

std::string TomlScalarToString(const toml::node& node,
                               const std::filesystem::path& path,
                               std::string_view key) {
  if (const auto* s = node.as_string()) return s->get();
  if (const auto* i = node.as_integer()) return std::to_string(i->get());
  if (const auto* f = node.as_floating_point()) return CsvWriter::Number(f->get());
  if (const auto* b = node.as_boolean()) return b->get() ? "true" : "false";
  ThrowInputError("{}: key '{}' must be a string, a number or a boolean", path.string(), key);
}

std::vector<const toml::node*> TomlArray(const toml::table& table,
                                         const std::filesystem::path& path,
                                         std::string_view key) {
  std::vector<const toml::node*> items;
  const toml::node* node = table.get(key);
  if (node == nullptr) return items;
  const toml::array* array = node->as_array();
  if (array == nullptr) {
    ThrowInputError("{}: key '{}' must be an array, e.g. {} = [...]", path.string(), key, key);
  }
  for (const toml::node& item : *array) items.push_back(&item);
  return items;
}

}  // namespace

void SweepPlan::Validate() const {
  if (traces.empty()) ThrowInputError("sweep: no trace given (--trace or 'traces' in the file)");
  if (policies.empty()) {
    ThrowInputError("sweep: no policy given (--policy or 'policies' in the file)");
  }
  if (budgets.empty()) ThrowInputError("sweep: no budget given (--budget or 'budgets')");
  if (threads < 0) ThrowInputError("--threads {} is not valid: expected >= 0", threads);
  for (const PolicySpec& spec : policies) policies::CheckPolicy(spec.name, spec.params);
}

int SweepPlan::EffectiveThreads() const {
  return threads > 0 ? threads : tbb::info::default_concurrency();
}

SweepPlan ReadSweepFile(const std::filesystem::path& path) {
  toml::table root;
  try {
    root = toml::parse(ReadFileToString(path), path.string());
  } catch (const toml::parse_error& e) {
    ThrowInputError("{}:{}:{}: not valid TOML: {}", path.string(), e.source().begin.line,
                    e.source().begin.column, e.description());
  }
  static const std::vector<std::string_view> kKeys = {
      "traces", "budgets", "regime", "gqa", "evict", "seed", "threads", "policies", "policy"};
  for (const auto& [key, value] : root) {
    if (std::find(kKeys.begin(), kKeys.end(), key.str()) == kKeys.end()) {
      ThrowInputError(
          "{}: unknown key '{}': expected one of traces, budgets, regime, gqa, evict, "
          "seed, threads, policies, [[policy]]",
          path.string(), key.str());
    }
  }
  SweepPlan plan;
  const std::filesystem::path base = path.parent_path();
  for (const toml::node* item : TomlArray(root, path, "traces")) {
    const auto* s = item->as_string();
    if (s == nullptr) ThrowInputError("{}: 'traces' must hold strings (paths)", path.string());
    const std::filesystem::path trace = s->get();
    plan.traces.push_back((trace.is_absolute() ? trace : base / trace).string());
  }
  for (const toml::node* item : TomlArray(root, path, "budgets")) {
    plan.budgets.push_back(sim::Budget::Parse(TomlScalarToString(*item, path, "budgets"),
                                              path.string() + ": budgets"));
  }
  const auto text = [&](std::string_view key) -> std::optional<std::string> {
    const toml::node* node = root.get(key);
    if (node == nullptr) return std::nullopt;
    return TomlScalarToString(*node, path, key);
  };
  const std::string context = path.string();
  if (auto v = text("regime")) plan.options.regime = sim::ParseRegime(*v, context + ": regime");
  if (auto v = text("gqa")) plan.options.gqa_mode = sim::ParseGqaMode(*v, context + ": gqa");
  if (auto v = text("evict")) {
    plan.options.timing = sim::ParseEvictTiming(*v, context + ": evict");
  }
  if (const toml::node* node = root.get("seed")) {
    const auto* i = node->as_integer();
    if (i == nullptr || i->get() < 0) {
      ThrowInputError("{}: 'seed' must be a non-negative integer", path.string());
    }
    plan.options.seed = static_cast<uint64_t>(i->get());
  }
  if (const toml::node* node = root.get("threads")) {
    const auto* i = node->as_integer();
    if (i == nullptr || i->get() < 0 || i->get() > 4096) {
      ThrowInputError("{}: 'threads' must be an integer in [0, 4096]", path.string());
    }
    plan.threads = static_cast<int>(i->get());
  }
  for (const toml::node* item : TomlArray(root, path, "policies")) {
    const auto* s = item->as_string();
    if (s == nullptr) ThrowInputError("{}: 'policies' must hold policy names", path.string());
    plan.policies.push_back(PolicySpec{s->get(), {}});
  }
  if (const toml::node* node = root.get("policy")) {
    const toml::array* tables = node->as_array();
    if (tables == nullptr) {
      ThrowInputError("{}: 'policy' must be an array of tables ([[policy]])", path.string());
    }
    for (const toml::node& entry : *tables) {
      const toml::table* table = entry.as_table();
      const toml::node* name = table != nullptr ? table->get("name") : nullptr;
      if (name == nullptr || !name->is_string()) {
        ThrowInputError("{}: every [[policy]] needs name = \"...\"", path.string());
      }
      PolicySpec spec{name->as_string()->get(), {}};
      for (const auto& [key, value] : *table) {
        if (key.str() == "name") continue;
        if (key.str() != "params" || !value.is_table()) {
          ThrowInputError(
              "{}: [[policy]] '{}' has key '{}': expected only name and params = {{...}}",
              path.string(), spec.name, key.str());
        }
        for (const auto& [param, param_value] : *value.as_table()) {
          spec.params.Set(std::string(param.str()),
                          TomlScalarToString(param_value, path, param.str()));
        }
      }
      plan.policies.push_back(std::move(spec));
    }
  }
  return plan;
}

SweepResult RunSweepOnTrace(const SweepPlan& plan,
                            const traces::Trace& trace,
                            std::string_view trace_name) {
  const auto start = std::chrono::steady_clock::now();
  const int num_layers = trace.num_layers();
  const int64_t prompt_len = trace.meta().prompt_len;
  const int64_t total_len = trace.meta().total_len;

  SweepResult result;
  for (const PolicySpec& spec : plan.policies) {
    const std::string params = policies::CheckPolicy(spec.name, spec.params);
    for (const sim::Budget& budget : plan.budgets) {
      result.cells.push_back(CellKey{spec.name, params, budget});
    }
  }
  const int num_cells = static_cast<int>(result.cells.size());
  // Full-precision K/V bytes of one token over every layer and stream (bytes budgets).
  const int64_t bytes_per_token =
      trace.shape().KvBytesPerTokenPerHead() * num_layers *
      (plan.options.gqa_mode == sim::GqaMode::kQueryHead ? trace.shape().q_heads
                                                         : trace.shape().kv_heads);
  const auto spec_of = [&](int cell) -> const PolicySpec& {
    return plan.policies[static_cast<size_t>(cell) / plan.budgets.size()];
  };

  std::vector<std::unique_ptr<sim::PrefillAttention>> prefill;
  std::vector<const sim::PrefillAttention*> prefill_ptrs;
  for (int l = 0; l < num_layers; ++l) {
    prefill.push_back(std::make_unique<sim::PrefillAttention>(trace.layer(l), prompt_len));
    prefill_ptrs.push_back(prefill.back().get());
  }

  // instances[cell][layer], budgets[cell][layer], outcomes[cell][layer]: preassigned slots.
  std::vector<std::vector<std::unique_ptr<policies::EvictionPolicy>>> instances(
      static_cast<size_t>(num_cells));
  std::vector<std::vector<int64_t>> budgets(static_cast<size_t>(num_cells));
  std::vector<std::vector<LayerOutcome>> outcomes(
      static_cast<size_t>(num_cells), std::vector<LayerOutcome>(static_cast<size_t>(num_layers)));

  const int threads = plan.EffectiveThreads();
  ProgressBar progress(fmt::format("{}", trace_name), int64_t{num_cells} * num_layers,
                       plan.progress);
  tbb::task_arena arena(threads);
  arena.execute([&] {
    tbb::parallel_for(0, num_cells, [&](int c) {
      const auto cell = static_cast<size_t>(c);
      std::vector<policies::EvictionPolicy*> layer_policies;
      for (int l = 0; l < num_layers; ++l) {
        policies::PolicySetup setup;
        setup.shape = trace.shape();
        setup.layer = l;
        setup.options = plan.options;
        setup.prompt_len = prompt_len;
        setup.total_len = total_len;
        setup.seed = sim::LayerSeed(plan.options.seed, l);
        instances[cell].push_back(policies::MakePolicy(spec_of(c).name, spec_of(c).params, setup));
        layer_policies.push_back(instances[cell].back().get());
      }
      budgets[cell] = sim::PlanLayerBudgets(
          trace, layer_policies, prefill_ptrs,
          result.cells[cell].budget.ResolveTokens(prompt_len, bytes_per_token));
    });
    // Layers in groups of `threads`: one FullCacheAttention per layer of the group is alive at
    // a time, shared by every cell.
    for (int first = 0; first < num_layers; first += threads) {
      const int group = std::min(threads, num_layers - first);
      std::vector<std::unique_ptr<FullCacheAttention>> full(static_cast<size_t>(group));
      tbb::parallel_for(0, group, [&](int i) {
        full[static_cast<size_t>(i)] = std::make_unique<FullCacheAttention>(trace, first + i);
      });
      tbb::parallel_for(0, group * num_cells, [&](int task) {
        const int i = task / num_cells;
        const int l = first + i;
        const auto cell = static_cast<size_t>(task % num_cells);
        sim::LayerReplayInput input;
        input.trace = &trace;
        input.layer = l;
        input.options = plan.options;
        input.budget_tokens = budgets[cell][static_cast<size_t>(l)];
        input.prefill = prefill_ptrs[static_cast<size_t>(l)];
        input.future = full[static_cast<size_t>(i)].get();
        LayerMetrics metrics(*full[static_cast<size_t>(i)]);
        LayerOutcome& out = outcomes[cell][static_cast<size_t>(l)];
        out.replay = sim::ReplayLayer(input, *instances[cell][static_cast<size_t>(l)], &metrics);
        out.samples = metrics.TakeSamples();
        instances[cell][static_cast<size_t>(l)].reset();
        progress.Advance();
      });
    }
  });
  progress.Finish();

  // Rows in plan order: per cell, layers 0..L-1 then `all`.
  const std::string regime = sim::RegimeName(plan.options.regime);
  for (int c = 0; c < num_cells; ++c) {
    const auto cell = static_cast<size_t>(c);
    const CellKey& key = result.cells[cell];
    sim::MemoryLedger ledger;
    MetricSamples all_samples;
    ResultRow all;
    all.trace = std::string(trace_name);
    all.policy = key.policy;
    all.params = key.params;
    all.budget = key.budget.text;
    all.regime = regime;
    all.layer = "all";
    double budget_sum = 0.0;
    double resident_sum = 0.0;
    for (int l = 0; l < num_layers; ++l) {
      const LayerOutcome& out = outcomes[cell][static_cast<size_t>(l)];
      const int64_t b = budgets[cell][static_cast<size_t>(l)];
      ResultRow row = all;
      row.layer = std::to_string(l);
      // A policy that never evicts is bounded only by the trace: report T.
      row.budget_tokens = static_cast<double>(b >= policies::kUnlimitedTokens ? total_len : b);
      row.steps = out.replay.steps;
      row.mass_recall = Summarize(out.samples.mass_recall);
      row.rel_l2_error = Summarize(out.samples.rel_l2_error);
      row.cosine = Summarize(out.samples.cosine);
      for (size_t k = 0; k < kTopK.size(); ++k) {
        row.top_recall_mean[k] = Mean(out.samples.top_recall[k]);
      }
      row.resident_tokens_mean = out.replay.resident_tokens_mean;
      row.resident_tokens_peak = out.replay.resident_tokens_peak;
      row.kv_bytes_mean = out.replay.ledger.MeanDecodeBytes(l, sim::MemoryLedger::kKvCategories);
      row.kv_bytes_peak = out.replay.ledger.PeakBytes(l, sim::MemoryLedger::kKvCategories).bytes;
      result.table.Add(row);
      ledger.Merge(out.replay.ledger);
      all_samples.Append(out.samples);
      budget_sum += row.budget_tokens;
      resident_sum += row.resident_tokens_mean;
      all.steps = row.steps;
      all.resident_tokens_peak = std::max(all.resident_tokens_peak, row.resident_tokens_peak);
    }
    all.budget_tokens = budget_sum / num_layers;
    all.mass_recall = Summarize(all_samples.mass_recall);
    all.rel_l2_error = Summarize(all_samples.rel_l2_error);
    all.cosine = Summarize(all_samples.cosine);
    for (size_t k = 0; k < kTopK.size(); ++k) {
      all.top_recall_mean[k] = Mean(all_samples.top_recall[k]);
    }
    all.resident_tokens_mean = resident_sum / num_layers;
    all.kv_bytes_mean =
        ledger.MeanDecodeBytes(sim::MemoryLedger::kAllLayers, sim::MemoryLedger::kKvCategories);
    all.kv_bytes_peak =
        ledger.PeakBytes(sim::MemoryLedger::kAllLayers, sim::MemoryLedger::kKvCategories).bytes;
    result.table.Add(all);
    result.ledgers.push_back(std::move(ledger));
  }
  result.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

SweepResult RunSweep(const SweepPlan& plan) {
  plan.Validate();
  const auto start = std::chrono::steady_clock::now();
  SweepResult result;
  for (const std::string& path : plan.traces) {
    const traces::Trace trace = traces::ReadTrace(path);
    SweepResult one = RunSweepOnTrace(plan, trace, std::filesystem::path(path).filename().string());
    result.table.Append(one.table);
    result.cells = one.cells;
    for (sim::MemoryLedger& ledger : one.ledgers) result.ledgers.push_back(std::move(ledger));
  }
  result.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

void WriteSweepOutputs(const std::filesystem::path& dir,
                       const SweepPlan& plan,
                       const SweepResult& result,
                       std::string_view command) {
  if (!std::filesystem::is_directory(dir)) {
    ThrowInputError("--out {}: not a directory (create it first)", dir.string());
  }
  nlohmann::json meta;
  meta["kvsim_version"] = kVersion;
  meta["traces"] = nlohmann::json::array();
  for (const std::string& t : plan.traces) {
    meta["traces"].push_back(std::filesystem::path(t).filename().string());
  }
  meta["policies"] = nlohmann::json::array();
  for (const PolicySpec& spec : plan.policies) {
    meta["policies"].push_back({{"name", spec.name}, {"params", spec.params.values()}});
  }
  meta["budgets"] = nlohmann::json::array();
  for (const sim::Budget& b : plan.budgets) meta["budgets"].push_back(b.text);
  meta["regime"] = sim::RegimeName(plan.options.regime);
  meta["gqa"] = sim::GqaModeName(plan.options.gqa_mode);
  meta["evict"] = sim::EvictTimingName(plan.options.timing);
  meta["seed"] = plan.options.seed;
  meta["threads"] = plan.EffectiveThreads();
  meta["wall_seconds"] = result.wall_seconds;
  meta["command"] = std::string(command);
  // CSV first: a failure there leaves neither file; the JSON is small and written last.
  result.table.WriteCsv(dir / "sweep.csv");
  WriteFileAtomically(dir / "sweep.json", meta.dump(2) + "\n");
}

void WriteMemoryCsv(const std::filesystem::path& path, const sim::MemoryLedger& ledger) {
  std::vector<sim::LedgerSample> samples(ledger.samples().begin(), ledger.samples().end());
  std::stable_sort(samples.begin(), samples.end(),
                   [](const sim::LedgerSample& a, const sim::LedgerSample& b) {
                     if (a.step != b.step) return a.step < b.step;
                     if (a.layer != b.layer) return a.layer < b.layer;
                     return a.category < b.category;
                   });
  CsvWriter csv(path, {"step", "phase", "category", "layer", "bytes"});
  for (const sim::LedgerSample& s : samples) {
    csv.AddRow({std::to_string(s.step), sim::LedgerPhaseName(s.phase),
                sim::MemoryCategoryName(s.category), std::to_string(s.layer),
                std::to_string(s.bytes)});
  }
  csv.Commit();
}

}  // namespace kvsim::analysis
