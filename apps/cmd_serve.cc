// `kvsim serve [SCENARIO.toml] [flags] -o DIR`: many requests on one paged KV pool in simulated
// time (sim/serving/README.md); writes serve_requests.csv, serve_pool.csv, serve_summary.csv
// and serve.json. Flags override the scenario file; repeated --rate / --capacity / --policy
// make a sweep, run in parallel (identical output for any --threads).
#include <fmt/core.h>

#include <memory>
#include <string>
#include <vector>

#include "apps/command.h"
#include "common/error.h"
#include "policies/policy_params.h"
#include "sim/serving/scenario.h"
#include "sim/serving/serve.h"

namespace kvsim::apps {
namespace {

struct ServeArgs {
  std::string scenario;
  std::vector<std::string> traces;
  std::vector<std::string> policies;
  std::vector<std::string> params;
  std::string budget;
  std::vector<double> rates;
  std::vector<std::string> capacities;
  std::string arrivals;
  std::string arrival_file;
  double cv = 0.0;
  int64_t requests = 0;
  int64_t workload_seed = -1;
  std::string on_full;
  std::string share;
  int64_t block_tokens = 0;
  int threads = -1;
  std::string out;
};

std::string Fixed(double v, int digits) {
  return v != v ? std::string("-") : fmt::format("{:.{}f}", v, digits);
}

void RunServe(const ServeArgs& args) {
  serving::ServingScenario s;
  std::string context = "serve";
  if (!args.scenario.empty()) {
    s = serving::ReadScenarioFile(args.scenario);
    context = args.scenario;
  }
  if (!args.traces.empty()) s.traces = args.traces;
  if (!args.policies.empty()) {
    s.policies.clear();
    for (const std::string& p : args.policies) {
      s.policies.push_back({p, policies::PolicyParams::Parse(args.params, "--param")});
    }
  } else if (!args.params.empty()) {
    for (auto& p : s.policies) p.params = policies::PolicyParams::Parse(args.params, "--param");
  }
  if (!args.budget.empty()) s.budget = args.budget;
  if (!args.rates.empty()) s.rates = args.rates;
  if (!args.capacities.empty()) {
    s.capacities_bytes.clear();
    for (const std::string& c : args.capacities) {
      s.capacities_bytes.push_back(serving::ParseBytes(c, "--capacity"));
    }
  }
  if (!args.arrivals.empty())
    s.workload.kind = serving::ParseWorkloadKind(args.arrivals, "--arrivals");
  if (!args.arrival_file.empty()) {
    s.workload.kind = serving::WorkloadSpec::Kind::kFile;
    s.workload.file = args.arrival_file;
  }
  if (args.cv > 0.0) s.workload.cv = args.cv;
  if (args.requests > 0) s.workload.num_requests = args.requests;
  if (args.workload_seed >= 0) s.workload.seed = static_cast<uint64_t>(args.workload_seed);
  if (!args.on_full.empty()) s.scheduler.on_full = serving::ParseOnFull(args.on_full, "--on-full");
  if (!args.share.empty()) s.scheduler.share = serving::ParseBudgetShare(args.share, "--share");
  if (args.block_tokens > 0) s.block_tokens = static_cast<int>(args.block_tokens);
  if (args.threads >= 0) s.threads = args.threads;
  s.Validate(context);
  const serving::ServingResult result = serving::RunServing(s);
  serving::WriteServingOutputs(args.out, s, result);

  fmt::print("{:<14} {:>8} {:>12} {:>17} {:>9} {:>10} {:>10} {:>10} {:>12} {:>8} {:>6}\n", "policy",
             "rate/s", "capacity", "on_full", "done", "tok/s", "lat_p95_s", "ttft_p95_s",
             "peak_bytes", "recall", "preem");
  for (const serving::ServingCell& cell : result.cells) {
    const serving::CellSummary& m = cell.summary;
    fmt::print("{:<14} {:>8} {:>12} {:>17} {:>9} {:>10} {:>10} {:>10} {:>12} {:>8} {:>6}\n",
               cell.policy.name, Fixed(cell.rate_per_s, 2), cell.capacity_bytes,
               serving::OnFullName(cell.on_full), fmt::format("{}/{}", m.completed, m.requests),
               Fixed(m.output_tokens_per_s, 1), Fixed(m.latency_s[1], 4), Fixed(m.ttft_s[1], 4),
               m.peak_bytes, Fixed(m.mean_recall, 4), m.preemptions);
  }
  fmt::print(
      "wrote {}/serve_summary.csv, serve_requests.csv, serve_pool.csv, serve.json ({:.2f} s)\n",
      args.out, result.wall_seconds);
}

}  // namespace

void RegisterServeCommand(CLI::App& app) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serving simulation: requests on one paged KV pool in simulated time (continuous "
      "batching, preemption or eviction); latency, memory and attention recall.");
  cmd->add_option("scenario", args->scenario, "scenario file (TOML, sim/serving/README.md)");
  cmd->add_option("--trace", args->traces, "trace file (repeatable: the request set)");
  cmd->add_option("--policy", args->policies, "eviction policy (repeatable: sweep)");
  cmd->add_option("--param", args->params, "policy parameter key=value (repeatable)");
  cmd->add_option("--budget", args->budget,
                  "each policy's own budget (tokens per layer and KV head: 64, 0.25p); default "
                  "none: only the pool's share bounds a sequence (--on-full evict)");
  cmd->add_option("--rate", args->rates, "arrivals per simulated second (repeatable: sweep)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--capacity", args->capacities, "KV pool bytes: 64MiB, 512KiB (repeatable)");
  cmd->add_option("--arrivals", args->arrivals, "poisson, gamma or file");
  cmd->add_option("--arrival-file", args->arrival_file, "CSV with columns arrival_s,trace");
  cmd->add_option("--cv", args->cv, "gamma inter-arrival coefficient of variation (burstiness)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--requests", args->requests, "number of generated requests")
      ->check(CLI::Range(int64_t{1}, int64_t{10'000'000}));
  cmd->add_option("--workload-seed", args->workload_seed, "seed of arrivals and trace choice")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--on-full", args->on_full, "queue, preempt-recompute, preempt-swap or evict");
  cmd->add_option(
      "--share", args->share,
      "evict: equal, proportional or global (by the policies' token scores) budget shares");
  cmd->add_option("--block-tokens", args->block_tokens, "tokens per paged block (default 16)")
      ->check(CLI::Range(int64_t{1}, int64_t{65536}));
  cmd->add_option("--threads", args->threads, "worker threads, 0 = all cores")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("-o,--out", args->out, "output folder (created if missing)")->required();
  cmd->callback([args] { RunServe(*args); });
}

}  // namespace kvsim::apps
