// `mpcache` (card 4): the hierarchical query-aware selection on a hand-built case, the static score
// against brute force, and the look-once eviction keeping the top-B prompt tokens of the layer in
// every stream, generated tokens never evicted before prompt tokens.
#include "policies/mpcache.h"

#include <gtest/gtest.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>

#include "policy_test_util.h"

namespace kvsim::policies {
namespace {

using testing::TinyShape;

TEST(MpCache, SelectionIsHierarchicalOverClusters) {
  // 160 tokens: 5 coarse clusters of 32 (keep floor(0.5 * 5) = 2 + sink + last) and 10 fine
  // clusters of 16 (keep floor(0.2 * 10) = 2 among the coarse winners + first + last). The query
  // reads channel 0 only; sim = 0.6 max + 0.4 min of channel 0 over the cluster.
  RowMatrixXf keys = RowMatrixXf::Zero(160, 4);
  keys.block(32, 0, 16, 1).setConstant(0.5f);  // coarse 1: sim 0.3 (loses level 1)
  keys.block(64, 0, 16, 1).setConstant(1.0f);  // coarse 2: sim 2.2; fine 4: 1.0
  keys.block(80, 0, 16, 1).setConstant(3.0f);  //           fine 5: 3.0
  keys.block(96, 0, 16, 1).setConstant(2.0f);  // coarse 3: sim 1.2; fine 6: 2.0
  Eigen::VectorXf query = Eigen::VectorXf::Zero(4);
  query[0] = 1.0f;
  const std::vector<int64_t> selected = MpCacheSelect(keys, query, MpCacheSelectParams{});
  std::vector<int64_t> expected;
  for (const int64_t begin : {0, 80, 96, 144}) {
    for (int64_t j = begin; j < begin + 16; ++j) expected.push_back(j);
  }
  EXPECT_EQ(selected, expected);
  // A partial last cluster is always selected; tiny inputs select everything.
  EXPECT_EQ(MpCacheSelect(keys.topRows(10), query, MpCacheSelectParams{}).size(), 10u);
}

TEST(MpCache, StaticEvictionKeepsTheLayersTopScoresInEveryStream) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 40, 46, 17);
  const int64_t budget = 12;
  for (const sim::Regime regime : {sim::Regime::kBounded, sim::Regime::kPrefill}) {
    sim::ReplayOptions options;
    options.regime = regime;
    const testing::ResidentLog log =
        testing::ReplayAll(trace, "mpcache", PolicyParams(), budget, options);
    for (int l = 0; l < 2; ++l) {
      // Brute force: tail = last 20 % = 8 queries; per query head softmax(q . k) over all 40 prompt
      // keys, no scale and no mask; mean over the 4 heads; max over the tail rows.
      std::vector<double> score(40, 0.0);
      for (int64_t i = 32; i < 40; ++i) {
        std::vector<double> mean(40, 0.0);
        for (int h = 0; h < 4; ++h) {
          std::vector<double> logit(40);
          for (int64_t j = 0; j < 40; ++j) {
            double dot = 0.0;
            for (int c = 0; c < 8; ++c) {
              dot += static_cast<double>(trace.layer(l).queries.Row(h, i)[c]) *
                     static_cast<double>(trace.layer(l).keys.Row(h / 2, j)[c]);
            }
            logit[static_cast<size_t>(j)] = dot;
          }
          const double max = *std::max_element(logit.begin(), logit.end());
          double sum = 0.0;
          for (double& x : logit) sum += (x = std::exp(x - max));
          for (int64_t j = 0; j < 40; ++j)
            mean[static_cast<size_t>(j)] += logit[static_cast<size_t>(j)] / sum / 4;
        }
        for (int64_t j = 0; j < 40; ++j) {
          score[static_cast<size_t>(j)] =
              std::max(score[static_cast<size_t>(j)], mean[static_cast<size_t>(j)]);
        }
      }
      std::vector<int64_t> order(40);
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
        return score[static_cast<size_t>(a)] > score[static_cast<size_t>(b)];
      });
      std::vector<int64_t> top(order.begin(), order.begin() + budget);
      std::sort(top.begin(), top.end());
      const auto& first_step = log[static_cast<size_t>(l)][0];
      for (const auto& stream : first_step) {
        std::vector<int64_t> prompt_part(stream.begin(), stream.end() - 1);
        EXPECT_EQ(prompt_part, top) << "layer " << l;
        EXPECT_EQ(stream.back(), 40);
      }
      // Generated tokens stay while prompt tokens remain: at step 40 + i all i + 1 of them.
      const auto& steps = log[static_cast<size_t>(l)];
      for (size_t i = 0; i < steps.size(); ++i) {
        for (const auto& stream : steps[i]) {
          EXPECT_EQ(std::count_if(stream.begin(), stream.end(), [](int64_t p) { return p >= 40; }),
                    static_cast<int64_t>(i) + 1);
        }
      }
    }
  }
}

