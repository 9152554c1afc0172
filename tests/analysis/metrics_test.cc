// Metrics against hand-computed cases and brute force; `full` and `oracle` as the two bounds.
#include "analysis/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <set>

#include "analysis/sweep.h"
#include "sim/random_trace.h"

namespace kvsim::analysis {
namespace {

models::ModelShape TinyShape() {
  models::ModelShape shape;
  shape.name = "tiny";
  shape.layers = 2;
  shape.q_heads = 4;
  shape.kv_heads = 2;
  shape.head_dim = 8;
  return shape;
}

SweepPlan Plan(std::vector<std::string> policies, std::vector<std::string> budgets) {
  SweepPlan plan;
  for (auto& p : policies) plan.policies.push_back({p, {}});
  for (auto& b : budgets) plan.budgets.push_back(sim::Budget::Parse(b, "test"));
  plan.threads = 1;
  return plan;
}

const ResultRow& Find(const SweepResult& result,
                      const std::string& policy,
                      const std::string& budget,
                      const std::string& layer) {
  for (const ResultRow& row : result.table.rows()) {
    if (row.policy == policy && row.budget == budget && row.layer == layer) return row;
  }
  throw std::runtime_error("no row " + policy + " " + budget + " " + layer);
}

TEST(Percentile, InterpolatesLinearlyBetweenOrderStatistics) {
  const std::vector<float> v = {5, 1, 4, 2, 3};
  EXPECT_DOUBLE_EQ(Percentile(v, 0.5), 3.0);
  EXPECT_NEAR(Percentile(v, 0.05), 1.2, 1e-12);  // h = 4 * 0.05 = 0.2: 1 + 0.2 * (2 - 1)
  EXPECT_NEAR(Percentile(v, 0.95), 4.8, 1e-12);
  EXPECT_DOUBLE_EQ(Percentile(v, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(Percentile(v, 1.0), 5.0);
  const std::vector<float> two = {10, 0};
  EXPECT_DOUBLE_EQ(Percentile(two, 0.5), 5.0);
}

TEST(Summarize, MeanAndPercentilesOrNanWhenNoSamples) {
  const std::vector<float> v = {1, 2, 3, 4};
  const Summary s = Summarize(v);
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_DOUBLE_EQ(s.p50, 2.5);
  EXPECT_TRUE(std::isnan(Summarize({}).mean));
}

TEST(FullCacheAttention, MatchesNaiveSoftmaxAndTopK) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 10, 14, 3);
  const FullCacheAttention full(trace, 1);
  const int h = 3;
  const int64_t t = 12;
  std::vector<double> logits;
  for (int64_t j = 0; j <= t; ++j) {
    double dot = 0.0;
    for (int c = 0; c < 8; ++c) {
      dot += static_cast<double>(trace.layer(1).queries.Row(h, t)[c]) *
             static_cast<double>(trace.layer(1).keys.Row(1, j)[c]);
    }
    logits.push_back(dot / std::sqrt(8.0));
  }
  double sum = 0.0;
  for (double l : logits) sum += std::exp(l);
  const std::span<const float> w = full.FullAttention(h, t);
  ASSERT_EQ(w.size(), 13u);
  std::vector<int64_t> order(13);
  for (int64_t j = 0; j <= t; ++j) {
    EXPECT_NEAR(w[static_cast<size_t>(j)], std::exp(logits[static_cast<size_t>(j)]) / sum, 1e-6);
    order[static_cast<size_t>(j)] = j;
  }
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return logits[static_cast<size_t>(a)] > logits[static_cast<size_t>(b)];
  });
  const std::span<const int64_t> top = full.TopPositions(h, t);
  ASSERT_EQ(top.size(), 13u);  // k capped at t + 1
  EXPECT_EQ(std::vector<int64_t>(top.begin(), top.end()), order);
}

TEST(Metrics, FullCacheHasRecallExactlyOneAndZeroError) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 30, 50, 4);
  const SweepResult result = RunSweepOnTrace(Plan({"full"}, {"8"}), trace, "t");
  for (const ResultRow& row : result.table.rows()) {
    EXPECT_EQ(row.mass_recall.mean, 1.0) << row.layer;
    EXPECT_EQ(row.mass_recall.p5, 1.0);
    EXPECT_EQ(row.rel_l2_error.mean, 0.0);
    EXPECT_EQ(row.rel_l2_error.p95, 0.0);
    EXPECT_EQ(row.cosine.p5, 1.0);
    for (double top : row.top_recall_mean) EXPECT_EQ(top, 1.0);
    EXPECT_EQ(row.steps, 20);
  }
}

