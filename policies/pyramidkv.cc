// `pyramidkv`: PyramidKV (Cai et al. 2024, card 5). SnapKV's selection with a linear schedule of
// layer budgets: lower layers (wide attention) keep more than upper layers (focused attention).
#include <memory>
#include <vector>

#include "policies/registry.h"
#include "policies/snapkv_scoring.h"

namespace kvsim::policies {
namespace {

// Tokens kept per stream in each layer for an average capacity C (window included), following
// KVCache-Factory's integer arithmetic (card 5 (e)). Where the floors make the layers sum to
// more than num_layers * C, the excess comes off the bottom layer (which holds the most), so the
// total never exceeds uniform SnapKV's: a kvsim deviation the card notes as a pitfall.
std::vector<int64_t> PyramidBudgets(
    int64_t capacity, int64_t window, int num_layers, int64_t beta, int64_t prompt_len) {
  std::vector<int64_t> kept(static_cast<size_t>(num_layers), capacity);
  const int64_t cw = capacity - window;
  // No compression (n <= C), plain SnapKV (n < 2(C - w)), or nothing to shape.
  if (num_layers == 1 || cw <= 0 || prompt_len <= capacity || prompt_len < 2 * cw) return kept;
  int64_t min = cw / beta;
  int64_t max = 2 * cw - min;
  if (max >= prompt_len - window) {
    max = prompt_len - window;
    min = 2 * cw - max;
  }
  const int64_t step = (max - min) / (num_layers - 1);
  int64_t total = 0;
  for (int l = 0; l < num_layers; ++l) {
    kept[static_cast<size_t>(l)] = max - l * step + window;
    total += kept[static_cast<size_t>(l)];
  }
  const int64_t excess = total - num_layers * capacity;
  if (excess > 0) kept[0] -= excess;
  return kept;
}

class PyramidKvPolicy final : public EvictionPolicy {
 public:
  PyramidKvPolicy(const PolicySetup& setup, SnapKvOptions options, int64_t beta)
      : scoring_(setup, options), window_(options.window), beta_(beta) {}
  std::string_view Name() const override { return "pyramidkv"; }
  int64_t LayerBudget(const BudgetPlanView& plan) override {
    return PyramidBudgets(plan.uniform_budget_tokens, window_, plan.num_layers, beta_,
                          plan.prompt_len)[static_cast<size_t>(plan.layer)];
  }
  void OnStep(const StepView& step) override { scoring_.OnStep(step); }
  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    scoring_.SelectVictims(request, decisions);
  }
  int64_t StateBytes() const override { return scoring_.StateBytes(); }

 private:
  SnapKvScoring scoring_;
  int64_t window_;
  int64_t beta_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakePyramidKv(const PolicyParams& params,
                                              const PolicySetup& setup) {
  // window 8, kernel 7, max pooling, beta 20: KVCache-Factory's LongBench runner
  // (run_longbench.py), which overrides init_pyramidkv's fallbacks (card 5 (f)).
  const SnapKvOptions options = ReadSnapKvOptions(params, 8, 7, true);
  const int64_t beta = params.GetInt("beta", 20, 1, 1 << 20);
  params.Validate();
  return std::make_unique<PyramidKvPolicy>(setup, options, beta);
}

}  // namespace kvsim::policies
