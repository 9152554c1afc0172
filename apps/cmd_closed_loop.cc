// `kvsim closed-loop --policy P --budget B [--model M] [--prompt TEXT | --prompt-ids F]
// [--new-tokens N] [--csv F]`: the model decodes while the policy really evicts from its cache
// (sim/closed_loop.h), and the damage is measured against the full-cache run of the same prompt:
// next-token agreement of the free-running model, teacher-forced perplexity and KL(full ||
// evicted). Next to it, the cheap open-loop proxies of the SAME run: the full-cache run's trace
// replayed with the same policy and budget through the open-loop engine (sim/replay.h +
// analysis/metrics.h, exactly what `kvsim replay` would report on a capture of that run), so
// one sees how well attention-mass recall etc. predict the real damage.
#include <fmt/core.h>

#include <memory>
#include <string>
#include <vector>

#include "analysis/csv.h"
#include "analysis/metrics.h"
#include "analysis/open_loop_proxies.h"
#include "apps/command.h"
#include "common/error.h"
#include "models/model_loader.h"
#include "policies/laq.h"
#include "policies/policy_params.h"
#include "sim/closed_loop.h"
#include "sim/replay.h"

namespace kvsim::apps {
namespace {

struct ClosedLoopArgs {
  std::string model;
  std::string tokenizer;
  std::string prompt = "Once upon a time";
  std::string prompt_ids;
  int64_t new_tokens = 64;
  std::string policy;
  std::vector<std::string> params;
  std::string budget;
  std::string regime = "bounded";
  uint64_t seed = 0;
  std::string csv;
  std::string gate_flags;
};

void RunClosedLoopCommand(const ClosedLoopArgs& args) {
  const std::string path = args.model.empty() ? models::BundledModelPath() : args.model;
  const models::LoadedModel loaded = models::LoadModel(path, args.tokenizer);
  const std::vector<int32_t> prompt =
      args.prompt_ids.empty()
          ? loaded.RequireTokenizer().Encode(args.prompt, true, false)
          : models::ReadTokenIdsFile(args.prompt_ids, loaded.model.config().vocab_size);
  const policies::PolicyParams params = policies::PolicyParams::Parse(args.params, "--param");
  const sim::LayerPolicyFactory make_policy =
      policies::ClosedLoopPolicyFactory(args.policy, params);
  const sim::Budget budget = sim::Budget::Parse(args.budget, "--budget");
  sim::ClosedLoopOptions options;
  options.new_tokens = args.new_tokens;
  options.budget_tokens = budget.ResolveTokens(static_cast<int64_t>(prompt.size()));
  options.replay.regime = sim::ParseRegime(args.regime, "--regime");
  options.replay.seed = args.seed;
  if (loaded.tokenizer) options.eos_token = loaded.tokenizer->eos_id();
  if (!args.gate_flags.empty()) {
    options.gate_flags = sim::ReadGateFlagsForModel(
        args.gate_flags, loaded.model, static_cast<int64_t>(prompt.size()) + args.new_tokens,
        "--gate-flags");
  }

  const sim::ClosedLoopResult run = sim::RunClosedLoop(loaded.model, prompt, options, make_policy);
  const analysis::OpenLoopProxies open =
      analysis::ReplayOpenLoop(loaded.model, run, options, make_policy);

  if (!args.csv.empty()) {
    analysis::CsvWriter csv(args.csv, {"step", "full_token", "free_token", "teacher_token", "agree",
                                       "nll_full", "nll_evicted", "kl", "resident_tokens_mean",
                                       "mass_recall", "top1_recall", "top8_recall", "top32_recall",
                                       "open_mass_recall", "open_rel_l2_error", "open_cosine"});
    using analysis::CsvWriter;
    for (size_t k = 0; k < run.steps.size(); ++k) {
      const sim::ClosedLoopStep& r = run.steps[k];
      csv.AddRow(
          {std::to_string(r.step), std::to_string(r.full_next), std::to_string(r.free_next),
           std::to_string(r.teacher_next), r.free_next == r.full_next ? "1" : "0",
           CsvWriter::Number(r.nll_full), CsvWriter::Number(r.nll_evicted), CsvWriter::Number(r.kl),
           CsvWriter::Number(r.resident_mean), CsvWriter::Number(r.mass_recall),
           CsvWriter::Number(r.top_recall[0]), CsvWriter::Number(r.top_recall[1]),
           CsvWriter::Number(r.top_recall[2]), CsvWriter::Number(open.step_mass_recall[k]),
           CsvWriter::Number(open.step_rel_l2_error[k]), CsvWriter::Number(open.step_cosine[k])});
    }
    csv.Commit();
  }

  const int64_t steps = static_cast<int64_t>(run.steps.size());
  fmt::print("closed-loop: policy {} budget {} ({} tokens per layer and KV head), regime {}\n",
             args.policy, budget.text, options.budget_tokens, args.regime);
  fmt::print("prompt {} tokens, {} decode steps (greedy)\n", run.prompt_len, steps);
  fmt::print("{:<34} {:>12}\n", "metric", "value");
  const auto line = [](std::string_view name, double value) {
    fmt::print("{:<34} {:>12.6g}\n", name, value);
  };
  line("first_divergence_step", static_cast<double>(run.first_divergence));
  line("agreement (free-running)", run.agreement);
  line("agreement (teacher-forced top-1)", run.teacher_agreement);
  line("perplexity_full", run.perplexity_full);
  line("perplexity_evicted", run.perplexity_evicted);
  line("kl_mean (nats)", run.kl_mean);
  line("mass_recall_mean (in the loop)", run.mass_recall_mean);
  for (size_t i = 0; i < sim::kClosedLoopTopK.size(); ++i) {
    line(fmt::format("top{}_recall_mean (in the loop)", sim::kClosedLoopTopK[i]),
         run.top_recall_mean[i]);
  }
  line("open_mass_recall_mean", analysis::Mean(open.all.mass_recall));
  line("open_rel_l2_error_mean", analysis::Mean(open.all.rel_l2_error));
  line("open_cosine_mean", analysis::Mean(open.all.cosine));
  for (size_t i = 0; i < analysis::kTopK.size(); ++i) {
    line(fmt::format("open_top{}_recall_mean", analysis::kTopK[i]), open.all.TopRecallMean(i));
  }
  if (loaded.tokenizer) {
    fmt::print("full:    {}\n", loaded.tokenizer->Decode(run.full_tokens));
    fmt::print("evicted: {}\n", loaded.tokenizer->Decode(run.free_tokens));
  }
}

}  // namespace

void RegisterClosedLoopCommand(CLI::App& app) {
  auto args = std::make_shared<ClosedLoopArgs>();
  CLI::App* cmd = app.add_subcommand(
      "closed-loop",
      "Decode with a policy really evicting from the model's cache; compare with the full-cache "
      "run (agreement, perplexity, KL) and with the open-loop metrics of the same run");
  cmd->add_option("--model", args->model, "model file (default: the bundled stories260K GGUF)");
  cmd->add_option("--tokenizer", args->tokenizer, "llama2.c tokenizer file (see kvsim capture)");
  auto* prompt = cmd->add_option("--prompt", args->prompt, "prompt text")->capture_default_str();
  cmd->add_option("--prompt-ids", args->prompt_ids, "read the prompt as token ids")
      ->excludes(prompt);
  cmd->add_option("--new-tokens", args->new_tokens, "decode steps after the prompt")
      ->capture_default_str();
  cmd->add_option("--policy", args->policy,
                  "eviction policy: a registered name, or laq / laqpp (faithful LAQ, closed loop "
                  "only)")
      ->required();
  cmd->add_option("--param", args->params, "policy parameter key=value (repeatable)");
  cmd->add_option("--budget", args->budget, "tokens per (layer, KV head): 16, or 0.25p")
      ->required();
  cmd->add_option("--regime", args->regime, "bounded (every step) or prefill (compress once)")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "base seed (random policies)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--csv", args->csv, "write per-step rows (closed_loop.csv format) here");
  cmd->add_option("--gate-flags", args->gate_flags,
                  "a trace whose /gate_flags (recorded Attention-Gate keep/evict flags, one per "
                  "layer, KV head and position) policy `gate` replays");
  cmd->callback([args] { RunClosedLoopCommand(*args); });
}

}  // namespace kvsim::apps
