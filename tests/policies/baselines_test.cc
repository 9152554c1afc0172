// The baseline policies against brute-force re-implementations written here from the cards
// (docs: policies/*.cc headers), on small random traces: the same resident sets at every step.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "policy_test_util.h"

namespace kvsim::policies {
namespace {

using testing::NaiveSoftmax;
using testing::Range;
using testing::ReplayAll;
using testing::ResidentLog;
using testing::TinyShape;

// Removes from `resident` the `count` lowest-scored positions among `candidates` (ties: lower
// position first).
void DropLowest(std::set<int64_t>& resident,
                std::vector<int64_t> candidates,
                const std::map<int64_t, double>& score,
                int64_t count) {
  std::sort(candidates.begin(), candidates.end(), [&](int64_t a, int64_t b) {
    return score.at(a) != score.at(b) ? score.at(a) < score.at(b) : a < b;
  });
  for (int64_t i = 0; i < count; ++i) resident.erase(candidates[static_cast<size_t>(i)]);
}

std::vector<int64_t> Sorted(const std::set<int64_t>& s) { return {s.begin(), s.end()}; }

// H2O card 2: prompt column sums, then every decode row adds its weights; group mean; keep the
// R = floor(B/2) newest plus the best of the rest.
ResidentLog BruteH2O(const traces::Trace& trace, int64_t budget) {
  const int64_t n = trace.meta().prompt_len;
  const int64_t T = trace.meta().total_len;
  const int g = trace.shape().GroupSize();
  const int64_t recent = budget / 2;
  ResidentLog log(static_cast<size_t>(trace.num_layers()));
  for (int l = 0; l < trace.num_layers(); ++l) {
    log[static_cast<size_t>(l)].resize(static_cast<size_t>(T - n));
    for (int kv = 0; kv < trace.shape().kv_heads; ++kv) {
      std::map<int64_t, double> score;
      for (int64_t j = 0; j < n; ++j) score[j] = 0.0;
      for (int h = kv * g; h < kv * g + g; ++h) {
        for (int64_t i = 0; i < n; ++i) {
          const std::vector<double> w = NaiveSoftmax(trace, l, h, i, Range(0, i + 1));
          for (int64_t j = 0; j <= i; ++j) score[j] += w[static_cast<size_t>(j)] / g;
        }
      }
      std::set<int64_t> resident;
      for (int64_t j = 0; j < n; ++j) resident.insert(j);
      const auto evict = [&] {
        const int64_t count = static_cast<int64_t>(resident.size()) - budget;
        if (count <= 0) return;
        std::vector<int64_t> positions = Sorted(resident);
        positions.resize(positions.size() - static_cast<size_t>(recent));
        DropLowest(resident, positions, score, count);
      };
      evict();
      for (int64_t t = n; t < T; ++t) {
        resident.insert(t);
        score[t] = 0.0;
        const std::vector<int64_t> keys = Sorted(resident);
        for (int h = kv * g; h < kv * g + g; ++h) {
          const std::vector<double> w = NaiveSoftmax(trace, l, h, t, keys);
          for (size_t i = 0; i < keys.size(); ++i) score[keys[i]] += w[i] / g;
        }
        log[static_cast<size_t>(l)][static_cast<size_t>(t - n)].push_back(keys);
        evict();
      }
    }
  }
  return log;
}

// TOVA card 3: one selection per layer by the current query's attention, mean over all heads;
// the prompt is cut by the last prompt query's row. With `keep_last` (kvpress TOVAPress) the
// newest resident position is never dropped.
ResidentLog BruteTova(const traces::Trace& trace, int64_t budget, bool keep_last = false) {
  const int64_t n = trace.meta().prompt_len;
  const int64_t T = trace.meta().total_len;
  const int hq = trace.shape().q_heads;
  ResidentLog log(static_cast<size_t>(trace.num_layers()));
  for (int l = 0; l < trace.num_layers(); ++l) {
    std::set<int64_t> resident;
    for (int64_t j = 0; j < n; ++j) resident.insert(j);
    const auto score_and_evict = [&](int64_t query) {
      const std::vector<int64_t> keys = Sorted(resident);
      std::map<int64_t, double> score;
      for (const int64_t k : keys) score[k] = 0.0;
      for (int h = 0; h < hq; ++h) {
        const std::vector<double> w = NaiveSoftmax(trace, l, h, query, keys);
        for (size_t i = 0; i < keys.size(); ++i) score[keys[i]] += w[i] / hq;
      }
      const int64_t count = static_cast<int64_t>(resident.size()) - budget;
      std::vector<int64_t> candidates = keys;
      if (keep_last) candidates.pop_back();  // keys are sorted: the newest is last
      if (count > 0) DropLowest(resident, candidates, score, count);
    };
    score_and_evict(n - 1);
    for (int64_t t = n; t < T; ++t) {
      resident.insert(t);
      log[static_cast<size_t>(l)].push_back(std::vector<std::vector<int64_t>>(
          static_cast<size_t>(trace.shape().kv_heads), Sorted(resident)));
      score_and_evict(t);
    }
  }
  return log;
}

// SnapKV card 4, prefill regime: window w, per-head window column sums, max-pool kernel k
// (padding k/2, -inf), group mean, keep the top B - w prefix tokens plus the window; then grow.
// With `mean_then_pool` (KVCache-Factory kv_head) the group mean of the sums is pooled instead.
ResidentLog BruteSnapKvPrefill(const traces::Trace& trace,
                               int64_t budget,
                               int64_t window,
                               int64_t kernel,
                               bool mean_then_pool = false) {
  const int64_t n = trace.meta().prompt_len;
  const int64_t T = trace.meta().total_len;
  const int g = trace.shape().GroupSize();
  ResidentLog log(static_cast<size_t>(trace.num_layers()));
  for (int l = 0; l < trace.num_layers(); ++l) {
    log[static_cast<size_t>(l)].resize(static_cast<size_t>(T - n));
    for (int kv = 0; kv < trace.shape().kv_heads; ++kv) {
      const int64_t prefix = n - window;
      std::map<int64_t, double> score;
      for (int64_t j = 0; j < prefix; ++j) score[j] = 0.0;
      const auto max_pool = [&](const std::vector<double>& v, int64_t j) {
        double m = -1e300;
        for (int64_t i = std::max<int64_t>(0, j - kernel / 2);
             i <= std::min<int64_t>(prefix - 1, j + kernel / 2); ++i) {
          m = std::max(m, v[static_cast<size_t>(i)]);
        }
        return m;
      };
      std::vector<double> mean(static_cast<size_t>(prefix), 0.0);
      for (int h = kv * g; h < kv * g + g; ++h) {
        std::vector<double> v(static_cast<size_t>(prefix), 0.0);
        for (int64_t i = n - window; i < n; ++i) {
          const std::vector<double> w = NaiveSoftmax(trace, l, h, i, Range(0, i + 1));
          for (int64_t j = 0; j < prefix; ++j)
            v[static_cast<size_t>(j)] += w[static_cast<size_t>(j)];
        }
        for (int64_t j = 0; j < prefix; ++j) {
          score[j] += max_pool(v, j) / g;
          mean[static_cast<size_t>(j)] += v[static_cast<size_t>(j)] / g;
        }
      }
      if (mean_then_pool) {
        for (int64_t j = 0; j < prefix; ++j) score[j] = max_pool(mean, j);
      }
      std::set<int64_t> resident;
      for (int64_t j = 0; j < n; ++j) resident.insert(j);
      DropLowest(resident, Range(0, prefix), score, n - budget);
      for (int64_t t = n; t < T; ++t) {
        resident.insert(t);
        log[static_cast<size_t>(l)][static_cast<size_t>(t - n)].push_back(Sorted(resident));
      }
    }
  }
  return log;
}

TEST(H2O, MatchesBruteForceHeavyHittersPlusRecent) {
  for (const uint64_t seed : {1, 2, 3}) {
    const traces::Trace trace = sim::RandomTrace(TinyShape(), 40, 64, seed);
    for (const int64_t budget : {10, 17}) {
      EXPECT_EQ(ReplayAll(trace, "h2o", {}, budget), BruteH2O(trace, budget))
          << "seed " << seed << " budget " << budget;
    }
  }
}

TEST(Tova, MatchesBruteForceLayerWiseCurrentQuery) {
  for (const uint64_t seed : {4, 5}) {
    const traces::Trace trace = sim::RandomTrace(TinyShape(), 40, 64, seed);
    for (const int64_t budget : {9, 20}) {
      EXPECT_EQ(ReplayAll(trace, "tova", {}, budget), BruteTova(trace, budget))
          << "seed " << seed << " budget " << budget;
    }
  }
}

TEST(Tova, KeepLastVariantNeverDropsTheNewestTokenAsKvpress) {
  int differing = 0;
  for (const uint64_t seed : {4, 5, 6}) {
    const traces::Trace trace = sim::RandomTrace(TinyShape(), 40, 64, seed);
    for (const int64_t budget : {9, 20}) {
      PolicyParams params;
      params.Set("keep_last", "true");
      const ResidentLog kept = ReplayAll(trace, "tova", params, budget);
      EXPECT_EQ(kept, BruteTova(trace, budget, /*keep_last=*/true))
          << "seed " << seed << " budget " << budget;
      // The newest token is resident at every measured step, whatever its score.
      for (size_t l = 0; l < kept.size(); ++l) {
        for (size_t i = 0; i < kept[l].size(); ++i) {
          EXPECT_EQ(kept[l][i][0].back(), 40 + static_cast<int64_t>(i));
        }
      }
      differing += kept != BruteTova(trace, budget) ? 1 : 0;
    }
  }
  EXPECT_GT(differing, 0) << "no case tells the variants apart";
}

TEST(SnapKv, MatchesBruteForceWindowPoolSelection) {
  sim::ReplayOptions options;
  options.regime = sim::Regime::kPrefill;
  PolicyParams params;
  params.Set("window", "6");
  params.Set("kernel", "5");
  for (const uint64_t seed : {6, 7}) {
    const traces::Trace trace = sim::RandomTrace(TinyShape(), 50, 60, seed);
    for (const int64_t budget : {12, 30}) {
      EXPECT_EQ(ReplayAll(trace, "snapkv", params, budget, options),
                BruteSnapKvPrefill(trace, budget, 6, 5))
          << "seed " << seed << " budget " << budget;
    }
  }
}

TEST(SnapKv, MeanThenPoolVariantMatchesKvcacheFactoryKvHeadOrder) {
  sim::ReplayOptions options;
  options.regime = sim::Regime::kPrefill;
  PolicyParams params;
  params.Set("window", "6");
  params.Set("kernel", "5");
  params.Set("pool_order", "mean-then-pool");
  int differing = 0;
  for (const uint64_t seed : {6, 7, 8}) {
    const traces::Trace trace = sim::RandomTrace(TinyShape(), 50, 60, seed);
    for (const int64_t budget : {12, 30}) {
      const ResidentLog variant = ReplayAll(trace, "snapkv", params, budget, options);
      EXPECT_EQ(variant, BruteSnapKvPrefill(trace, budget, 6, 5, /*mean_then_pool=*/true))
          << "seed " << seed << " budget " << budget;
      differing += variant != BruteSnapKvPrefill(trace, budget, 6, 5) ? 1 : 0;
    }
  }
  EXPECT_GT(differing, 0) << "no case tells the pooling orders apart";
}

TEST(SnapKv, ProtectsObservationWindowInBoundedDecode) {
  PolicyParams params;
  params.Set("window", "4");
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 30, 60, 8);
  const ResidentLog log = ReplayAll(trace, "snapkv", params, 10);
  for (size_t step = 0; step < log[0].size(); ++step) {
    const int64_t t = 30 + static_cast<int64_t>(step);
    for (const auto& resident : log[0][step]) {
      ASSERT_EQ(resident.size(), 11u);
      for (int64_t p = t - 4; p <= t; ++p) {
        EXPECT_TRUE(std::binary_search(resident.begin(), resident.end(), p)) << "step " << t;
      }
    }
  }
}

TEST(Streaming, KeepsExactlySinksAndRecentWindow) {
  PolicyParams params;
  params.Set("sinks", "3");
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 30, 50, 9);
  const int64_t budget = 10;
  const ResidentLog log = ReplayAll(trace, "streaming", params, budget);
  for (size_t step = 0; step < log[0].size(); ++step) {
    const int64_t t = 30 + static_cast<int64_t>(step);
    // Evict-after-attend: step t sees the budget plus token t.
    std::vector<int64_t> expected = {0, 1, 2};
    for (int64_t p = t - (budget - 3); p <= t; ++p) expected.push_back(p);
    for (const auto& layer : log) {
      for (const auto& resident : layer[step]) EXPECT_EQ(resident, expected) << "step " << t;
    }
  }
}

