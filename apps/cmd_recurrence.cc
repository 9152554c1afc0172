// `kvsim recurrence TRACE -o DIR [--importance topk:8] [--window 128] [--policy P --budget B
// ...]`: token importance recurrence from the full-cache attention (analysis/recurrence.h) and,
// per policy x budget, how many evicted tokens would have been important again. Writes
// DIR/recurrence.csv and DIR/recurrence_summary.csv (analysis/RESULTS_FORMAT.md).
#include <fmt/core.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "analysis/csv.h"
#include "analysis/recurrence.h"
#include "apps/command.h"
#include "common/error.h"
#include "policies/registry.h"
#include "traces/trace_io.h"

namespace kvsim::apps {
namespace {

struct Args {
  std::string trace;
  std::string out;
  std::string importance = "topk:8";
  int64_t window = 128;
  std::vector<std::string> policies;
  std::vector<std::string> budgets;
  std::vector<std::string> params;
  std::string regime = "bounded";
  std::string gqa = "kv-head";
  std::string evict = "after-attend";
  uint64_t seed = 0;
};

std::optional<double> Fraction(int64_t part, int64_t whole) {
  if (whole == 0) return std::nullopt;
  return static_cast<double>(part) / static_cast<double>(whole);
}

std::string Integer(int64_t value) { return fmt::format("{}", value); }

void Run(const Args& args) {
  using analysis::CsvWriter;
  const analysis::ImportanceRule rule =
      analysis::ImportanceRule::Parse(args.importance, "--importance");
  if (args.window < 1) {
    ThrowInputError("--window: {} is not valid: expected an integer >= 1 (decode steps)",
                    args.window);
  }
  sim::ReplayOptions options;
  options.regime = sim::ParseRegime(args.regime, "--regime");
  options.gqa_mode = sim::ParseGqaMode(args.gqa, "--gqa");
  options.timing = sim::ParseEvictTiming(args.evict, "--evict");
  options.seed = args.seed;
  const policies::PolicyParams params = policies::PolicyParams::Parse(args.params, "--param");
  std::vector<std::string> param_strings;
  for (const std::string& name : args.policies) {
    param_strings.push_back(policies::CheckPolicy(name, params));
  }
  std::vector<sim::Budget> budgets;
  for (const std::string& text : args.budgets)
    budgets.push_back(sim::Budget::Parse(text, "--budget"));
  if (!args.policies.empty() && budgets.empty()) {
    ThrowInputError("--policy given without --budget: expected at least one budget");
  }
  const traces::Trace trace = traces::ReadTrace(args.trace);
  const std::filesystem::path out(args.out);
  std::filesystem::create_directories(out);
  const int layers = trace.num_layers();
  std::vector<std::unique_ptr<analysis::FullCacheAttention>> full;
  std::vector<std::unique_ptr<analysis::LayerImportance>> importance;
  std::vector<analysis::RecurrenceStats> stats;
  for (int l = 0; l < layers; ++l) {
    full.push_back(std::make_unique<analysis::FullCacheAttention>(trace, l));
    importance.push_back(std::make_unique<analysis::LayerImportance>(*full.back(), rule));
    stats.push_back(analysis::AnalyzeRecurrence(*importance.back(), args.window));
  }

  CsvWriter intervals(out / "recurrence.csv", {"layer", "interval", "count"});
  for (int l = 0; l < layers; ++l) {
    for (const auto& [interval, count] : stats[static_cast<size_t>(l)].interval_counts) {
      intervals.AddRow({Integer(l), Integer(interval), Integer(count)});
    }
  }

  CsvWriter summary(out / "recurrence_summary.csv",
                    {"trace", "layer", "importance", "window", "important_tokens",
                     "recurring_tokens", "long_recurring_tokens", "long_recurrence_fraction",
                     "policy", "params", "budget", "budget_tokens", "regime", "evicted_tokens",
                     "evicted_recurring", "evicted_recurring_fraction", "lost_important_events"});
  const std::string trace_name = std::filesystem::path(args.trace).filename().string();
  analysis::RecurrenceStats all_stats;
  for (const analysis::RecurrenceStats& s : stats) all_stats.Merge(s);
  // One row: trace statistics of `layer`, then the policy's columns (empty without a policy).
  const auto add_row = [&](const std::string& layer, const analysis::RecurrenceStats& s,
                           const std::vector<std::string>& policy_columns) {
    std::vector<std::string> row = {
        trace_name,
        layer,
        rule.text,
        Integer(args.window),
        Integer(s.important_tokens),
        Integer(s.recurring_tokens),
        Integer(s.long_recurring_tokens),
        CsvWriter::Number(Fraction(s.long_recurring_tokens, s.important_tokens))};
    row.insert(row.end(), policy_columns.begin(), policy_columns.end());
    summary.AddRow(row);
  };
  const auto harm_columns = [&](size_t p, const sim::Budget& budget, double budget_tokens,
                                const analysis::EvictionHarm& h) {
    return std::vector<std::string>{
        args.policies[p],
        param_strings[p],
        budget.text,
        CsvWriter::Number(budget_tokens),
        sim::RegimeName(options.regime),
        Integer(h.evicted_tokens),
        Integer(h.evicted_recurring),
        CsvWriter::Number(Fraction(h.evicted_recurring, h.evicted_tokens)),
        Integer(h.lost_important_events)};
  };
  if (args.policies.empty()) {
    const std::vector<std::string> empty(9);
    for (int l = 0; l < layers; ++l) add_row(Integer(l), stats[static_cast<size_t>(l)], empty);
    add_row("all", all_stats, empty);
  }
  std::vector<const analysis::FullCacheAttention*> full_ptrs;
  std::vector<const analysis::LayerImportance*> importance_ptrs;
  for (int l = 0; l < layers; ++l) {
    full_ptrs.push_back(full[static_cast<size_t>(l)].get());
    importance_ptrs.push_back(importance[static_cast<size_t>(l)].get());
  }
  for (size_t p = 0; p < args.policies.size(); ++p) {
    for (const sim::Budget& budget : budgets) {
      const std::vector<analysis::EvictionHarm> harm = analysis::MeasureEvictionHarm(
          trace, full_ptrs, importance_ptrs, args.policies[p], params, budget, options);
      analysis::EvictionHarm all_harm;
      double budget_sum = 0;
      for (int l = 0; l < layers; ++l) {
        const analysis::EvictionHarm& h = harm[static_cast<size_t>(l)];
        add_row(Integer(l), stats[static_cast<size_t>(l)],
                harm_columns(p, budget, static_cast<double>(h.budget_tokens), h));
        all_harm.Merge(h);
        budget_sum += static_cast<double>(h.budget_tokens);
      }
      add_row("all", all_stats,
              harm_columns(p, budget, budget_sum / static_cast<double>(layers), all_harm));
    }
  }
  intervals.Commit();
  summary.Commit();
}

}  // namespace

void RegisterRecurrenceCommand(CLI::App& app) {
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "recurrence",
      "Token importance recurrence (LazyEviction): intervals between the decode steps at which "
      "each (query head, position) is important in the full-cache attention, the tokens that "
      "come back after >= W unimportant steps, and, per --policy x --budget, how many evicted "
      "tokens would have been important again. Writes recurrence.csv and "
      "recurrence_summary.csv into --out");
  cmd->add_option("trace", args->trace, "trace file (HDF5, traces/FORMAT.md)")->required();
  cmd->add_option("-o,--out", args->out, "output directory (created if missing)")->required();
  cmd->add_option("--importance", args->importance,
                  "when a token is important at a step: topk:K, mass:P (smallest set of largest "
                  "weights summing to P) or weight:A (weight >= A)")
      ->capture_default_str();
  cmd->add_option("--window", args->window,
                  "W: a long recurrence has >= W unimportant steps between two important ones "
                  "(LazyEviction's W = 128)")
      ->capture_default_str();
  cmd->add_option("--policy", args->policies, "eviction policy to replay (repeatable)");
  cmd->add_option("--budget", args->budgets, "budget: tokens (256) or prompt fraction (0.25p)");
  cmd->add_option("--param", args->params, "policy parameter key=value (every --policy)");
  cmd->add_option("--regime", args->regime, "bounded or prefill")->capture_default_str();
  cmd->add_option("--gqa", args->gqa, "kv-head or query-head")->capture_default_str();
  cmd->add_option("--evict", args->evict, "after-attend or before-attend")->capture_default_str();
  cmd->add_option("--seed", args->seed, "base seed of the policies")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->callback([args] { Run(*args); });
}

}  // namespace kvsim::apps