// Streaming's resident set is known in closed form, so every metric can be recomputed here.
TEST(Metrics, MatchBruteForceOnStreamingResidentSets) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 30, 40, 5);
  const int64_t budget = 10;
  SweepPlan plan = Plan({"streaming"}, {"10"});
  const SweepResult result = RunSweepOnTrace(plan, trace, "t");
  const ResultRow& row = Find(result, "streaming", "10", "0");
  std::vector<double> recall, error, cosine, top8;
  for (int64_t t = 30; t < 40; ++t) {
    std::set<int64_t> resident = {0, 1, 2, 3};
    for (int64_t p = t - (budget - 4); p <= t; ++p) resident.insert(p);
    for (int h = 0; h < 4; ++h) {
      const int kv = h / 2;
      std::vector<double> w(static_cast<size_t>(t + 1));
      double z = 0.0;
      for (int64_t j = 0; j <= t; ++j) {
        double dot = 0.0;
        for (int c = 0; c < 8; ++c) {
          dot += static_cast<double>(trace.layer(0).queries.Row(h, t)[c]) *
                 static_cast<double>(trace.layer(0).keys.Row(kv, j)[c]);
        }
        z += (w[static_cast<size_t>(j)] = std::exp(dot / std::sqrt(8.0)));
      }
      double mass = 0.0;
      std::vector<double> full_out(8, 0.0), res_out(8, 0.0);
      for (int64_t j = 0; j <= t; ++j) {
        const double p = w[static_cast<size_t>(j)] / z;
        const bool in = resident.count(j) > 0;
        if (in) mass += p;
        for (int c = 0; c < 8; ++c) {
          const double v = static_cast<double>(trace.layer(0).values.Row(kv, j)[c]);
          full_out[static_cast<size_t>(c)] += p * v;
          if (in) res_out[static_cast<size_t>(c)] += p * v;
        }
      }
      double diff = 0.0, ref = 0.0, res = 0.0, dot = 0.0;
      for (int c = 0; c < 8; ++c) {
        const double r = res_out[static_cast<size_t>(c)] / mass;
        const double f = full_out[static_cast<size_t>(c)];
        diff += (r - f) * (r - f);
        ref += f * f;
        res += r * r;
        dot += r * f;
      }
      recall.push_back(mass);
      error.push_back(std::sqrt(diff / ref));
      cosine.push_back(dot / std::sqrt(ref * res));
      std::vector<int64_t> order(static_cast<size_t>(t + 1));
      std::iota(order.begin(), order.end(), int64_t{0});
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return w[static_cast<size_t>(a)] > w[static_cast<size_t>(b)];
      });
      int hits = 0;
      for (int i = 0; i < 8; ++i) hits += resident.count(order[static_cast<size_t>(i)]) ? 1 : 0;
      top8.push_back(hits / 8.0);
    }
  }
  const auto mean = [](const std::vector<double>& v) {
    return std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
  };
  EXPECT_NEAR(row.mass_recall.mean, mean(recall), 1e-5);
  EXPECT_NEAR(row.rel_l2_error.mean, mean(error), 1e-4);
  EXPECT_NEAR(row.cosine.mean, mean(cosine), 1e-5);
  EXPECT_NEAR(row.top_recall_mean[1], mean(top8), 1e-9);
  EXPECT_LT(row.mass_recall.mean, 1.0);
}

TEST(Oracle, RecallAtLeastEveryOtherPolicyAtTheSameBudget) {
  const std::vector<std::string> rivals = {"random", "streaming", "h2o",      "tova",
                                           "snapkv", "knorm",     "pyramidkv"};
  std::vector<std::string> policies = rivals;
  policies.push_back("oracle");
  for (const auto regime : {sim::Regime::kBounded, sim::Regime::kPrefill}) {
    for (const uint64_t seed : {21, 22, 23}) {
      const traces::Trace trace = sim::RandomTrace(TinyShape(), 48, 80, seed, 3.0);
      SweepPlan plan = Plan(policies, {"8", "20"});
      plan.options.regime = regime;
      const SweepResult result = RunSweepOnTrace(plan, trace, "t");
      for (const std::string budget : {"8", "20"}) {
        const double oracle = Find(result, "oracle", budget, "all").mass_recall.mean;
        for (const std::string& rival : rivals) {
          EXPECT_GE(oracle + 1e-9, Find(result, rival, budget, "all").mass_recall.mean)
              << rival << " beat the oracle: regime " << sim::RegimeName(regime) << " seed " << seed
              << " budget " << budget;
        }
      }
    }
  }
}

}  // namespace
}  // namespace kvsim::analysis
