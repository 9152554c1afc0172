#include "analysis/validity_study.h"

#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "models/model_loader.h"

namespace kvsim::analysis {
namespace {

TEST(Spearman, HandComputedWithTies) {
  // y's ranks with the tie shared: [1, 2, 3.5, 5, 3.5]; x's: 1..5. Deviations from the mean
  // rank 3: dx = [-2, -1, 0, 1, 2], dy = [-2, -1, 0.5, 2, 0.5]: sxy = 8, sxx = 10, syy = 9.5.
  const std::vector<double> x = {10, 20, 30, 40, 50};
  const std::vector<double> y = {5, 6, 7, 8, 7};
  EXPECT_NEAR(SpearmanRho(x, y), 8.0 / std::sqrt(95.0), 1e-15);
}

TEST(Spearman, MonotoneConstantAndTooFew) {
  const std::vector<double> x = {0.1, 0.5, 0.2, 0.9};
  const std::vector<double> cubed = {0.001, 0.125, 0.008, 0.729};
  const std::vector<double> reversed = {-0.1, -0.5, -0.2, -0.9};
  EXPECT_DOUBLE_EQ(SpearmanRho(x, cubed), 1.0);
  EXPECT_DOUBLE_EQ(SpearmanRho(x, reversed), -1.0);
  EXPECT_TRUE(std::isnan(SpearmanRho(x, std::vector<double>{3, 3, 3, 3})));
  EXPECT_TRUE(std::isnan(SpearmanRho(std::vector<double>{1, 2}, std::vector<double>{2, 1})));
}

// Without ties Spearman's rho is 1 - 6 sum d^2 / (n (n^2 - 1)) (d: rank differences).
TEST(Spearman, EqualsTheRankDifferenceFormulaWithoutTies) {
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 20; ++trial) {
    const int n = 3 + trial;
    std::vector<double> x(n), y(n);
    for (int i = 0; i < n; ++i) {
      x[i] = u(rng);
      y[i] = x[i] + 0.3 * u(rng);
    }
    double d2 = 0.0;
    for (int i = 0; i < n; ++i) {
      int rx = 1, ry = 1;
      for (int j = 0; j < n; ++j) {
        rx += x[j] < x[i] ? 1 : 0;
        ry += y[j] < y[i] ? 1 : 0;
      }
      d2 += static_cast<double>((rx - ry) * (rx - ry));
    }
    const double expected = 1.0 - 6.0 * d2 / (n * (static_cast<double>(n) * n - 1.0));
    EXPECT_NEAR(SpearmanRho(x, y), expected, 1e-12) << n;
  }
}

// Cells whose proxies are exact functions of the damage: every proxy must come out oriented
// +1 against KL, whichever direction it points, with a degenerate interval.
std::vector<ValidityCell> SyntheticCells(int prompts) {
  std::vector<ValidityCell> cells;
  for (int p = 0; p < prompts; ++p) {
    for (const std::string policy : {"a", "b", "c"}) {
      for (const std::string budget : {"4", "16"}) {
        ValidityCell c;
        c.prompt = p;
        c.policy = policy;
        c.budget = budget;
        c.kl = 0.01 * (p + 1) * (policy[0] - 'a' + 1) * (budget == "4" ? 3.0 : 1.0);
        c.mass_recall = 1.0 - c.kl;
        c.worst_layer_mass_recall = 1.0 - 2 * c.kl;
        c.rel_l2_error = std::sqrt(c.kl);
        c.cosine = 1.0 / (1.0 + c.kl);
        c.top_recall = {1.0 - c.kl, 1.0 - c.kl * c.kl, 0.5 - c.kl};
        c.teacher_agreement = 1.0 - c.kl;
        c.free_agreement = 1.0 - 3 * c.kl;
        c.perplexity_ratio = 1.0 + c.kl;
        cells.push_back(c);
      }
    }
  }
  return cells;
}

TEST(CorrelateProxies, PerfectProxiesAreOrientedOneInEveryGroup) {
  const std::vector<ValidityCell> cells = SyntheticCells(4);
  const std::vector<ProxyCorrelation> rows = CorrelateProxies(cells, 4, 200, 0.9, 1);
  // Groups: all, budget=4, budget=16, policy=a, policy=b, policy=c; 7 proxies x 4 targets.
  ASSERT_EQ(rows.size(), 6u * 7u * 4u);
  std::vector<std::string> groups;
  for (const ProxyCorrelation& r : rows) {
    if (groups.empty() || groups.back() != r.group) groups.push_back(r.group);
    EXPECT_NEAR(r.oriented_rho, 1.0, 1e-12) << r.proxy << " " << r.target << " " << r.group;
    EXPECT_NEAR(r.ci_low, 1.0, 1e-12) << r.group;
    EXPECT_NEAR(r.ci_high, 1.0, 1e-12) << r.group;
    EXPECT_EQ(r.cells, r.group == "all" ? 24 : r.group.rfind("budget", 0) == 0 ? 12 : 8);
    const bool flips = r.proxy == "rel_l2_error"
                           ? r.target == "teacher_agreement" || r.target == "free_agreement"
                           : r.target == "kl" || r.target == "perplexity_ratio";
    EXPECT_NEAR(r.rho, flips ? -1.0 : 1.0, 1e-12) << r.proxy << " vs " << r.target;
  }
  EXPECT_EQ(groups, (std::vector<std::string>{"all", "budget=4", "budget=16", "policy=a",
                                              "policy=b", "policy=c"}));
}

TEST(CorrelateProxies, BootstrapIsSeededAndBracketsANoisyRho) {
  std::vector<ValidityCell> cells = SyntheticCells(6);
  std::mt19937_64 rng(3);
  std::normal_distribution<double> noise(0.0, 0.05);
  for (ValidityCell& c : cells) c.mass_recall += noise(rng);
  const auto a = CorrelateProxies(cells, 6, 300, 0.95, 11);
  const auto b = CorrelateProxies(cells, 6, 300, 0.95, 11);
  const auto other_seed = CorrelateProxies(cells, 6, 300, 0.95, 12);
  ASSERT_EQ(a.size(), b.size());
  bool any_seed_difference = false;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].ci_low, b[i].ci_low);
    EXPECT_EQ(a[i].ci_high, b[i].ci_high);
    any_seed_difference = any_seed_difference || a[i].ci_low != other_seed[i].ci_low;
    if (a[i].proxy == "mass_recall" && a[i].target == "kl" && a[i].group == "all") {
      EXPECT_LT(a[i].oriented_rho, 1.0);
      EXPECT_GT(a[i].oriented_rho, 0.5);
      EXPECT_LT(a[i].ci_low, a[i].oriented_rho);
      EXPECT_LE(a[i].ci_high, 1.0);
    }
  }
  EXPECT_TRUE(any_seed_difference);
  // Without replicates there is no interval.
  for (const ProxyCorrelation& r : CorrelateProxies(cells, 6, 0, 0.95, 11)) {
    EXPECT_TRUE(std::isnan(r.ci_low) && std::isnan(r.ci_high));
  }
}

