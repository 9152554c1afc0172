// `kvsim replay --trace T --policy P --budget B [--param key=value]...`: replays one trace against
// one policy at one budget and prints a per-layer summary; optionally writes sweep.csv-format
// rows (--csv) and the memory ledger timeline (--memory-csv).
#include <fmt/core.h>

#include <string>
#include <vector>

#include "analysis/sweep.h"
#include "apps/command.h"
#include "common/error.h"
#include "sim/budget.h"

namespace kvsim::apps {
namespace {

struct ReplayArgs {
  std::string trace;
  std::string policy;
  std::string budget;
  std::vector<std::string> params;
  std::string regime = "bounded";
  std::string gqa = "kv-head";
  std::string evict = "after-attend";
  std::string ties = "newest";
  uint64_t seed = 0;
  int64_t prefill_block = 0;
  int threads = 0;
  bool exact_logits = false;
  std::string csv;
  std::string memory_csv;
};

std::string Fixed(double value, int digits) {
  return value != value ? std::string("-") : fmt::format("{:.{}f}", value, digits);
}

void RunReplay(const ReplayArgs& args) {
  analysis::SweepPlan plan;
  plan.traces = {args.trace};
  plan.policies = {
      analysis::PolicySpec{args.policy, policies::PolicyParams::Parse(args.params, "--param")}};
  plan.budgets = {sim::Budget::Parse(args.budget, "--budget")};
  plan.options.regime = sim::ParseRegime(args.regime, "--regime");
  plan.options.gqa_mode = sim::ParseGqaMode(args.gqa, "--gqa");
  plan.options.timing = sim::ParseEvictTiming(args.evict, "--evict");
  plan.options.seed = args.seed;
  plan.options.ties = sim::ParseTieRule(args.ties, "--ties");
  if (args.prefill_block < 0) {
    ThrowInputError("--prefill-block {} is negative: expected 0 (whole prompt) or a block size",
                    args.prefill_block);
  }
  plan.options.prefill_block = args.prefill_block;
  plan.threads = args.threads;
  plan.share_logits = !args.exact_logits;
  plan.progress = true;
  plan.Validate();
  const analysis::SweepResult result = analysis::RunSweep(plan);

  const auto& rows = result.table.rows();
  fmt::print("trace {}  policy {}{}  budget {}  regime {}  gqa {}  evict {}\n", rows[0].trace,
             rows[0].policy, rows[0].params.empty() ? "" : " (" + rows[0].params + ")",
             rows[0].budget, rows[0].regime, args.gqa, args.evict);
  fmt::print("{:>5} {:>9} {:>6} {:>11} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10} {:>14}\n", "layer",
             "budget", "steps", "mass_recall", "recall_p5", "rel_l2", "cosine", "top1", "top8",
             "resident", "kv_bytes_peak");
  for (const analysis::ResultRow& row : rows) {
    fmt::print("{:>5} {:>9} {:>6} {:>11} {:>10} {:>10} {:>8} {:>8} {:>8} {:>10} {:>14}\n",
               row.layer, Fixed(row.budget_tokens, row.layer == "all" ? 1 : 0), row.steps,
               Fixed(row.mass_recall.mean, 4), Fixed(row.mass_recall.p5, 4),
               Fixed(row.rel_l2_error.mean, 4), Fixed(row.cosine.mean, 4),
               Fixed(row.top_recall_mean[0], 3), Fixed(row.top_recall_mean[1], 3),
               Fixed(row.resident_tokens_mean, 1), row.kv_bytes_peak);
  }
  const analysis::ResultRow& all = rows.back();
  if (all.ranked_victims > 0) {
    fmt::print("ties decided {} of {} ranked victims ({:.2f}%, rule '{}'){}\n", all.tie_victims,
               all.ranked_victims, 100.0 * all.tie_share(), args.ties,
               all.tie_share() > 0.01 ? ": the result depends on the tie rule, try --ties" : "");
  }
  fmt::print("wall time {:.2f} s\n", result.wall_seconds);
  if (!args.csv.empty()) result.table.WriteCsv(args.csv);
  if (!args.memory_csv.empty()) analysis::WriteMemoryCsv(args.memory_csv, result.ledgers.at(0));
}

}  // namespace

void RegisterReplayCommand(CLI::App& app) {
  auto args = std::make_shared<ReplayArgs>();
  CLI::App* cmd = app.add_subcommand(
      "replay", "Replay a trace against one policy and budget; print what the policy loses.");
  cmd->add_option("--trace", args->trace, "trace file (HDF5)")->required();
  cmd->add_option("--policy", args->policy, "eviction policy (registered name)")->required();
  cmd->add_option("--budget", args->budget, "tokens per (layer, KV head): 256, or 0.25p")
      ->required();
  cmd->add_option("--param", args->params, "policy parameter key=value (repeatable)");
  cmd->add_option("--regime", args->regime, "bounded (every step) or prefill (compress once)")
      ->capture_default_str();
  cmd->add_option("--gqa", args->gqa, "kv-head (group mean) or query-head (repeat_kv)")
      ->capture_default_str();
  cmd->add_option("--evict", args->evict, "after-attend or before-attend")->capture_default_str();
  cmd->add_option("--ties", args->ties,
                  "how equal scores are ordered at a selection boundary: newest (default: the "
                  "newer position stays), oldest, or random (seeded); the tie_share column says "
                  "how many victims a tie decided")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "base seed (random policies)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefill-block", args->prefill_block,
                  "prefill in blocks of N tokens, evicting after each (EpiCache); 0 = whole prompt")
      ->capture_default_str();
  cmd->add_option("--threads", args->threads, "worker threads, 0 = all cores")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  cmd->add_flag("--exact-logits", args->exact_logits,
                "each cell computes q.k over its own resident keys, as kvsim 0.1 did (slower), "
                "instead of taking them from the shared full-cache block: a tie between pooled "
                "scores then breaks as it did");
  cmd->add_option("--csv", args->csv, "also write the rows as sweep.csv format to this file");
  cmd->add_option("--memory-csv", args->memory_csv, "write the memory ledger (memory.csv)");
  cmd->callback([args] { RunReplay(*args); });
}

}  // namespace kvsim::apps
