// The replay's planning hooks over layers (sim/replay.h: LayerPlanStats, AssignLayerBudgets,
// PlanLayerBudgets) and the per-layer seeds: what runs before any layer replays.
#include <cstdint>
#include <vector>

#include "common/error.h"
#include "sim/replay.h"

namespace kvsim::sim {

std::vector<double> LayerPlanStats(const traces::Trace& trace,
                                   int layer,
                                   policies::EvictionPolicy& policy,
                                   const PrefillAttention& prefill) {
  const int64_t n = trace.meta().prompt_len;
  const policies::PrefillView view{
      .layer = layer,
      .begin = 0,
      .end = n,
      .prompt_len = n,
      .streams = {},
      .attention = &prefill,
      .queries = policies::QueryHistory(trace.layer(layer).queries, n - 1)};
  return policy.PrefillLayerStats(view);
}

std::vector<int64_t> AssignLayerBudgets(std::span<policies::EvictionPolicy* const> layer_policies,
                                        std::span<const std::vector<double>> layer_stats,
                                        int64_t prompt_len,
                                        int64_t uniform_budget_tokens) {
  const auto num_layers = static_cast<int>(layer_policies.size());
  KVSIM_ASSERT(static_cast<int>(layer_stats.size()) == num_layers,
               "planning needs one stats vector per layer ({})", num_layers);
  std::vector<int64_t> budgets(static_cast<size_t>(num_layers));
  int64_t bounded_sum = 0;
  int bounded_layers = 0;
  for (int l = 0; l < num_layers; ++l) {
    const policies::BudgetPlanView plan{.layer = l,
                                        .num_layers = num_layers,
                                        .prompt_len = prompt_len,
                                        .uniform_budget_tokens = uniform_budget_tokens,
                                        .layer_stats = layer_stats};
    const int64_t b = layer_policies[static_cast<size_t>(l)]->LayerBudget(plan);
    KVSIM_ASSERT(b >= 1, "policy {} gave layer {} a budget of {}: a layer keeps at least one token",
                 layer_policies[static_cast<size_t>(l)]->Name(), l, b);
    budgets[static_cast<size_t>(l)] = b;
    if (b < policies::kUnlimitedTokens) {
      bounded_sum += b;
      ++bounded_layers;
    }
  }
  KVSIM_ASSERT(bounded_sum <= static_cast<int64_t>(bounded_layers) * uniform_budget_tokens,
               "layer budgets sum to {}, more than {} layers x {}", bounded_sum, bounded_layers,
               uniform_budget_tokens);
  return budgets;
}

std::vector<int64_t> PlanLayerBudgets(const traces::Trace& trace,
                                      std::span<policies::EvictionPolicy* const> layer_policies,
                                      std::span<const PrefillAttention* const> prefill,
                                      int64_t uniform_budget_tokens) {
  const int num_layers = trace.num_layers();
  KVSIM_ASSERT(static_cast<int>(layer_policies.size()) == num_layers &&
                   static_cast<int>(prefill.size()) == num_layers,
               "planning needs one policy and one prefill per layer ({})", num_layers);
  std::vector<std::vector<double>> stats(static_cast<size_t>(num_layers));
  for (int l = 0; l < num_layers; ++l) {
    stats[static_cast<size_t>(l)] = LayerPlanStats(
        trace, l, *layer_policies[static_cast<size_t>(l)], *prefill[static_cast<size_t>(l)]);
  }
  return AssignLayerBudgets(layer_policies, stats, trace.meta().prompt_len, uniform_budget_tokens);
}

uint64_t MixSeed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t LayerSeed(uint64_t base_seed, int layer) {
  return MixSeed(base_seed, static_cast<uint64_t>(layer));
}

}  // namespace kvsim::sim