const models::LoadedModel& Stories() {
  static const models::LoadedModel loaded = models::LoadModel(models::BundledModelPath());
  return loaded;
}

ValidityPlan SmallPlan() {
  ValidityPlan plan;
  for (const char* text : {"Once upon a time there was a girl", "Tom had a red ball"}) {
    plan.prompts.push_back(Stories().RequireTokenizer().Encode(text, true, false));
  }
  plan.policies = {"streaming", "h2o"};
  plan.budgets = {"4", "1000"};
  plan.new_tokens = 12;
  return plan;
}

TEST(ValidityCells, CellOrderNoEvictionCellsAndThreadIndependence) {
  const ValidityPlan plan = SmallPlan();
  std::vector<ValidityCell> one_thread;
  {
    tbb::global_control limit(tbb::global_control::max_allowed_parallelism, 1);
    one_thread = RunValidityCells(Stories().model, plan);
  }
  const std::vector<ValidityCell> cells = RunValidityCells(Stories().model, plan);
  ASSERT_EQ(cells.size(), 8u);
  for (size_t i = 0; i < cells.size(); ++i) {
    const ValidityCell& c = cells[i];
    EXPECT_EQ(c.prompt, static_cast<int>(i / 4));
    EXPECT_EQ(c.policy, plan.policies[(i / 2) % 2]);
    EXPECT_EQ(c.budget, plan.budgets[i % 2]);
    EXPECT_EQ(c.prompt_len, static_cast<int64_t>(plan.prompts[i / 4].size()));
    if (c.budget == "1000") {  // never evicts: no damage, perfect proxies
      EXPECT_EQ(c.kl, 0.0);
      EXPECT_EQ(c.free_agreement, 1.0);
      EXPECT_EQ(c.perplexity_ratio, 1.0);
      EXPECT_EQ(c.mass_recall, 1.0);
      EXPECT_EQ(c.worst_layer_mass_recall, 1.0);
      EXPECT_EQ(c.loop_mass_recall, 1.0);
    } else {
      EXPECT_GT(c.kl, 0.0);
      EXPECT_LT(c.mass_recall, 1.0);
      EXPECT_LE(c.worst_layer_mass_recall, c.mass_recall);
      EXPECT_LT(c.loop_mass_recall, 1.0);
    }
    EXPECT_EQ(c.kl, one_thread[i].kl);
    EXPECT_EQ(c.mass_recall, one_thread[i].mass_recall);
    EXPECT_EQ(c.free_agreement, one_thread[i].free_agreement);
  }
}

TEST(ValidityCells, RefusesWhatTheClosedLoopCannotRun) {
  ValidityPlan plan = SmallPlan();
  plan.policies = {"oracle"};
  try {
    RunValidityCells(Stories().model, plan);
    FAIL() << "an oracle ran in the closed loop";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("oracle"), std::string::npos) << e.what();
  }
  plan.policies = {"no-such-policy"};
  EXPECT_THROW(RunValidityCells(Stories().model, plan), InputError);
  plan = SmallPlan();
  plan.budgets = {"zero"};
  EXPECT_THROW(RunValidityCells(Stories().model, plan), InputError);
}

}  // namespace
}  // namespace kvsim::analysis
