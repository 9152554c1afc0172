// D2O (card 9): density-based layer budgets, protected layers, H2O-style eviction with sinks and
// a recent window, and merging through EntryRewrite with the paper's and the code's weights.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>
#include <numeric>

#include "policies/seed_policy_math.h"
#include "sim/random_trace.h"
#include "tests/policies/seed_replay_util.h"

namespace kvsim::policies {
namespace {

using seed_testing::PromptKept;
using seed_testing::ReplayAll;

// F = {0, ln 3}: softmax(-F) = {3/4, 1/4}; 2 layers, B = 9, n = 17: rho = 9 / 18 = 0.5, ratio =
// {0.75, 0.25}; size = 2 * floor(18 * ratio / 2) = {2 * 6, 2 * 2} = {12, 4} (sum 16 <= 18).
TEST(D2o, LayerBudgetsFollowSoftmaxOfNegativeDensity) {
  const std::vector<double> density = {0.0, std::log(3.0)};
  EXPECT_EQ(D2oLayerBudgets(density, {false, false}, 17, 9, 0.5), (std::vector<int64_t>{12, 4}));
  // Protected layers (0, 1, L-1 in the code) report unlimited budgets and take no share; the
  // one compressed layer gets ratio 0.5: 2 * floor(18 * 0.5 / 2) = 8.
  const std::vector<double> four = {5.0, 5.0, 0.0, std::log(3.0)};
  EXPECT_EQ(D2oLayerBudgets(four, {true, true, false, true}, 17, 9, 0.5),
            (std::vector<int64_t>{kUnlimitedTokens, kUnlimitedTokens, 8, kUnlimitedTokens}));
}

TEST(D2o, CompressedLayerBudgetsNeverExceedUniformTotal) {
  for (int64_t budget : {1, 3, 17, 100}) {
    for (double spread : {0.0, 0.5, 5.0, 50.0}) {
      std::vector<double> density;
      for (int l = 0; l < 8; ++l) density.push_back(spread * l / 8.0);
      const std::vector<int64_t> b =
          D2oLayerBudgets(density, std::vector<bool>(8, false), 200, budget, 0.5);
      EXPECT_LE(std::accumulate(b.begin(), b.end(), int64_t{0}), 8 * budget);
    }
  }
}

// Paper (Eq. 9-12): w_e = exp(u_e) / (sum exp(u) + e), w_c = e / (sum exp(u) + e): sums to 1.
// Code: w_c = 1 / (1 + m), w_e = u_e / (1 + m): sums to (1 + sum u) / (1 + m) < 1 for u < 1,
// so merging shrinks norms (card 9 (h)).
TEST(D2o, PaperMergeWeightsSumToOneAndCodeWeightsShrink) {
  const std::vector<double> u = {0.9, 0.5, 0.7};
  const std::vector<double> paper = D2oMergeWeights(u, D2oMerge::kPaper);
  EXPECT_NEAR(std::accumulate(paper.begin(), paper.end(), 0.0), 1.0, 1e-12);
  const double denominator = std::exp(0.9) + std::exp(0.5) + std::exp(0.7) + std::numbers::e;
  EXPECT_NEAR(paper[0], std::numbers::e / denominator, 1e-12);
  EXPECT_NEAR(paper[2], std::exp(0.5) / denominator, 1e-12);
  const std::vector<double> code = D2oMergeWeights(u, D2oMerge::kCode);
  EXPECT_NEAR(code[0], 0.25, 1e-12);
  EXPECT_NEAR(code[1], 0.225, 1e-12);
  EXPECT_NEAR(std::accumulate(code.begin(), code.end(), 0.0), (1.0 + 2.1) / 4.0, 1e-12);
}

// One layer (skip_layers=false), one head, d = 2, n = 8, budget 4, sinks 1, recent_ratio 0.5.
// Layer size: rho = 4/9, floor(9 * 4/9 / 2) * 2 = 4; R = 2, H = 2. All queries are zero, so
// attention is uniform over the causal prefix: A[i, j] = 1/(i+1) and the column sums
// S[j] = sum_{i=j}^{7} 1/(i+1) decrease with j. Candidates [0, 6): sink 0 forced; the 4 lowest
// are 2, 3, 4, 5; kept 0, 1 (heavy) and 6, 7 (recent).
// Merge: survivors k0 = (1,0), k1 = (0,1), k6 = (-1,0), k7 = (0,-1). Victims: k2 = (1, 0.1) ->
// cos 0.995037 with k0; k3 = (0.1, 1) -> 0.995037 with k1; k4 = (0.6, -0.8) -> 0.8 with k7;
// k5 = (-0.6, 0.8) -> 0.8 with k1. tau_0 = mean u* = 0.897519: 2 merges into 0, 3 into 1, 4 and
// 5 are dropped. Values v_j = (j, 1).
TEST(D2o, EvictsLowAccumulatedScoresAndMergesIntoMostSimilarSurvivor) {
  traces::Trace trace = seed_testing::ZeroTrace(seed_testing::Shape(1, 1, 1, 2), 8, 9);
  traces::LayerTensors& l = trace.mutable_layer(0);
  const float keys[8][2] = {{1, 0},        {0, 1},        {1, 0.1f}, {0.1f, 1},
                            {0.6f, -0.8f}, {-0.6f, 0.8f}, {-1, 0},   {0, -1}};
  for (int p = 0; p < 8; ++p) {
    seed_testing::SetRow(l.keys, 0, p, {keys[p][0], keys[p][1]});
    seed_testing::SetRow(l.values, 0, p, {static_cast<float>(p), 1.0f});
  }
  const double u = 1.0 / std::sqrt(1.01);
  for (const char* merge : {"paper", "code"}) {
    const auto record =
        ReplayAll(trace, "d2o", {{"skip_layers", "false"}, {"sinks", "1"}, {"merge", merge}}, 4);
    EXPECT_EQ(record.layer_budgets, (std::vector<int64_t>{4}));
    const seed_testing::StreamSnapshot& snap = record.snapshots[0][0][0];
    ASSERT_EQ(PromptKept(snap, 8), (std::vector<int64_t>{0, 1, 6, 7})) << merge;
    EXPECT_EQ(snap.merge_counts, (std::vector<int32_t>{1, 1, 0, 0, 0})) << merge;
    const bool paper = std::string(merge) == "paper";
    const double wc = paper ? std::numbers::e / (std::exp(u) + std::numbers::e) : 0.5;
    const double we = paper ? std::exp(u) / (std::exp(u) + std::numbers::e) : u / 2.0;
    // k0 <- wc (1, 0) + we (1, 0.1); v0 <- wc (0, 1) + we (2, 1).
    EXPECT_NEAR(snap.keys(0, 0), wc + we, 1e-5) << merge;
    EXPECT_NEAR(snap.keys(0, 1), 0.1 * we, 1e-5) << merge;
    EXPECT_NEAR(snap.values(0, 0), 2.0 * we, 1e-5) << merge;
    EXPECT_NEAR(snap.values(0, 1), wc + we, 1e-5) << merge;
    // k1 <- wc (0, 1) + we (0.1, 1).
    EXPECT_NEAR(snap.keys(1, 0), 0.1 * we, 1e-5) << merge;
    EXPECT_NEAR(snap.keys(1, 1), wc + we, 1e-5) << merge;
    // Survivors 6 and 7 untouched.
    EXPECT_FLOAT_EQ(snap.keys(2, 0), -1.0f);
    EXPECT_FLOAT_EQ(snap.keys(3, 1), -1.0f);
  }
}

// Pitfall: the first 4 positions and the last R are never evicted; layers 0, 1 and L-1 are not
// compressed at all (unlimited budgets, no rewrites); the cache stays within budget + 1 at every
// attention; runs are deterministic.
// Equal memory: at B >= T every layer keeps the full cache (the prompt-fraction shares cap at
// n + 1 tokens, which would lose decode tokens at any budget); at B = T - 1 layers compress.
TEST(D2o, ReachesTheFullCacheAtBudgetsOfTheTraceLength) {
  const int layers = 5;
  const traces::Trace trace = sim::RandomTrace(seed_testing::Shape(layers, 4, 2, 8), 40, 72, 21);
  const auto at_t = ReplayAll(trace, "d2o", {{"skip_layers", "false"}}, 72);
  for (int l = 0; l < layers; ++l) {
    EXPECT_EQ(at_t.layer_budgets[static_cast<size_t>(l)], kUnlimitedTokens) << l;
    const auto& last = at_t.snapshots[static_cast<size_t>(l)].back();
    for (const auto& snap : last) EXPECT_EQ(snap.positions.size(), 72u) << l;
  }
  const auto below = ReplayAll(trace, "d2o", {{"skip_layers", "false"}}, 71);
  int compressed = 0;
  for (const int64_t b : below.layer_budgets) compressed += b != kUnlimitedTokens ? 1 : 0;
  EXPECT_EQ(compressed, layers);
}

TEST(D2o, NeverEvictsSinksOrRecentAndSkipsProtectedLayers) {
  const int layers = 5;
  const traces::Trace trace = sim::RandomTrace(seed_testing::Shape(layers, 4, 2, 8), 40, 72, 21);
  const int64_t budget = 16;
  const auto a = ReplayAll(trace, "d2o", {}, budget);
  const auto b = ReplayAll(trace, "d2o", {}, budget);
  EXPECT_EQ(a.layer_budgets[0], kUnlimitedTokens);
  EXPECT_EQ(a.layer_budgets[1], kUnlimitedTokens);
  EXPECT_EQ(a.layer_budgets[4], kUnlimitedTokens);
  EXPECT_LE(a.layer_budgets[2] + a.layer_budgets[3], 2 * budget);
  int64_t merged = 0;
  for (size_t layer = 0; layer < static_cast<size_t>(layers); ++layer) {
    const bool compressed = a.layer_budgets[layer] != kUnlimitedTokens;
    const int64_t recent = a.layer_budgets[layer] / 2;
    for (size_t step = 0; step < a.snapshots[layer].size(); ++step) {
      const int64_t t = 40 + static_cast<int64_t>(step);
      for (size_t s = 0; s < a.snapshots[layer][step].size(); ++s) {
        const seed_testing::StreamSnapshot& snap = a.snapshots[layer][step][s];
        const auto& pos = snap.positions;
        EXPECT_EQ(pos, b.snapshots[layer][step][s].positions);
        if (!compressed) {
          EXPECT_EQ(static_cast<int64_t>(pos.size()), t + 1);
          continue;
        }
        ASSERT_LE(static_cast<int64_t>(pos.size()), a.layer_budgets[layer] + 1);
        for (int64_t p = 0; p < 4; ++p) EXPECT_TRUE(std::binary_search(pos.begin(), pos.end(), p));
        for (int64_t p = t - recent; p <= t; ++p) {
          EXPECT_TRUE(std::binary_search(pos.begin(), pos.end(), p)) << "step " << t << " " << p;
        }
        if (step + 1 == a.snapshots[layer].size()) {
          merged += std::accumulate(snap.merge_counts.begin(), snap.merge_counts.end(), 0);
        }
      }
    }
  }
  EXPECT_GT(merged, 0);
}

}  // namespace
}  // namespace kvsim::policies
