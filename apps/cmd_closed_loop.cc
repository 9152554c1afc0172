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
#include "apps/command.h"
#include "common/error.h"
#include "models/model_loader.h"
#include "policies/laq.h"
#include "policies/policy_params.h"
#include "sim/closed_loop.h"
#include "sim/prefill_attention.h"
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
};

// Open-loop metrics of every decode step, averaged over layers and query heads.
struct OpenLoopSteps {
  std::vector<double> mass_recall;
  std::vector<double> rel_l2_error;
  std::vector<double> cosine;
  analysis::MetricSamples all;  // every (layer, step, query head) sample, for the summary
};

// Replays the full-cache run's trace with fresh instances of the policy (open loop).
OpenLoopSteps ReplayOpenLoop(const models::LlamaModel& model,
                             const sim::ClosedLoopResult& run,
                             const sim::ClosedLoopOptions& options,
                             const sim::LayerPolicyFactory& make_policy) {
  const traces::Trace& trace = run.full_trace;
  const int layers = trace.num_layers();
  const int64_t n = trace.meta().prompt_len;
  const int64_t steps = trace.meta().decode_len();
  const int q_heads = trace.shape().q_heads;
  std::vector<std::unique_ptr<policies::EvictionPolicy>> owned;
  std::vector<policies::EvictionPolicy*> raw;
  std::vector<std::unique_ptr<sim::PrefillAttention>> prefill_owned;
  std::vector<const sim::PrefillAttention*> prefill;
  sim::ModelContext context{.model = &model,
                            .prompt_state = &run.prompt_state,
                            .prompt_queries = {},
                            .prompt_len = n,
                            .first_token = run.full_tokens[static_cast<size_t>(n)],
                            .budget_tokens = options.budget_tokens,
                            .eos_token = options.eos_token};
  for (int l = 0; l < layers; ++l) context.prompt_queries.push_back(&trace.layer(l).queries);
  for (int l = 0; l < layers; ++l) {
    const policies::PolicySetup setup{.shape = trace.shape(),
                                      .layer = l,
                                      .options = options.replay,
                                      .prompt_len = n,
                                      .total_len = trace.meta().total_len,
                                      .seed = sim::LayerSeed(options.replay.seed, l)};
    owned.push_back(make_policy(setup));
    raw.push_back(owned.back().get());
    if (auto* in_loop = dynamic_cast<sim::ModelInLoopPolicy*>(raw.back())) {
      in_loop->AttachModel(context);
    }
    prefill_owned.push_back(std::make_unique<sim::PrefillAttention>(trace.layer(l), n));
    prefill.push_back(prefill_owned.back().get());
  }
  const std::vector<int64_t> budgets =
      sim::PlanLayerBudgets(trace, raw, prefill, options.budget_tokens);
  OpenLoopSteps out;
  out.mass_recall.assign(static_cast<size_t>(steps), 0.0);
  out.rel_l2_error.assign(static_cast<size_t>(steps), 0.0);
  out.cosine.assign(static_cast<size_t>(steps), 0.0);
  for (int l = 0; l < layers; ++l) {
    const analysis::FullCacheAttention full(trace, l);
    analysis::LayerMetrics metrics(full);
    const sim::LayerReplayInput input{.trace = &trace,
                                      .layer = l,
                                      .options = options.replay,
                                      .budget_tokens = budgets[static_cast<size_t>(l)],
                                      .prefill = prefill[static_cast<size_t>(l)],
                                      .future = &full};
    sim::ReplayLayer(input, *raw[static_cast<size_t>(l)], &metrics);
    const analysis::MetricSamples& s = metrics.samples();
    for (int64_t k = 0; k < steps; ++k) {
      for (int h = 0; h < q_heads; ++h) {
        const auto i = static_cast<size_t>(k * q_heads + h);
        out.mass_recall[static_cast<size_t>(k)] += s.mass_recall[i];
        out.rel_l2_error[static_cast<size_t>(k)] += s.rel_l2_error[i];
        out.cosine[static_cast<size_t>(k)] += s.cosine[i];
      }
    }
    out.all.Append(s);
  }
  const double per_step = static_cast<double>(layers * q_heads);
  for (int64_t k = 0; k < steps; ++k) {
    out.mass_recall[static_cast<size_t>(k)] /= per_step;
    out.rel_l2_error[static_cast<size_t>(k)] /= per_step;
    out.cosine[static_cast<size_t>(k)] /= per_step;
  }
  return out;
}

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

  const sim::ClosedLoopResult run = sim::RunClosedLoop(loaded.model, prompt, options, make_policy);
  const OpenLoopSteps open = ReplayOpenLoop(loaded.model, run, options, make_policy);

  if (!args.csv.empty()) {
    analysis::CsvWriter csv(args.csv, {"step", "full_token", "free_token", "teacher_token", "agree",
                                       "nll_full", "nll_evicted", "kl", "resident_tokens_mean",
                                       "open_mass_recall", "open_rel_l2_error", "open_cosine"});
    using analysis::CsvWriter;
    for (size_t k = 0; k < run.steps.size(); ++k) {
      const sim::ClosedLoopStep& r = run.steps[k];
      csv.AddRow({std::to_string(r.step), std::to_string(r.full_next), std::to_string(r.free_next),
                  std::to_string(r.teacher_next), r.free_next == r.full_next ? "1" : "0",
                  CsvWriter::Number(r.nll_full), CsvWriter::Number(r.nll_evicted),
                  CsvWriter::Number(r.kl), CsvWriter::Number(r.resident_mean),
                  CsvWriter::Number(open.mass_recall[k]), CsvWriter::Number(open.rel_l2_error[k]),
                  CsvWriter::Number(open.cosine[k])});
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
  line("open_mass_recall_mean", analysis::Mean(open.all.mass_recall));
  line("open_rel_l2_error_mean", analysis::Mean(open.all.rel_l2_error));
  line("open_cosine_mean", analysis::Mean(open.all.cosine));
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
  cmd->callback([args] { RunClosedLoopCommand(*args); });
}

}  // namespace kvsim::apps
