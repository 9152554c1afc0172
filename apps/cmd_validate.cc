// `kvsim validate [--model M] [--prompts FILE] [--policies a,b] [--budgets 8,16] --out DIR`: how
// far the cheap open-loop numbers can be trusted for a model (analysis/validity_study.h). For
// every prompt x policy x budget it runs the closed loop and the open-loop replay of the same
// full-cache run, then writes
//  - DIR/validate_cells.csv: one row per cell, proxies and targets side by side;
//  - DIR/validate_spearman.csv: Spearman rho of every proxy against every target, over all cells,
//    per budget and per policy, with bootstrap intervals over prompts;
//  - DIR/validate_spearman.{png,svg,dat}: the figure (`kvsim plot` draws it again from the CSV);
// and prints the overall table, flagging where a proxy is weak.
#include <fmt/core.h>

#include <cmath>
#include <filesystem>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "analysis/csv.h"
#include "analysis/plot_validity.h"
#include "analysis/validity_study.h"
#include "apps/command.h"
#include "common/atomic_file.h"
#include "common/error.h"
#include "models/model_loader.h"
#include "policies/registry.h"
#include "sim/budget.h"

namespace kvsim::apps {
namespace {

struct ValidateArgs {
  std::string model;
  std::string tokenizer;
  std::string prompts;
  std::vector<std::string> policies;
  std::vector<std::string> budgets = {"4", "8", "16", "32", "64"};
  int64_t new_tokens = 96;
  std::string regime = "bounded";
  uint64_t seed = 0;
  int bootstrap = 1000;
  double confidence = 0.95;
  std::string out;
  bool no_plot = false;
};

// Every registered policy the closed loop can run and that evicts: not `full` (the reference),
// not `gate` (needs recorded flags), not the oracles (need the future).
std::vector<std::string> DefaultPolicies() {
  std::vector<std::string> names;
  policies::PolicySetup setup;
  setup.shape = models::ShapePreset("stories260k");
  setup.prompt_len = 64;
  setup.total_len = 80;
  for (const policies::PolicyInfo& info : policies::RegisteredPolicies()) {
    if (info.name == "full" || info.name == "gate") continue;
    policies::PolicyParams params;
    params.set_policy_name(std::string(info.name));
    const auto instance = info.factory(params, setup);
    if (dynamic_cast<const policies::OraclePolicy*>(instance.get()) != nullptr) continue;
    names.emplace_back(info.name);
  }
  return names;
}

// One prompt per line; blank lines and '#' lines skipped.
std::vector<std::string> ReadPromptLines(const std::string& path) {
  std::istringstream in(ReadFileToString(path));
  std::vector<std::string> prompts;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos || line[0] == '#') continue;
    prompts.push_back(line);
  }
  if (prompts.size() < 2) {
    ThrowInputError(
        "--prompts {}: {} prompt(s), expected at least 2 (one per line; the "
        "bootstrap resamples prompts)",
        path, prompts.size());
  }
  return prompts;
}

void WriteCells(const std::filesystem::path& path,
                std::span<const analysis::ValidityCell> cells,
                int64_t new_tokens) {
  using analysis::CsvWriter;
  std::vector<std::string> header = {"prompt", "prompt_len", "new_tokens",
                                     "policy", "budget",     "budget_tokens"};
  for (const auto& m : analysis::ValidityProxies()) header.emplace_back(m.name);
  for (const auto& m : analysis::ValidityTargets()) header.emplace_back(m.name);
  header.emplace_back("loop_mass_recall");
  CsvWriter csv(path, header);
  for (const analysis::ValidityCell& c : cells) {
    std::vector<std::string> row = {std::to_string(c.prompt),
                                    std::to_string(c.prompt_len),
                                    std::to_string(new_tokens),
                                    c.policy,
                                    c.budget,
                                    std::to_string(c.budget_tokens)};
    for (const auto& m : analysis::ValidityProxies()) row.push_back(CsvWriter::Number(m.get(c)));
    for (const auto& m : analysis::ValidityTargets()) row.push_back(CsvWriter::Number(m.get(c)));
    row.push_back(CsvWriter::Number(c.loop_mass_recall));
    csv.AddRow(row);
  }
  csv.Commit();
}

void WriteCorrelations(const std::filesystem::path& path,
                       std::span<const analysis::ProxyCorrelation> rows) {
  using analysis::CsvWriter;
  CsvWriter csv(path,
                {"proxy", "target", "group", "cells", "rho", "oriented_rho", "ci_low", "ci_high"});
  for (const analysis::ProxyCorrelation& r : rows) {
    csv.AddRow({r.proxy, r.target, r.group, std::to_string(r.cells), CsvWriter::Number(r.rho),
                CsvWriter::Number(r.oriented_rho), CsvWriter::Number(r.ci_low),
                CsvWriter::Number(r.ci_high)});
  }
  csv.Commit();
}

