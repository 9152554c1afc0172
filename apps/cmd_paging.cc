// `kvsim paging INPUT`: paging-theory experiments on request streams (sim/paging/README.md):
// faults per policy over cache sizes in offload and pure-eviction mode beside the offline
// optimum (paging_mrc.csv), and the prediction policies' faults against the error rate of their
// bits (paging_predictions.csv). INPUT is a trace (requests extracted on the fly), a requests
// file written by `kvsim requests`, or one stream in libCacheSim's csv, oracleGeneral or txt.
#include <fmt/core.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "apps/command.h"
#include "common/error.h"
#include "sim/paging/cache_size.h"
#include "sim/paging/experiment.h"
#include "sim/paging/extract.h"
#include "sim/paging/input_formats.h"
#include "sim/paging/registry.h"

namespace kvsim::apps {
namespace {

struct PagingArgs {
  std::string input;
  std::string input_format = "auto";
  std::string out_dir = ".";
  std::vector<std::string> cache_sizes;
  std::string prefix = "paging";
  std::vector<std::string> policies;
  std::vector<std::string> modes{"offload"};
  std::string semantics = "step";
  std::vector<double> error_rates;
  std::vector<double> eta0_rates;
  std::vector<double> eta1_rates;
  std::vector<double> adversarial_budgets;
  std::vector<std::string> stream_names;
  int64_t seeds = 5;
  uint64_t seed = 1;
  std::string rule = "topk:32";
  std::string grouping = "max";
  std::string streams = "per-head";
  int64_t page_tokens = 1;
};

// Without --cache-sizes: 1, 2, 4, 8 and 16 times the largest step (|R_t|), so the smallest size
// already holds a whole step.
std::vector<int64_t> DefaultCacheSizes(const std::vector<paging::RequestSequence>& streams) {
  int64_t largest = 1;
  for (const auto& seq : streams) largest = std::max(largest, seq.MaxStepSize());
  return {largest, 2 * largest, 4 * largest, 8 * largest, 16 * largest};
}

void Run(const PagingArgs& args) {
  paging::ExtractOptions extract;
  paging::ParseRequestRule(args.rule, "--rule", extract);
  extract.grouping = paging::ParseHeadGrouping(args.grouping, "--group");
  extract.streams = paging::ParseStreamSet(args.streams, "--streams");
  extract.page_tokens = args.page_tokens;
  extract.Validate();

  paging::ExperimentOptions options;
  options.semantics = paging::ParseSemantics(args.semantics, "--semantics");
  options.modes.clear();
  for (const std::string& mode : args.modes) {
    if (mode == "offload") {
      options.modes.push_back(paging::Mode::kOffload);
    } else if (mode == "evict") {
      options.modes.push_back(paging::Mode::kEvict);
    } else {
      ThrowInputError("--modes '{}': expected offload or evict", mode);
    }
  }
  for (const std::string& name : args.policies) {
    options.policies.push_back(paging::CanonicalPagingPolicyName(name));
  }
  if (options.policies.empty()) {
    // Self-managed policies (lirs, wtinylfu) run under classic semantics only.
    for (const auto& info : paging::PagingPolicies()) {
      if (!info.self_managed || options.semantics == paging::Semantics::kClassic) {
        options.policies.push_back(info.name);
      }
    }
  }
  for (const std::string& name : options.policies) paging::FindPagingPolicy(name);
  options.error_rates = args.error_rates;
  options.eta0_rates = args.eta0_rates;
  options.eta1_rates = args.eta1_rates;
  options.adversarial_budgets = args.adversarial_budgets;
  const bool eta_sweep =
      !args.eta0_rates.empty() || !args.eta1_rates.empty() || !args.adversarial_budgets.empty();
  if (eta_sweep) {
    bool any = false;
    for (const std::string& name : options.policies) {
      any = any || paging::FindPagingPolicy(name).predictions != paging::Predictions::kNone;
    }
    if (!any) {
      ThrowInputError(
          "--eta0-rates/--eta1-rates/--adversarial-budgets: --policies names no prediction "
          "policy; expected at least one of discard-pred, mark0, mark0-rand, phase-pred");
    }
  }
  std::vector<paging::CacheSizeSpec> specs;
  for (const std::string& text : args.cache_sizes) {
    specs.push_back(paging::ParseCacheSize(text, "--cache-sizes"));
  }
  if (args.prefix.empty() || args.prefix.find('/') != std::string::npos) {
    ThrowInputError("--prefix '{}': expected a non-empty file name prefix without '/'",
                    args.prefix);
  }
  const std::string mrc_name = args.prefix + "_mrc.csv";
  const std::string predictions_name = args.prefix + "_predictions.csv";
  const std::string eta_name = args.prefix + "_eta.csv";
  const std::string eta_fit_name = args.prefix + "_eta_fit.csv";
  options.seeds = args.seeds;
  options.seed = args.seed;

  std::vector<paging::RequestSequence> streams = paging::LoadPagingInput(
      args.input, paging::ParseInputFormat(args.input_format, "--input-format"), extract);
  if (!args.stream_names.empty()) {
    std::vector<paging::RequestSequence> chosen;
    for (const std::string& name : args.stream_names) {
      auto it = std::find_if(streams.begin(), streams.end(),
                             [&](const auto& seq) { return seq.stream == name; });
      if (it == streams.end()) {
        ThrowInputError("--stream '{}': {} has no such stream (first: '{}')", name, args.input,
                        streams.empty() ? "" : streams.front().stream);
      }
      chosen.push_back(std::move(*it));
    }
    streams = std::move(chosen);
  }
  int64_t total_requests = 0;
  for (const auto& seq : streams) total_requests += seq.requests();
  if (total_requests == 0) {
    ThrowInputError(
        "{}: no page requests to replay (a trace without decode steps, or an empty request "
        "file): paging needs at least one decode step",
        args.input);
  }
  if (args.cache_sizes.empty()) {
    options.cache_sizes = DefaultCacheSizes(streams);
  } else {
    for (const auto& seq : streams) {
      std::vector<int64_t> pages;
      for (const auto& spec : specs) pages.push_back(paging::ResolveCacheSize(spec, seq));
      options.stream_cache_sizes.push_back(std::move(pages));
    }
  }
  options.progress = true;

  // Created (with its parents) before the long part, so a bad --out-dir fails at once.
  const std::filesystem::path dir(args.out_dir);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec || !std::filesystem::is_directory(dir)) {
    ThrowInputError("--out-dir '{}': cannot create the output directory ({})", args.out_dir,
                    ec ? ec.message() : "a file of that name exists");
  }
  const paging::ExperimentResult result = paging::RunExperiment(streams, options);
  paging::WriteMrcCsv(dir / mrc_name, result.mrc);
  if (!args.error_rates.empty()) {
    paging::WritePredictionsCsv(dir / predictions_name, result.predictions);
  }