TEST(KNorm, KeepsLowestNormKeys) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 30, 31, 10);
  sim::ReplayOptions options;
  options.regime = sim::Regime::kPrefill;
  const ResidentLog log = ReplayAll(trace, "knorm", {}, 8, options);
  for (int kv = 0; kv < 2; ++kv) {
    std::vector<int64_t> order = Range(0, 30);
    const auto norm = [&](int64_t p) {
      return ConstMatrixMap(trace.layer(0).keys.Row(kv, p), 1, 8).norm();
    };
    std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return norm(a) < norm(b); });
    std::vector<int64_t> expected(order.begin(), order.begin() + 8);
    expected.push_back(30);
    std::sort(expected.begin(), expected.end());
    EXPECT_EQ(log[0][0][static_cast<size_t>(kv)], expected);
  }
}

TEST(KNorm, SkipFirstLayersKeepsTheirWholeCacheAsKvcacheFactory) {
  models::ModelShape shape = TinyShape();
  shape.layers = 3;
  const traces::Trace trace = sim::RandomTrace(shape, 30, 36, 11);
  PolicyParams params;
  params.Set("skip_first_layers", "2");
  const ResidentLog skipped = ReplayAll(trace, "knorm", params, 8);
  const ResidentLog plain = ReplayAll(trace, "knorm", {}, 8);
  for (size_t l = 0; l < 2; ++l) {
    for (size_t i = 0; i < skipped[l].size(); ++i) {
      for (const std::vector<int64_t>& stream : skipped[l][i]) {
        EXPECT_EQ(stream, Range(0, 30 + static_cast<int64_t>(i) + 1)) << "layer " << l;
      }
    }
    EXPECT_NE(skipped[l], plain[l]);
  }
  EXPECT_EQ(skipped[2], plain[2]);  // layers past the skipped ones are untouched
}

