#include "analysis/validity_study.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>

#include "analysis/open_loop_proxies.h"
#include "common/error.h"
#include "policies/laq.h"
#include "policies/policy_params.h"
#include "sim/budget.h"
#include "sim/closed_loop.h"

namespace kvsim::analysis {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

const ValidityMeasure kProxies[] = {
    {"mass_recall", true, [](const ValidityCell& c) { return c.mass_recall; }},
    {"worst_layer_mass_recall", true,
     [](const ValidityCell& c) { return c.worst_layer_mass_recall; }},
    {"rel_l2_error", false, [](const ValidityCell& c) { return c.rel_l2_error; }},
    {"cosine", true, [](const ValidityCell& c) { return c.cosine; }},
    {"top1_recall", true, [](const ValidityCell& c) { return c.top_recall[0]; }},
    {"top8_recall", true, [](const ValidityCell& c) { return c.top_recall[1]; }},
    {"top32_recall", true, [](const ValidityCell& c) { return c.top_recall[2]; }},
};
const ValidityMeasure kTargets[] = {
    {"kl", false, [](const ValidityCell& c) { return c.kl; }},
    {"teacher_agreement", true, [](const ValidityCell& c) { return c.teacher_agreement; }},
    {"free_agreement", true, [](const ValidityCell& c) { return c.free_agreement; }},
    {"perplexity_ratio", false, [](const ValidityCell& c) { return c.perplexity_ratio; }},
};

ValidityCell RunCell(const models::LlamaModel& model,
                     const ValidityPlan& plan,
                     int prompt,
                     const std::string& policy,
                     const std::string& budget_text) {
  const std::vector<int32_t>& tokens = plan.prompts[static_cast<size_t>(prompt)];
  const sim::LayerPolicyFactory make_policy =
      policies::ClosedLoopPolicyFactory(policy, policies::PolicyParams{});
  const sim::Budget budget = sim::Budget::Parse(budget_text, "--budget");
  sim::ClosedLoopOptions options;
  options.new_tokens = plan.new_tokens;
  options.budget_tokens = budget.ResolveTokens(static_cast<int64_t>(tokens.size()));
  options.replay = plan.replay;
  options.eos_token = plan.eos_token;
  const sim::ClosedLoopResult run = sim::RunClosedLoop(model, tokens, options, make_policy);
  const OpenLoopProxies open = ReplayOpenLoop(model, run, options, make_policy);
  ValidityCell cell;
  cell.prompt = prompt;
  cell.policy = policy;
  cell.budget = budget_text;
  cell.budget_tokens = options.budget_tokens;
  cell.prompt_len = run.prompt_len;
  cell.mass_recall = Mean(open.all.mass_recall);
  cell.worst_layer_mass_recall =
      *std::min_element(open.layer_mass_recall.begin(), open.layer_mass_recall.end());
  cell.rel_l2_error = Mean(open.all.rel_l2_error);
  cell.cosine = Mean(open.all.cosine);
  for (size_t i = 0; i < cell.top_recall.size(); ++i) {
    cell.top_recall[i] = open.all.TopRecallMean(i);
  }
  cell.kl = run.kl_mean;
  cell.teacher_agreement = run.teacher_agreement;
  cell.free_agreement = run.agreement;
  cell.perplexity_ratio = run.perplexity_evicted / run.perplexity_full;
  cell.loop_mass_recall = run.mass_recall_mean;
  return cell;
}

// Ranks 1..n, tied values sharing their mean rank.
void Ranks(std::span<const double> values, std::vector<size_t>& order, std::vector<double>& ranks) {
  const size_t n = values.size();
  order.resize(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return values[a] != values[b] ? values[a] < values[b] : a < b;
  });
  ranks.resize(n);
  for (size_t i = 0; i < n;) {
    size_t j = i + 1;
    while (j < n && values[order[j]] == values[order[i]]) ++j;
    const double mean_rank = (static_cast<double>(i + 1) + static_cast<double>(j)) / 2.0;
    for (size_t r = i; r < j; ++r) ranks[order[r]] = mean_rank;
    i = j;
  }
}