  fmt::print("{:<10} {:<8} {:<13} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "stream", "mode", "policy",
             "cache", "faults", "miss", "vs_opt", "Mreq/s");
  for (const auto& r : result.mrc) {
    const double miss =
        r.requests > 0 ? static_cast<double>(r.faults) / static_cast<double>(r.requests) : 0.0;
    const std::string ratio = r.opt_faults > 0
                                  ? fmt::format("{:.3f}", static_cast<double>(r.faults) /
                                                              static_cast<double>(r.opt_faults))
                                  : "";
    const std::string rate =
        r.seconds > 0 ? fmt::format("{:.2f}", static_cast<double>(r.requests) / r.seconds / 1e6)
                      : "";
    fmt::print("{:<10} {:<8} {:<13} {:>10} {:>10} {:>10.4f} {:>10} {:>10}\n", r.stream,
               paging::ModeName(r.mode), r.policy, r.cache_size, r.faults, miss, ratio, rate);
  }
  if (eta_sweep) {
    paging::WriteEtaCsv(dir / eta_name, result.eta);
    paging::WriteEtaFitCsv(dir / eta_fit_name, result.eta_fit);
    auto cell = [](double v, int precision) {
      return std::isnan(v) ? std::string("-") : fmt::format("{:.{}f}", v, precision);
    };
    fmt::print("\n{:<10} {:<13} {:>8} {:>8} {:>10} {:>8} {:>10} {:>10} {:>10}\n", "stream",
               "policy", "cache", "opt", "perfect", "ratio", "eta0_slope", "eta1_slope",
               "adv_worst");
    for (const auto& r : result.eta_fit) {
      fmt::print("{:<10} {:<13} {:>8} {:>8} {:>10} {:>8} {:>10} {:>10} {:>10}\n", r.stream,
                 r.policy, r.cache_size, r.opt_faults, cell(r.perfect_faults, 1),
                 cell(r.opt_faults > 0 ? r.perfect_faults / static_cast<double>(r.opt_faults)
                                       : std::nan(""),
                      3),
                 cell(r.eta0_slope, 3), cell(r.eta1_slope, 3), cell(r.adversarial_worst_ratio, 3));
    }
  }
  std::string written = (dir / mrc_name).string();
  if (!args.error_rates.empty()) written += ", " + (dir / predictions_name).string();
  if (eta_sweep) {
    written += ", " + (dir / eta_name).string() + ", " + (dir / eta_fit_name).string();
  }
  fmt::print("wrote {}\n", written);
}

}  // namespace