TEST(PyramidKv, GivesLowerLayersMoreWithinTheUniformTotal) {
  models::ModelShape shape = TinyShape();
  shape.layers = 4;
  const traces::Trace trace = sim::RandomTrace(shape, 200, 204, 12);
  sim::ReplayOptions options;
  options.regime = sim::Regime::kPrefill;
  PolicyParams params;
  params.Set("window", "8");
  params.Set("beta", "4");
  const ResidentLog log = ReplayAll(trace, "pyramidkv", params, 40, options);
  // Card 5 (e) by hand: C = 40, w = 8, n = 200: min = 32 / 4 = 8, max = 64 - 8 = 56,
  // step = 48 / 3 = 16: prefix kept 56, 40, 24, 8 -> 64, 48, 32, 16 (sum 160 = 4 x 40).
  const std::vector<size_t> expected = {64, 48, 32, 16};
  for (size_t l = 0; l < 4; ++l) EXPECT_EQ(log[l][0][0].size(), expected[l] + 1) << "layer " << l;
}

// kvpress's schedule (pyramidkv_press.py get_layer_budget) by hand, n = 200, four layers:
//  C = 40, w = 8, beta = 4: min = 10, max = 70, steps = 20 -> 70, 50, 30, 10;
//  C = 42: min = 10.5, max = 73.5, steps = 21 -> 73.5, 52.5, 31.5, 10.5, which Python's round()
//  takes half to even: 74, 52, 32, 10 (sum 168 = 4 x 42);
//  w = 16: min = 10 < w, kvpress falls back to SnapKV's uniform 40.
TEST(PyramidKv, KvpressBudgetRuleAsPyramidKvPress) {
  models::ModelShape shape = TinyShape();
  shape.layers = 4;
  const traces::Trace trace = sim::RandomTrace(shape, 200, 204, 12);
  sim::ReplayOptions options;
  options.regime = sim::Regime::kPrefill;
  struct Case {
    int64_t budget;
    const char* window;
    std::vector<size_t> kept;
  };
  for (const Case& c : {Case{40, "8", {70, 50, 30, 10}}, Case{42, "8", {74, 52, 32, 10}},
                        Case{40, "16", {40, 40, 40, 40}}}) {
    PolicyParams params;
    params.Set("window", c.window);
    params.Set("beta", "4");
    params.Set("budget_rule", "kvpress");
    const ResidentLog log = ReplayAll(trace, "pyramidkv", params, c.budget, options);
    for (size_t l = 0; l < 4; ++l) {
      EXPECT_EQ(log[l][0][0].size(), c.kept[l] + 1) << "C " << c.budget << " layer " << l;
    }
  }
}

TEST(Random, SameSeedSameVictimsOtherSeedOtherVictims) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 40, 50, 13);
  sim::ReplayOptions a, b;
  a.seed = 1;
  b.seed = 2;
  EXPECT_EQ(ReplayAll(trace, "random", {}, 10, a), ReplayAll(trace, "random", {}, 10, a));
  EXPECT_NE(ReplayAll(trace, "random", {}, 10, a), ReplayAll(trace, "random", {}, 10, b));
}

TEST(PolicyParams, RejectsOutOfRangeValueNamingKeyValueAndConstraint) {
  PolicyParams params;
  params.Set("recent_ratio", "1.5");
  try {
    CheckPolicy("h2o", params);
    FAIL();
  } catch (const InputError& e) {
    EXPECT_STREQ(e.what(),
                 "policy 'h2o': parameter recent_ratio=1.5 is not valid: expected a number in "
                 "[0, 1]");
  }
}

TEST(PolicyParams, ReportsOnlyNonDefaultValues) {
  PolicyParams params;
  params.Set("window", "32");
  params.Set("kernel", "5");
  EXPECT_EQ(CheckPolicy("snapkv", params), "kernel=5");
}

}  // namespace
}  // namespace kvsim::policies
