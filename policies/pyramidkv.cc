// `pyramidkv`: PyramidKV (Cai et al. 2024, card 5). SnapKV's selection with a linear schedule of
// layer budgets: lower layers (wide attention) keep more than upper layers (focused attention).
// Two references disagree on the schedule's arithmetic, so both are offered (`budget_rule`):
//  - `kvcache-factory` (default): KVCache-Factory pyramidkv_utils.py, integer floors, the window
//    added on top of each layer's share, uniform SnapKV below 2(C - w) prompt tokens;
//  - `kvpress`: kvpress presses/pyramidkv_press.py get_layer_budget, real-valued shares with the
//    window inside, Python's round() (half to even), and SnapKV's uniform budget whenever the
//    schedule would leave [window, prompt] (its fallback test). The layers then keep exactly
//    num_layers * C in total.
#include <cmath>
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

// kvpress's schedule for layer `layer` of `num_layers` at an average of `capacity` tokens per
// layer (kvpress's q_len * (1 - compression_ratio)): max_capacity_prompt = window + C, so the
// layers' shares run linearly from max = 2C - C / beta down to min = C / beta, clipped to the
// prompt; each layer keeps round(max - layer * steps), window included. One layer: no schedule
// (kvpress would divide by zero), C.
int64_t KvpressPyramidBudget(
    int64_t capacity, int64_t window, int num_layers, int layer, int64_t beta, int64_t prompt_len) {
  if (num_layers == 1) return capacity;
  const auto q_len = static_cast<double>(prompt_len);
  const auto c = static_cast<double>(capacity);
  const auto w = static_cast<double>(window);
  double min = c / static_cast<double>(beta);
  double max = 2 * c - min;
  if (max >= q_len - w) {
    max = q_len - w;
    min = 2 * c - max;
  }
  if (!(q_len >= max && max >= min && min >= w)) return capacity;  // kvpress's SnapKV fallback
  const double steps = (max - min) / (num_layers - 1);
  // std::nearbyint rounds half to even in the default rounding mode, as Python's round().
  return static_cast<int64_t>(std::nearbyint(max - layer * steps));
}

class PyramidKvPolicy final : public EvictionPolicy {
 public:
  PyramidKvPolicy(const PolicySetup& setup, SnapKvOptions options, int64_t beta, bool kvpress_rule)
      : scoring_(setup, options),
        window_(options.window),
        beta_(beta),
        kvpress_rule_(kvpress_rule) {}
  std::string_view Name() const override { return "pyramidkv"; }
  int64_t LayerBudget(const BudgetPlanView& plan) override {
    if (kvpress_rule_) {
      if (plan.uniform_budget_tokens >= kUnlimitedTokens) return kUnlimitedTokens;
      return KvpressPyramidBudget(plan.uniform_budget_tokens, window_, plan.num_layers, plan.layer,
                                  beta_, plan.prompt_len);
    }
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
  bool kvpress_rule_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakePyramidKv(const PolicyParams& params,
                                              const PolicySetup& setup) {
  // window 8, kernel 7, max pooling, beta 20: KVCache-Factory's LongBench runner
  // (run_longbench.py), which overrides init_pyramidkv's fallbacks (card 5 (f)).
  const SnapKvOptions options = ReadSnapKvOptions(params, 8, 7, true);
  const int64_t beta = params.GetInt("beta", 20, 1, 1 << 20);
  static constexpr std::string_view kRules[] = {"kvcache-factory", "kvpress"};
  const bool kvpress_rule = params.GetChoice("budget_rule", "kvcache-factory", kRules) == "kvpress";
  params.Validate();
  return std::make_unique<PyramidKvPolicy>(setup, options, beta, kvpress_rule);
}

}  // namespace kvsim::policies