void RegisterPagingCommand(CLI::App& app) {
  auto args = std::make_shared<PagingArgs>();
  CLI::App* cmd = app.add_subcommand(
      "paging", "Paging experiments: miss-ratio curves vs the offline optimum, predictions.");
  cmd->add_option("input", args->input,
                  "trace (HDF5), requests file (`kvsim requests`), or one stream as libCacheSim "
                  "csv, oracleGeneral or txt")
      ->required();
  cmd->add_option("--input-format", args->input_format,
                  "auto (default: kvsim header / HDF5 signature, else *.csv -> csv, "
                  "*oracleGeneral* -> oracleGeneral, *.txt -> txt), trace, requests, csv, "
                  "oracleGeneral or txt")
      ->capture_default_str();
  cmd->add_option("-o,--out-dir", args->out_dir,
                  "directory for PREFIX_mrc.csv (and PREFIX_predictions.csv, PREFIX_eta.csv, "
                  "PREFIX_eta_fit.csv); created if missing")
      ->capture_default_str();
  cmd->add_option("--prefix", args->prefix,
                  "output file names: PREFIX_mrc.csv and PREFIX_predictions.csv")
      ->capture_default_str();
  cmd->add_option(
         "--cache-sizes", args->cache_sizes,
         "cache sizes: pages (100), a fraction of the stream's distinct pages (0.1f or 0.1) or "
         "bytes of the stream's page_bytes-sized pages (4096B, 64KiB, 1MiB, 2GiB; "
         "KB/MB/GB = KiB/MiB/GiB as in libCacheSim) (default: 1, 2, 4, 8, 16 x the "
         "largest step)")
      ->delimiter(',');
  std::vector<std::string> policy_names;
  for (const auto& info : paging::PagingPolicies()) policy_names.push_back(info.name);
  cmd->add_option("--policies", args->policies,
                  fmt::format("paging policies (default: all; lirs and wtinylfu with "
                              "--semantics classic only): {} (any case; libCacheSim's "
                              "belady, s3-fifo, 2q, tinylfu accepted)",
                              fmt::join(policy_names, ", ")))
      ->delimiter(',');
  cmd->add_option("--semantics", args->semantics,
                  "step (default: a step's pages are pinned together; a page that finds every "
                  "resident page pinned bypasses the cache) or classic (requests served one "
                  "after another, as libCacheSim does)")
      ->capture_default_str();
  cmd->add_option("--modes", args->modes,
                  "offload and/or evict (default offload; evict also computes the pure-eviction "
                  "optimum, a min-cost flow far slower than the replays: see sim/paging/README.md)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--error-rates", args->error_rates,
                  "bit-flip probabilities for the prediction sweep, e.g. 0,0.1,0.2")
      ->delimiter(',');
  cmd->add_option("--eta0-rates", args->eta0_rates,
                  "per-type sweep (PREFIX_eta.csv, PREFIX_eta_fit.csv): probabilities with which "
                  "a true 1 bit is given as 0 (eta0: for discard bits a wrong keep), e.g. "
                  "0.05,0.1,0.2")
      ->delimiter(',');
  cmd->add_option("--eta1-rates", args->eta1_rates,
                  "per-type sweep: probabilities with which a true 0 bit is given as 1 (eta1: "
                  "for discard bits a wrong discard)")
      ->delimiter(',');
  cmd->add_option("--adversarial-budgets", args->adversarial_budgets,
                  "per-type sweep: adversarial bits with floor(B x requests) errors placed by a "
                  "fixed rule (sim/paging/README.md), B in [0, 1], e.g. 0.001,0.01,0.1")
      ->delimiter(',');
  cmd->add_option("--seeds", args->seeds, "corruption seeds per error rate")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000));
  cmd->add_option("--seed", args->seed, "base seed (rmarker, corruption)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--stream", args->stream_names, "only these streams (repeatable)");
  cmd->add_option("--rule", args->rule, "request rule when INPUT is a trace (see `requests`)")
      ->capture_default_str();
  cmd->add_option("--group", args->grouping, "max or sum over a KV head's query heads")
      ->capture_default_str();
  cmd->add_option("--page-tokens", args->page_tokens, "tokens per page")->capture_default_str();
  cmd->add_option("--streams", args->streams, "per-head, merged or both")->capture_default_str();
  cmd->callback([args] { Run(*args); });
}

}  // namespace kvsim::apps