double Pearson(std::span<const double> x, std::span<const double> y) {
  const auto n = static_cast<double>(x.size());
  if (x.size() < 3) return kNaN;
  const double mx = std::accumulate(x.begin(), x.end(), 0.0) / n;
  const double my = std::accumulate(y.begin(), y.end(), 0.0) / n;
  double sxy = 0.0;
  double sxx = 0.0;
  double syy = 0.0;
  for (size_t i = 0; i < x.size(); ++i) {
    sxy += (x[i] - mx) * (y[i] - my);
    sxx += (x[i] - mx) * (x[i] - mx);
    syy += (y[i] - my) * (y[i] - my);
  }
  if (sxx <= 0.0 || syy <= 0.0) return kNaN;
  return sxy / std::sqrt(sxx * syy);
}

// Per group of cells: every measure's ranks, then rho for each proxy x target pair (proxy-major).
class GroupCorrelator {
 public:
  explicit GroupCorrelator(const std::vector<std::vector<double>>& values) : values_(values) {}

  void Compute(std::span<const size_t> cells, std::vector<double>& rho) {
    const size_t measures = values_.size();
    ranks_.resize(measures);
    column_.resize(cells.size());
    for (size_t m = 0; m < measures; ++m) {
      for (size_t i = 0; i < cells.size(); ++i) column_[i] = values_[m][cells[i]];
      Ranks(column_, order_, ranks_[m]);
    }
    const size_t proxies = std::size(kProxies);
    const size_t targets = std::size(kTargets);
    rho.resize(proxies * targets);
    for (size_t p = 0; p < proxies; ++p) {
      for (size_t t = 0; t < targets; ++t) {
        rho[p * targets + t] = Pearson(ranks_[p], ranks_[proxies + t]);
      }
    }
  }

 private:
  const std::vector<std::vector<double>>& values_;
  std::vector<std::vector<double>> ranks_;
  std::vector<double> column_;
  std::vector<size_t> order_;
};

double PercentileOf(std::vector<double>& sorted, double q) {
  if (sorted.empty()) return kNaN;
  const double h = (static_cast<double>(sorted.size()) - 1.0) * q;
  const auto lo = static_cast<size_t>(std::floor(h));
  const auto hi = static_cast<size_t>(std::ceil(h));
  return sorted[lo] + (h - std::floor(h)) * (sorted[hi] - sorted[lo]);
}

}  // namespace

std::span<const ValidityMeasure> ValidityProxies() { return kProxies; }
std::span<const ValidityMeasure> ValidityTargets() { return kTargets; }

std::vector<ValidityCell> RunValidityCells(const models::LlamaModel& model,
                                           const ValidityPlan& plan) {
  if (plan.prompts.empty()) ThrowInputError("--prompts: no prompts, expected at least one");
  if (plan.policies.empty()) ThrowInputError("--policies: no policies, expected at least one");
  if (plan.budgets.empty()) ThrowInputError("--budgets: no budgets, expected at least one");
  // Checked here, on the calling thread, so a bad name or budget is one clear error.
  for (const std::string& policy : plan.policies) {
    policies::ClosedLoopPolicyFactory(policy, policies::PolicyParams{});
  }
  for (const std::string& budget : plan.budgets) sim::Budget::Parse(budget, "--budgets");
  const size_t per_prompt = plan.policies.size() * plan.budgets.size();
  std::vector<ValidityCell> cells(plan.prompts.size() * per_prompt);
  tbb::parallel_for(size_t{0}, cells.size(), [&](size_t i) {
    const auto prompt = static_cast<int>(i / per_prompt);
    const size_t policy = (i % per_prompt) / plan.budgets.size();
    const size_t budget = i % plan.budgets.size();
    cells[i] = RunCell(model, plan, prompt, plan.policies[policy], plan.budgets[budget]);
  });
  return cells;
}

double SpearmanRho(std::span<const double> x, std::span<const double> y) {
  KVSIM_ASSERT(x.size() == y.size(), "Spearman of {} and {} values", x.size(), y.size());
  std::vector<size_t> order;
  std::vector<double> rx;
  std::vector<double> ry;
  Ranks(x, order, rx);
  Ranks(y, order, ry);
  return Pearson(rx, ry);
}

