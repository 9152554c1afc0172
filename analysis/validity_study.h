#pragma once
// `kvsim validate`: how far can the cheap open-loop numbers be trusted for a model? Runs, per
// prompt x policy x budget, the closed loop (sim/closed_loop.h: teacher-forced KL and agreement,
// free-running agreement) and the open-loop replay of the same full-cache run
// (analysis/open_loop_proxies.h), then correlates every open-loop proxy with every closed-loop
// target by Spearman's rho, overall, per budget and per policy, with bootstrap confidence
// intervals that resample prompts (the unit that varies between uses; cells of one prompt are
// not independent).
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "models/llama_model.h"
#include "sim/replay.h"

namespace kvsim::analysis {

struct ValidityPlan {
  std::vector<std::vector<int32_t>> prompts;  // token ids, each >= 1 token
  std::vector<std::string> policies;          // registered names (closed-loop capable)
  std::vector<std::string> budgets;           // budget texts: 16, 0.25p
  int64_t new_tokens = 64;
  sim::ReplayOptions replay;  // regime and seed
  int32_t eos_token = -1;
};

// One prompt x policy x budget: the open-loop proxies and the closed-loop targets.
struct ValidityCell {
  int prompt = 0;
  std::string policy;
  std::string budget;
  int64_t budget_tokens = 0;
  int64_t prompt_len = 0;
  // Open loop (means over layers, decode steps and query heads).
  double mass_recall = 0.0;
  double worst_layer_mass_recall = 0.0;
  double rel_l2_error = 0.0;
  double cosine = 0.0;
  std::array<double, 3> top_recall{};  // k = 1, 8, 32
  // Closed loop.
  double kl = 0.0;                 // teacher-forced KL(full || evicted), mean over steps, nats
  double teacher_agreement = 0.0;  // teacher-forced top-1 agreement
  double free_agreement = 0.0;     // free-running next-token agreement
  double perplexity_ratio = 0.0;   // teacher-forced perplexity / the full run's
  double loop_mass_recall = 0.0;   // ClosedLoopResult::mass_recall_mean
};

// Runs every cell (prompt-major, then policy, then budget; that order in the result). Cells run in
// parallel on the TBB pool; results do not depend on the thread count. Throws InputError for a
// policy the closed loop refuses (naming it) or a prompt + new_tokens past the context.
std::vector<ValidityCell> RunValidityCells(const models::LlamaModel& model,
                                           const ValidityPlan& plan);

// An open-loop proxy or a closed-loop target: its name (a column of validate_cells.csv) and
// whether larger is better.
struct ValidityMeasure {
  std::string_view name;
  bool higher_is_better;
  double (*get)(const ValidityCell&);
};
std::span<const ValidityMeasure> ValidityProxies();
std::span<const ValidityMeasure> ValidityTargets();

// Spearman's rank correlation: Pearson's r of the ranks, tied values sharing their mean rank.
// NaN when fewer than 3 pairs or either side is constant. REQUIRES x.size() == y.size().
double SpearmanRho(std::span<const double> x, std::span<const double> y);

struct ProxyCorrelation {
  std::string proxy;
  std::string target;
  std::string group;  // "all", "budget=<text>" or "policy=<name>"
  int64_t cells = 0;
  double rho = 0.0;
  // rho signed so that > 0 means the proxy ranks cells as the target does (better proxy, less
  // damage): rho times -1 when exactly one of the two is lower-is-better.
  double oriented_rho = 0.0;
  double ci_low = 0.0;  // percentile bootstrap interval of oriented_rho
  double ci_high = 0.0;
};

// Every proxy x target x group. The bootstrap draws `num_prompts` prompts with replacement
// `replicates` times (seeded by `seed`, so the intervals are reproducible) and recomputes each
// rho on the drawn prompts' cells; replicates whose rho is undefined are skipped. `confidence`
// in (0, 1), e.g. 0.95. With replicates == 0 the intervals are NaN.
std::vector<ProxyCorrelation> CorrelateProxies(std::span<const ValidityCell> cells,
                                               int num_prompts,
                                               int replicates,
                                               double confidence,
                                               uint64_t seed);

}  // namespace kvsim::analysis