// A prompt long enough that the tail (20 %: 300 rows) spans two row blocks of the computation:
// the scores still equal a double-precision brute force over the whole tail at once.
TEST(MpCache, StaticScoresOverSeveralRowBlocksEqualBruteForce) {
  const models::ModelShape shape = TinyShape();
  const int64_t n = 1500;
  const traces::Trace trace = sim::RandomTrace(shape, n, n + 1, 23);
  const traces::LayerTensors& layer = trace.layer(1);
  const sim::PrefillAttention prefill(layer, n);
  const Eigen::VectorXd got =
      MpCacheStaticScores(QueryHistory(layer.queries, n - 1), prefill, shape);
  ASSERT_EQ(got.size(), n);
  std::vector<double> want(static_cast<size_t>(n), 0.0);
  std::vector<double> mean(static_cast<size_t>(n));
  std::vector<double> logit(static_cast<size_t>(n));
  for (int64_t i = n - 300; i < n; ++i) {
    std::fill(mean.begin(), mean.end(), 0.0);
    for (int h = 0; h < shape.q_heads; ++h) {
      for (int64_t j = 0; j < n; ++j) {
        double dot = 0.0;
        for (int c = 0; c < shape.head_dim; ++c) {
          dot += static_cast<double>(layer.queries.Row(h, i)[c]) *
                 static_cast<double>(layer.keys.Row(h / shape.GroupSize(), j)[c]);
        }
        logit[static_cast<size_t>(j)] = dot;
      }
      const double max = *std::max_element(logit.begin(), logit.end());
      double sum = 0.0;
      for (double& x : logit) sum += (x = std::exp(x - max));
      for (int64_t j = 0; j < n; ++j) {
        mean[static_cast<size_t>(j)] += logit[static_cast<size_t>(j)] / sum / shape.q_heads;
      }
    }
    for (int64_t j = 0; j < n; ++j) {
      want[static_cast<size_t>(j)] =
          std::max(want[static_cast<size_t>(j)], mean[static_cast<size_t>(j)]);
    }
  }
  for (int64_t j = 0; j < n; ++j) {
    EXPECT_NEAR(got[j], want[static_cast<size_t>(j)], 1e-5 * want[static_cast<size_t>(j)] + 1e-9)
        << "position " << j;
  }
  // And bit for bit what the whole tail x n matrix at once gives (the computation before it was
  // blocked): the block size must not move a score.
  RowMatrixXf pbar = RowMatrixXf::Zero(300, n);
  for (int h = 0; h < shape.q_heads; ++h) {
    RowMatrixXf logits = QueryHistory(layer.queries, n - 1).Rows(h, n - 300, n) *
                         prefill.PromptKeys(h / shape.GroupSize()).transpose();
    for (int64_t i = 0; i < 300; ++i) {
      auto row = logits.row(i);
      row = (row.array() - row.maxCoeff()).exp();
      row /= row.sum();
    }
    pbar += logits;
  }
  pbar /= static_cast<float>(shape.q_heads);
  const Eigen::VectorXd whole = pbar.colwise().maxCoeff().transpose().cast<double>();
  EXPECT_EQ(got, whole);
}

// Every cell of a sweep asks for the static scores of a layer; they are computed once and shared.
TEST(MpCache, SharedStatisticIsComputedOncePerKeyAcrossThreads) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 64, 65, 5);
  const sim::PrefillAttention prefill(trace.layer(0), 64);
  std::atomic<int> calls = 0;
  std::vector<const Eigen::VectorXd*> seen(64, nullptr);
  tbb::parallel_for(0, 64, [&](int i) {
    seen[static_cast<size_t>(i)] = &prefill.SharedStatistic(i % 2 == 0 ? "even" : "odd", [&] {
      ++calls;
      return Eigen::VectorXd::Constant(3, i % 2 == 0 ? 2.0 : 1.0);
    });
  });
  EXPECT_EQ(calls.load(), 2);
  for (int i = 0; i < 64; ++i) {
    EXPECT_EQ(seen[static_cast<size_t>(i)], seen[static_cast<size_t>(i % 2)]);
    EXPECT_EQ((*seen[static_cast<size_t>(i)])[0], i % 2 == 0 ? 2.0 : 1.0);
  }
}

}  // namespace
}  // namespace kvsim::policies