std::vector<ProxyCorrelation> CorrelateProxies(std::span<const ValidityCell> cells,
                                               int num_prompts,
                                               int replicates,
                                               double confidence,
                                               uint64_t seed) {
  KVSIM_ASSERT(num_prompts >= 1 && replicates >= 0 && confidence > 0.0 && confidence < 1.0,
               "bad bootstrap setup");
  // Every measure's value per cell: proxies, then targets.
  std::vector<std::vector<double>> values;
  const auto add_column = [&](const ValidityMeasure& m) {
    std::vector<double>& column = values.emplace_back();
    for (const ValidityCell& c : cells) column.push_back(m.get(c));
  };
  for (const ValidityMeasure& m : kProxies) add_column(m);
  for (const ValidityMeasure& m : kTargets) add_column(m);
  // Groups in order: all, budgets and policies in order of first appearance.
  struct Group {
    std::string name;
    std::vector<std::vector<size_t>> by_prompt;  // [prompt] -> cell indices
  };
  std::vector<Group> groups;
  std::map<std::string, size_t> index;
  const auto group_of = [&](const std::string& name) -> Group& {
    const auto [it, inserted] = index.emplace(name, groups.size());
    if (inserted) {
      groups.push_back({name, std::vector<std::vector<size_t>>(static_cast<size_t>(num_prompts))});
    }
    return groups[it->second];
  };
  group_of("all");
  for (const ValidityCell& c : cells) group_of("budget=" + c.budget);
  for (const ValidityCell& c : cells) group_of("policy=" + c.policy);
  for (size_t i = 0; i < cells.size(); ++i) {
    const ValidityCell& c = cells[i];
    KVSIM_ASSERT(c.prompt >= 0 && c.prompt < num_prompts, "cell of prompt {} of {}", c.prompt,
                 num_prompts);
    for (const std::string& name :
         {std::string("all"), "budget=" + c.budget, "policy=" + c.policy}) {
      group_of(name).by_prompt[static_cast<size_t>(c.prompt)].push_back(i);
    }
  }
  const size_t pairs = std::size(kProxies) * std::size(kTargets);
  // Point estimates.
  std::vector<std::vector<double>> point(groups.size());
  std::vector<int64_t> sizes(groups.size());
  {
    GroupCorrelator correlator(values);
    std::vector<size_t> members;
    for (size_t g = 0; g < groups.size(); ++g) {
      members.clear();
      for (const auto& list : groups[g].by_prompt) {
        members.insert(members.end(), list.begin(), list.end());
      }
      sizes[g] = static_cast<int64_t>(members.size());
      correlator.Compute(members, point[g]);
    }
  }
  // Bootstrap over prompts: replicate b draws from its own generator, so the draws (and the
  // intervals) do not depend on how replicates are spread over threads.
  std::vector<std::vector<double>> boot(groups.size() * pairs,
                                        std::vector<double>(static_cast<size_t>(replicates)));
  tbb::parallel_for(0, replicates, [&](int b) {
    std::mt19937_64 rng(sim::MixSeed(seed, static_cast<uint64_t>(b)));
    std::vector<int> drawn(static_cast<size_t>(num_prompts));
    for (int& p : drawn) {
      p = static_cast<int>(((rng() >> 32) * static_cast<uint64_t>(num_prompts)) >> 32);
    }
    GroupCorrelator correlator(values);
    std::vector<size_t> members;
    std::vector<double> rho;
    for (size_t g = 0; g < groups.size(); ++g) {
      members.clear();
      for (const int p : drawn) {
        const auto& list = groups[g].by_prompt[static_cast<size_t>(p)];
        members.insert(members.end(), list.begin(), list.end());
      }
      correlator.Compute(members, rho);
      for (size_t k = 0; k < pairs; ++k) boot[g * pairs + k][static_cast<size_t>(b)] = rho[k];
    }
  });
  std::vector<ProxyCorrelation> out;
  const double tail = (1.0 - confidence) / 2.0;
  for (size_t g = 0; g < groups.size(); ++g) {
    for (size_t p = 0; p < std::size(kProxies); ++p) {
      for (size_t t = 0; t < std::size(kTargets); ++t) {
        const size_t k = p * std::size(kTargets) + t;
        const double sign = kProxies[p].higher_is_better == kTargets[t].higher_is_better ? 1 : -1;
        std::vector<double> sample;
        for (const double r : boot[g * pairs + k]) {
          if (!std::isnan(r)) sample.push_back(sign * r);
        }
        std::sort(sample.begin(), sample.end());
        ProxyCorrelation row;
        row.proxy = kProxies[p].name;
        row.target = kTargets[t].name;
        row.group = groups[g].name;
        row.cells = sizes[g];
        row.rho = point[g][k];
        row.oriented_rho = sign * row.rho;
        row.ci_low = PercentileOf(sample, tail);
        row.ci_high = PercentileOf(sample, 1.0 - tail);
        out.push_back(std::move(row));
      }
    }
  }
  return out;
}

}  // namespace kvsim::analysis
