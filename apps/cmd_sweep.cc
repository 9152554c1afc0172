// `kvsim sweep [--config sweep.toml] [--trace T]... [--policy P]... [--budget B]... --out DIR`:
// replays every policy x budget x trace cell (sharing full attention across cells) and writes
// DIR/sweep.csv and DIR/sweep.json (analysis/RESULTS_FORMAT.md). Identical numbers for any
// --threads.
#include <fmt/core.h>

#include <memory>
#include <string>
#include <vector>

#include "analysis/distributed_sweep.h"
#include "analysis/sweep.h"
#include "analysis/unit_executor.h"
#include "apps/command.h"
#include "common/error.h"
#include "policies/registry.h"
#include "sim/budget.h"
#include "traces/trace_io.h"
#ifdef KVSIM_HAVE_MPI
#include "analysis/mpi/mpi_executor.h"
#endif

namespace kvsim::apps {
namespace {

struct SweepArgs {
  std::string config;
  std::vector<std::string> traces;
  std::vector<std::string> policies;
  std::vector<std::string> budgets;
  std::vector<std::string> params;  // policy:key=value
  std::string regime;
  std::string gqa;
  std::string evict;
  std::string ties;
  int64_t seed = -1;
  int64_t prefill_block = -1;
  int threads = -1;
  bool exact_logits = false;
  bool keep_going = false;
  int cells_per_unit = 0;
  std::string out;
};

// The command line as parsed (for sweep.json), flags in a fixed order.
std::string CommandLine(const SweepArgs& args) {
  std::string line = "kvsim sweep";
  const auto add = [&](const char* flag, const std::string& value) {
    if (!value.empty()) line += fmt::format(" {} {}", flag, value);
  };
  add("--config", args.config);
  for (const auto& v : args.traces) add("--trace", v);
  for (const auto& v : args.policies) add("--policy", v);
  for (const auto& v : args.budgets) add("--budget", v);
  for (const auto& v : args.params) add("--param", v);
  add("--regime", args.regime);
  add("--gqa", args.gqa);
  add("--evict", args.evict);
  add("--ties", args.ties);
  if (args.seed >= 0) add("--seed", std::to_string(args.seed));
  if (args.prefill_block >= 0) add("--prefill-block", std::to_string(args.prefill_block));
  if (args.threads >= 0) add("--threads", std::to_string(args.threads));
  if (args.exact_logits) line += " --exact-logits";
  if (args.keep_going) line += " --keep-going";
  if (args.cells_per_unit > 0) add("--cells-per-unit", std::to_string(args.cells_per_unit));
  add("--out", args.out);
  return line;
}

// `--policy all`: every registered policy, except `gate` when a trace lacks the Attention-Gate
// flags it replays (/gate_flags, traces/FORMAT.md); the skip is reported, not silent.
std::vector<std::string> ApplicablePolicies(const std::vector<std::string>& traces) {
  bool all_have_gate_flags = !traces.empty();
  for (const std::string& path : traces) {
    try {
      all_have_gate_flags = all_have_gate_flags && traces::TraceReader(path).has_gate_flags();
    } catch (const InputError&) {
      all_have_gate_flags = false;  // the unit of an unreadable trace reports why
    }
  }
  std::vector<std::string> names;
  for (const std::string& name : policies::PolicyNames()) {
    if (name == "gate" && !all_have_gate_flags) {
      fmt::print("--policy all: skipping 'gate' (a trace has no /gate_flags to replay)\n");
      continue;
    }
    names.push_back(name);
  }
  return names;
}

void RunSweepCommand(const SweepArgs& args) {
  analysis::SweepPlan plan;
  if (!args.config.empty()) plan = analysis::ReadSweepFile(args.config);
  plan.traces.insert(plan.traces.end(), args.traces.begin(), args.traces.end());
  plan.traces = analysis::ExpandTraceArguments(plan.traces);
  for (const std::string& name : args.policies) {
    if (name == "all") {
      for (const std::string& registered : ApplicablePolicies(plan.traces)) {
        plan.policies.push_back({registered, {}});
      }
    } else {
      plan.policies.push_back({name, {}});
    }
  }
  for (const std::string& b : args.budgets)
    plan.budgets.push_back(sim::Budget::Parse(b, "--budget"));
  for (const std::string& item : args.params) {
    const size_t colon = item.find(':');
    const size_t eq = item.find('=');
    if (colon == std::string::npos || colon == 0 || eq == std::string::npos || eq < colon) {
      ThrowInputError(
          "--param '{}' is not valid: expected policy:key=value, e.g. h2o:recent_ratio=0.3", item);
    }
    const std::string policy = item.substr(0, colon);
    bool found = false;
    for (analysis::PolicySpec& spec : plan.policies) {
      if (spec.name != policy) continue;
      spec.params.Set(item.substr(colon + 1, eq - colon - 1), item.substr(eq + 1));
      found = true;
    }
    if (!found) {
      ThrowInputError("--param '{}': policy '{}' is not in the sweep", item, policy);
    }
  }
  if (!args.regime.empty()) plan.options.regime = sim::ParseRegime(args.regime, "--regime");
  if (!args.gqa.empty()) plan.options.gqa_mode = sim::ParseGqaMode(args.gqa, "--gqa");
  if (!args.evict.empty()) plan.options.timing = sim::ParseEvictTiming(args.evict, "--evict");
  if (!args.ties.empty()) plan.options.ties = sim::ParseTieRule(args.ties, "--ties");
  if (args.seed >= 0) plan.options.seed = static_cast<uint64_t>(args.seed);
  if (args.prefill_block >= 0) plan.options.prefill_block = args.prefill_block;
  if (args.threads >= 0) plan.threads = args.threads;
  plan.share_logits = !args.exact_logits;
  plan.progress = true;
  plan.keep_ledgers =
      false;  // sweep.csv carries each cell's kv bytes; memory.csv is `kvsim replay`'s
  plan.Validate();
  if (args.cells_per_unit < 0) {
    ThrowInputError("--cells-per-unit {} is not valid: expected >= 1 (or 0 = automatic)",
                    args.cells_per_unit);
  }

  std::unique_ptr<analysis::UnitExecutor> executor;
#ifdef KVSIM_HAVE_MPI
  if (analysis::MpiExecutor::LaunchedByMpi()) executor = std::make_unique<analysis::MpiExecutor>();
#endif
  if (!executor) executor = std::make_unique<analysis::LocalExecutor>();
  if (executor->rank() == 0)
    plan.progress = executor->ranks() == 1;
  else
    plan.progress = false;
  analysis::DistributedSweepOptions options{.out_dir = args.out,
                                            .command = CommandLine(args),
                                            .keep_going = args.keep_going,
                                            .cells_per_unit = args.cells_per_unit};
  analysis::DistributedSweepReport report;
  try {
    if (executor->rank() == 0 && !std::filesystem::is_directory(args.out)) {
      ThrowInputError("--out '{}' is not a directory (create it first)", args.out);
    }
    report = analysis::RunDistributedSweep(plan, options, *executor);
  } catch (const std::exception& e) {
    if (executor->ranks() > 1) {  // say why here: MPI_Abort ends this process too
      const bool internal = dynamic_cast<const InternalError*>(&e) != nullptr;
      fmt::print(stderr, "kvsim: {}{}\n", internal ? "" : "error: ", e.what());
      executor->Abort(internal ? 3 : 2);
    }
    throw;
  }
  if (report.wrote_outputs) {
    fmt::print(
        "{} cells ({} from the journal) in {:.2f} s on {} rank(s) -> {}/sweep.csv, "
        "sweep.json\n",
        report.cells_total, report.cells_resumed, report.wall_seconds, executor->ranks(), args.out);
    if (report.units_run > 0) {
      fmt::print(
          "units: {} run, {:.3f} units/s; results {:.1f} KiB per unit ({:.1f} KiB from "
          "other ranks in all); rank 0 spent {:.2f} ms per unit decoding and journaling\n",
          report.units_run, report.units_run / report.wall_seconds,
          static_cast<double>(report.bytes_of_results) / 1024.0 / report.units_run,
          static_cast<double>(report.bytes_received) / 1024.0,
          1e3 * report.gather_seconds / report.units_run);
    }
  }
}

}  // namespace

void RegisterSweepCommand(CLI::App& app) {
  auto args = std::make_shared<SweepArgs>();
  CLI::App* cmd = app.add_subcommand(
      "sweep", "Replay policies x budgets x traces; write tidy sweep.csv + sweep.json.");
  cmd->add_option("--config", args->config, "sweep file (TOML); flags add to / override it");
  cmd->add_option("--trace", args->traces,
                  "trace file, glob ('data/*.h5') or list file (one path per line); repeatable");
  cmd->add_option("--policy", args->policies,
                  "policy name (repeatable); `all` = every registered policy");
  cmd->add_option("--budget", args->budgets, "budget: 256 or 0.25p (repeatable)");
  cmd->add_option("--param", args->params, "policy parameter policy:key=value (repeatable)");
  cmd->add_option("--regime", args->regime, "bounded (default) or prefill");
  cmd->add_option("--gqa", args->gqa, "kv-head (default) or query-head");
  cmd->add_option("--evict", args->evict, "after-attend (default) or before-attend");
  cmd->add_option("--ties", args->ties,
                  "how equal scores are ordered at a selection boundary: newest (default: the "
                  "newer position stays), oldest, or random (seeded); the tie_share column says "
                  "how many victims a tie decided");
  cmd->add_option("--seed", args->seed, "base seed (default 0)")->check(CLI::NonNegativeNumber);
  cmd->add_option("--prefill-block", args->prefill_block,
                  "prefill in blocks of N tokens, evicting after each (EpiCache); default whole "
                  "prompt")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--threads", args->threads, "worker threads, 0 = all cores (default)")
      ->check(CLI::Range(0, 4096));
  cmd->add_flag("--exact-logits", args->exact_logits,
                "each cell computes q.k over its own resident keys, as kvsim 0.1 did (slower), "
                "instead of taking them from the shared full-cache block: a tie between pooled "
                "scores then breaks as it did");
  cmd->add_flag("--keep-going", args->keep_going,
                "a unit that fails (a corrupt trace) is recorded in sweep.json and the rest "
                "finishes; the exit status is still 2");
  cmd->add_option("--cells-per-unit", args->cells_per_unit,
                  "cells (policy x budget) per unit of work; 0 = automatic (one unit per trace "
                  "on one process, about 4 units per MPI rank)");
  cmd->add_option("--out", args->out,
                  "output directory (must exist); its sweep.journal/ lets a re-run of the same "
                  "command resume")
      ->required();
  cmd->callback([args] { RunSweepCommand(*args); });
}

}  // namespace kvsim::apps