void RunValidate(const ValidateArgs& args) {
  const std::string model_path = args.model.empty() ? models::BundledModelPath() : args.model;
  const models::LoadedModel loaded = models::LoadModel(model_path, args.tokenizer);
  const std::string prompts_path =
      args.prompts.empty() ? models::BundledDataPath("validate_prompts.txt") : args.prompts;
  if (args.bootstrap < 0) ThrowInputError("--bootstrap: {} is negative", args.bootstrap);
  if (!(args.confidence > 0.0 && args.confidence < 1.0)) {
    ThrowInputError("--confidence: {} is not in (0, 1)", args.confidence);
  }
  analysis::ValidityPlan plan;
  for (const std::string& text : ReadPromptLines(prompts_path)) {
    plan.prompts.push_back(loaded.RequireTokenizer().Encode(text, true, false));
  }
  plan.policies = args.policies.empty() ? DefaultPolicies() : args.policies;
  plan.budgets = args.budgets;
  plan.new_tokens = args.new_tokens;
  plan.replay.regime = sim::ParseRegime(args.regime, "--regime");
  plan.replay.seed = args.seed;
  if (loaded.tokenizer) plan.eos_token = loaded.tokenizer->eos_id();

  const std::filesystem::path out(args.out);
  std::error_code ec;
  std::filesystem::create_directories(out, ec);
  if (ec) ThrowInputError("--out {}: cannot create the directory: {}", args.out, ec.message());

  fmt::print("validate: {} prompts x {} policies x {} budgets, {} new tokens each ({})\n",
             plan.prompts.size(), plan.policies.size(), plan.budgets.size(), plan.new_tokens,
             prompts_path);
  const std::vector<analysis::ValidityCell> cells = analysis::RunValidityCells(loaded.model, plan);
  const std::vector<analysis::ProxyCorrelation> rows = analysis::CorrelateProxies(
      cells, static_cast<int>(plan.prompts.size()), args.bootstrap, args.confidence, args.seed);
  WriteCells(out / "validate_cells.csv", cells, plan.new_tokens);
  WriteCorrelations(out / "validate_spearman.csv", rows);

  fmt::print(
      "Spearman rho over all {} cells, oriented (> 0: the proxy ranks cells as the damage "
      "does); [{:.0f}% bootstrap interval over prompts]\n",
      cells.size(), args.confidence * 100);
  fmt::print("{:<24}", "proxy");
  for (const auto& t : analysis::ValidityTargets()) fmt::print(" {:>24}", t.name);
  fmt::print("\n");
  std::vector<std::string> weak;
  for (const auto& p : analysis::ValidityProxies()) {
    fmt::print("{:<24}", p.name);
    for (const auto& t : analysis::ValidityTargets()) {
      for (const analysis::ProxyCorrelation& r : rows) {
        if (r.group != "all" || r.proxy != p.name || r.target != t.name) continue;
        fmt::print(" {:>24}",
                   fmt::format("{:.3f} [{:.2f},{:.2f}]", r.oriented_rho, r.ci_low, r.ci_high));
      }
    }
    fmt::print("\n");
  }
  // Weak spots: groups where the headline proxy (mass recall) ranks a target poorly.
  for (const analysis::ProxyCorrelation& r : rows) {
    if (r.proxy != "mass_recall" || r.group == "all") continue;
    if (std::isnan(r.oriented_rho) || r.oriented_rho < 0.5) {
      weak.push_back(fmt::format("{} vs {} in {}: {}", r.proxy, r.target, r.group,
                                 std::isnan(r.oriented_rho)
                                     ? std::string("undefined (a constant side)")
                                     : fmt::format("{:.2f}", r.oriented_rho)));
    }
  }
  if (!weak.empty()) {
    fmt::print(
        "weak (oriented rho < 0.5 or undefined; {} of the per-budget and per-policy "
        "groups):\n",
        weak.size());
    for (const std::string& w : weak) fmt::print("  {}\n", w);
  }
  fmt::print("{}\n{}\n", (out / "validate_cells.csv").string(),
             (out / "validate_spearman.csv").string());
  if (args.no_plot) return;
  const analysis::CsvTable table =
      analysis::CsvTable::Read((out / "validate_spearman.csv").string());
  for (const auto& figure : analysis::PlotValidity(table, out)) {
    fmt::print("{}\n{}\n", figure.png.string(), figure.svg.string());
  }
}

}  // namespace

void RegisterValidateCommand(CLI::App& app) {
  auto args = std::make_shared<ValidateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "validate",
      "How far the open-loop metrics can be trusted for a model: closed loop and open loop over "
      "prompts x policies x budgets, Spearman correlations (overall, per budget, per policy, "
      "bootstrap intervals over prompts) of every open-loop proxy with teacher-forced KL and "
      "agreement and free-running agreement; CSVs and a figure in --out");
  cmd->add_option("--model", args->model, "model file (default: the bundled stories260K GGUF)");
  cmd->add_option("--tokenizer", args->tokenizer, "llama2.c tokenizer file (see kvsim capture)");
  cmd->add_option("--prompts", args->prompts,
                  "prompts, one per line, '#' comments (default: models/data/"
                  "validate_prompts.txt, 8 prompts)");
  cmd->add_option("--policies", args->policies,
                  "policies, comma-separated (default: every registered policy the closed loop "
                  "runs, except full)")
      ->delimiter(',');
  cmd->add_option("--budgets", args->budgets, "budgets per (layer, KV head), comma-separated")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--new-tokens", args->new_tokens, "decode steps after each prompt")
      ->capture_default_str();
  cmd->add_option("--regime", args->regime, "bounded (every step) or prefill (compress once)")
      ->capture_default_str();
  cmd->add_option("--seed", args->seed, "base seed (random policies and the bootstrap)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--bootstrap", args->bootstrap, "bootstrap replicates (0: no intervals)")
      ->capture_default_str();
  cmd->add_option("--confidence", args->confidence, "bootstrap interval coverage")
      ->capture_default_str();
  cmd->add_option("-o,--out", args->out, "output directory, created if missing")->required();
  cmd->add_flag("--no-plot", args->no_plot, "write the CSVs only (no gnuplot needed)");
  cmd->callback([args] { RunValidate(*args); });
}

}  // namespace kvsim::apps
