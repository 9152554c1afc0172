// Memory tiers on a synthetic Llama-3-8B-shaped multi-turn trace (cut to 2 layers): peak and mean
// KV bytes and what each configuration loses (attention-mass recall, relative L2 error of the
// attention output), for full prefill vs block-wise prefill and for eviction vs MiKV at equal bytes
// (plus KIVI and the full cache for reference). Prints a table; asserts nothing.
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "analysis/metrics.h"
#include "models/model_shape.h"
#include "policies/registry.h"
#include "sim/replay.h"
#include "traces/synthetic/synthetic.h"

namespace {

using namespace kvsim;

struct Config {
  std::string label;
  std::string policy;
  policies::PolicyParams params;
  int64_t prefill_block = 0;
};

void Run(const traces::Trace& trace,
         const std::vector<std::unique_ptr<sim::PrefillAttention>>& prefill,
         const std::vector<std::unique_ptr<analysis::FullCacheAttention>>& full,
         const Config& config,
         int64_t budget) {
  const auto start = std::chrono::steady_clock::now();
  sim::ReplayOptions options;
  options.prefill_block = config.prefill_block;
  const int layers = trace.num_layers();
  std::vector<std::unique_ptr<policies::EvictionPolicy>> instances;
  std::vector<policies::EvictionPolicy*> ptrs;
  std::vector<const sim::PrefillAttention*> prefill_ptrs;
  for (int l = 0; l < layers; ++l) {
    policies::PolicySetup setup;
    setup.shape = trace.shape();
    setup.layer = l;
    setup.options = options;
    setup.prompt_len = trace.meta().prompt_len;
    setup.total_len = trace.meta().total_len;
    instances.push_back(policies::MakePolicy(config.policy, config.params, setup));
    ptrs.push_back(instances.back().get());
    prefill_ptrs.push_back(prefill[static_cast<size_t>(l)].get());
  }
  const std::vector<int64_t> budgets = sim::PlanLayerBudgets(trace, ptrs, prefill_ptrs, budget);
  sim::MemoryLedger ledger;
  analysis::MetricSamples samples;
  for (int l = 0; l < layers; ++l) {
    sim::LayerReplayInput input;
    input.trace = &trace;
    input.layer = l;
    input.options = options;
    input.budget_tokens = budgets[static_cast<size_t>(l)];
    input.prefill = prefill_ptrs[static_cast<size_t>(l)];
    input.future = full[static_cast<size_t>(l)].get();
    analysis::LayerMetrics metrics(*full[static_cast<size_t>(l)]);
    sim::LayerReplayResult r = sim::ReplayLayer(input, *ptrs[static_cast<size_t>(l)], &metrics);
    ledger.Merge(r.ledger);
    samples.Append(metrics.samples());
  }
  const uint32_t kv_transient = sim::MemoryLedger::kKvCategories |
                                sim::MemoryLedger::Bit(sim::MemoryCategory::kPrefillTransient);
  const sim::MemoryPeak peak = ledger.PeakBytes(sim::MemoryLedger::kAllLayers, kv_transient);
  const sim::MemoryPeak all =
      ledger.PeakBytes(sim::MemoryLedger::kAllLayers, sim::MemoryLedger::kAllCategories);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print(
      "{:<28} {:>12.3f} {:>6} {:>12.3f} {:>12.3f} {:>10.4f} {:>10.4f} "
      "{:>7.2f}\n",
      config.label, static_cast<double>(peak.bytes) / (1 << 20), peak.step,
      ledger.MeanDecodeBytes(sim::MemoryLedger::kAllLayers, sim::MemoryLedger::kKvCategories) /
          (1 << 20),
      static_cast<double>(all.bytes) / (1 << 20), analysis::Mean(samples.mass_recall),
      analysis::Mean(samples.rel_l2_error), seconds);
}

}  // namespace

int main() {
  const models::ModelShape shape = models::WithLayers(models::ShapePreset("llama-3-8b"), 2);
  traces::synthetic::SynthParams params =
      traces::synthetic::ScenarioParams(traces::synthetic::Scenario::kMultiTurn);
  params.prompt_len = 2048;
  params.decode_len = 32;
  params.seed = 1;
  const traces::synthetic::SynthTrace synth = traces::synthetic::GenerateSynthetic(shape, params);
  const traces::Trace& trace = synth.trace;
  std::vector<std::unique_ptr<sim::PrefillAttention>> prefill;
  std::vector<std::unique_ptr<analysis::FullCacheAttention>> full;
  for (int l = 0; l < trace.num_layers(); ++l) {
    prefill.push_back(std::make_unique<sim::PrefillAttention>(trace.layer(l), params.prompt_len));
    full.push_back(std::make_unique<analysis::FullCacheAttention>(trace, l));
  }
  const int64_t budget = 256;
  const int64_t block = 256;
  fmt::print(
      "synthetic multi-turn, llama-3-8b shape cut to {} layers, prompt "
      "{}, decode {}, {} "
      "segments, budget {} tokens/stream (= {:.3f} MiB of FP16 K/V), "
      "block {}\n",
      trace.num_layers(), params.prompt_len, params.decode_len, trace.meta().segments.size(),
      budget,
      static_cast<double>(budget * shape.KvBytesPerTokenPerHead() * shape.kv_heads *
                          trace.num_layers()) /
          (1 << 20),
      block);
  fmt::print("{:<28} {:>12} {:>6} {:>12} {:>12} {:>10} {:>10} {:>7}\n", "config", "peak_MiB",
             "@step", "mean_MiB", "peak_all_MiB", "recall", "rel_l2", "sec");
  policies::PolicyParams none;
  policies::PolicyParams kivi4;
  kivi4.Set("k_bits", "4");
  kivi4.Set("v_bits", "4");
  // Episodes of single segments (the synthetic turns are single-topic), 2 medoid windows.
  policies::PolicyParams epi;
  epi.Set("window", "1");
  epi.Set("medoids", "2");
  policies::PolicyParams mikv2g32;
  mikv2g32.Set("group_size", "32");
  policies::PolicyParams mikv4;
  mikv4.Set("bits", "4");
  const std::vector<Config> configs = {
      {"full", "full", none, 0},
      {"h2o full-prefill", "h2o", none, 0},
      {"h2o block-wise", "h2o", none, block},
      {"snapkv full-prefill", "snapkv", none, 0},
      {"epicache full-prefill", "epicache", epi, 0},
      {"epicache block-wise", "epicache", epi, block},
      {"mikv-2bit (= h2o bytes)", "mikv", none, 0},
      {"mikv-2bit g32 (= h2o bytes)", "mikv", mikv2g32, 0},
      {"mikv-4bit (= h2o bytes)", "mikv", mikv4, 0},
      {"mikv-2bit block-wise", "mikv", none, block},
      {"kivi-2bit (no budget)", "kivi", none, 0},
      {"kivi-4bit (no budget)", "kivi", kivi4, 0},
      {"mpcache (static+dynamic)", "mpcache", none, 0},
  };
  for (const Config& c : configs) Run(trace, prefill, full, c, budget);
  return 0;
}
