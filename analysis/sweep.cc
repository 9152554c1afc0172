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
#include "analysis/toml_file.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "common/json_text.h"
#include "common/progress.h"
#include "common/version.h"
#include "policies/registry.h"
#include "sim/prefill_attention.h"
#include "sim/replay.h"
#include "traces/trace_io.h"

namespace kvsim::analysis {
namespace {

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
  for (const sim::Budget& budget : budgets) {
    if (budget.schedule == nullptr) continue;
    // Programmatic (serving): a broken schedule is a caller's bug, not an input error.
    KVSIM_ASSERT(
        options.regime == sim::Regime::kBounded && budget.kind == sim::Budget::Kind::kTokens,
        "budget '{}': a schedule needs a token budget in the bounded regime", budget.text);
    for (const int64_t tokens : *budget.schedule) {
      KVSIM_ASSERT(tokens >= 1 && static_cast<double>(tokens) <= budget.value,
                   "budget '{}': schedule entry {} is outside [1, {}]", budget.text, tokens,
                   budget.value);
    }
  }
}

int SweepPlan::EffectiveThreads() const {
  return threads > 0 ? threads : tbb::info::default_concurrency();
}

SweepPlan ReadSweepFile(const std::filesystem::path& path) {
  const toml::table root = ParseTomlFile(path);
  static const std::vector<std::string_view> kKeys = {"traces",   "budgets", "regime", "gqa",
                                                      "evict",    "ties",    "seed",   "threads",
                                                      "policies", "policy"};
  for (const auto& [key, value] : root) {
    if (std::find(kKeys.begin(), kKeys.end(), key.str()) == kKeys.end()) {
      ThrowInputError(
          "{}: unknown key '{}': expected one of traces, budgets, regime, gqa, evict, ties, "
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
  if (auto v = text("ties")) plan.options.ties = sim::ParseTieRule(*v, context + ": ties");
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

void WriteSweepOutputs(const std::filesystem::path& dir,
                       const SweepPlan& plan,
                       const SweepResult& result,
                       std::string_view command,
                       const SweepRunInfo& run) {
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
  meta["ties"] = sim::TieRuleName(plan.options.ties);
  meta["seed"] = plan.options.seed;
  meta["threads"] = plan.EffectiveThreads();
  meta["wall_seconds"] = result.wall_seconds;
  meta["command"] = std::string(command);
  meta["ranks"] = run.ranks;
  meta["cells_resumed"] = run.cells_resumed;
  meta["failures"] = nlohmann::json::array();
  for (const auto& [unit, error] : run.failures) {
    meta["failures"].push_back({{"unit", unit}, {"error", error}});
  }
  // CSV first: a failure there leaves neither file; the JSON is small and written last.
  result.table.WriteCsv(dir / "sweep.csv");
  WriteFileAtomically(dir / "sweep.json", JsonText(meta, 2) + "\n");
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
