// Lookahead Q-Cache (arXiv 2505.20334, card 6): the trace-only oracle variants `laq-oracle`
// (w2 = 0) and `laqpp-oracle` (w2 = 8), and the reusable stage-2 selection a faithful LAQ calls
// with pseudo queries (policies/laq_scoring.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <set>
#include <vector>

#include "policies/laq_scoring.h"
#include "policies/registry.h"
#include "sim/random_trace.h"
#include "sim/replay.h"
#include "traces/synthetic/synthetic.h"

namespace kvsim::policies {
namespace {

// Brute-force full-cache attention of one layer (independent of analysis/metrics).
class BruteForceFuture final : public FutureView {
 public:
  BruteForceFuture(const traces::Trace& trace, int layer) : trace_(trace) {
    const models::ModelShape& s = trace.shape();
    const float scale = 1.0f / std::sqrt(static_cast<float>(s.head_dim));
    for (int h = 0; h < s.q_heads; ++h) {
      const ConstMatrixMap keys = trace.Keys(layer, h / s.GroupSize());
      const ConstMatrixMap queries = trace.Queries(layer, h);
      for (int64_t t = prompt_len(); t < total_len(); ++t) {
        Eigen::VectorXf w = (keys.topRows(t + 1) * queries.row(t).transpose()) * scale;
        w = (w.array() - w.maxCoeff()).exp();
        w /= w.sum();
        weights_.emplace_back(w.data(), w.data() + w.size());
      }
    }
  }
  int64_t prompt_len() const override { return trace_.meta().prompt_len; }
  int64_t total_len() const override { return trace_.meta().total_len; }
  std::span<const float> FullAttention(int q_head, int64_t step) const override {
    return weights_[static_cast<size_t>(q_head * (total_len() - prompt_len()) + step -
                                        prompt_len())];
  }

 private:
  const traces::Trace& trace_;
  std::vector<std::vector<float>> weights_;  // [q_head][step - prompt_len]
};

// Mass recall (full-cache attention mass on resident positions) of every (step, query head), and
// the resident prompt positions at the first decode step.
class RecallObserver final : public sim::ReplayObserver {
 public:
  explicit RecallObserver(const FutureView& future) : future_(future) {}
  void OnMeasure(const sim::MeasureView& view) override {
    for (const StreamView& stream : view.streams) {
      for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
        const std::span<const float> full = future_.FullAttention(h, view.step);
        double mass = 0;
        for (const sim::CacheEntry& e : stream.cache->entries()) {
          mass += full[static_cast<size_t>(e.position)];
        }
        recall_sum += mass;
        ++samples;
      }
      if (view.step == future_.prompt_len() && stream.stream == 0) {
        for (int64_t p : stream.cache->SortedPositions()) {
          if (p < future_.prompt_len()) first_kept.push_back(p);
        }
      }
    }
  }
  double MeanRecall() const { return recall_sum / static_cast<double>(samples); }
  double recall_sum = 0;
  int64_t samples = 0;
  std::vector<int64_t> first_kept;

 private:
  const FutureView& future_;
};

struct Outcome {
  double recall = 0;
  std::vector<int64_t> kept;  // prompt positions of stream 0 after prefill compression
};

Outcome Replay(const traces::Trace& trace,
               std::string_view policy,
               int64_t budget,
               sim::Regime regime,
               const PolicyParams& params = {}) {
  sim::ReplayOptions options;
  options.regime = regime;
  PolicySetup setup;
  setup.shape = trace.shape();
  setup.options = options;
  setup.prompt_len = trace.meta().prompt_len;
  setup.total_len = trace.meta().total_len;
  const BruteForceFuture future(trace, 0);
  sim::PrefillAttention prefill(trace.layer(0), setup.prompt_len);
  auto instance = MakePolicy(policy, params, setup);
  sim::LayerReplayInput input;
  input.trace = &trace;
  input.options = options;
  input.budget_tokens = budget;
  input.prefill = &prefill;
  input.future = &future;
  RecallObserver observer(future);
  sim::ReplayLayer(input, *instance, &observer);
  return {observer.MeanRecall(), observer.first_kept};
}

// One head, d = 32, n = 24 prompt positions, 8 decode steps. Key j = 4 e_j (orthogonal), decode
// keys 0. A query aimed at key j is 20 e_j: logit 80 / sqrt(32) = 14.1 against 0, weight > 0.9999.
// Prompt queries 16..23 aim at key 10 (the prompt's last window); decode queries 0-3 at key 5 and
// 4-7 at key 18 (what generation actually reads). Other queries are 0.
traces::Trace HandTrace() {
  constexpr int64_t kPrompt = 24, kTotal = 32;
  constexpr int kDim = 32;
  traces::TraceMeta meta;
  meta.shape = {.name = "hand", .layers = 1, .q_heads = 1, .kv_heads = 1, .head_dim = kDim};
  meta.prompt_len = kPrompt;
  meta.total_len = kTotal;
  meta.token_ids.assign(kTotal, 0);
  traces::LayerTensors layer;
  layer.queries = HeadTensor(1, kTotal, kDim);
  layer.keys = HeadTensor(1, kTotal, kDim);
  layer.values = HeadTensor(1, kTotal, kDim);
  for (int64_t j = 0; j < kPrompt; ++j) layer.keys.Row(0, j)[j] = 4.0f;
  for (int64_t i = 16; i < kPrompt; ++i) layer.queries.Row(0, i)[10] = 20.0f;
  for (int64_t t = kPrompt; t < kTotal; ++t)
    layer.queries.Row(0, t)[t < kPrompt + 4 ? 5 : 18] = 20.0f;
  std::vector<traces::LayerTensors> layers;
  layers.push_back(std::move(layer));
  return traces::Trace(meta, std::move(layers));
}

std::vector<int64_t> Range(int64_t begin, int64_t end) {
  std::vector<int64_t> out;
  for (int64_t p = begin; p < end; ++p) out.push_back(p);
  return out;
}

// laq-oracle, C = 14, w2 = 0, m = 8, kernel 7 max pool: v[5] ~ 4 and v[18] ~ 4, every other
// v[j] < 1e-5. Max pooling gives every j within 3 of a peak exactly the peak's value, so the 14
// kept positions are [2, 8] and [15, 21]. Nothing is protected: the prompt's last positions
// 22, 23 go.
TEST(LaqOracle, KeepsNeighbourhoodsOfLookaheadTargets) {
  const Outcome run = Replay(HandTrace(), "laq-oracle", 14, sim::Regime::kPrefill);
  std::vector<int64_t> expected = Range(2, 9);
  for (int64_t p : Range(15, 22)) expected.push_back(p);
  EXPECT_EQ(run.kept, expected);
}

// laqpp-oracle, C = 15, w2 = 8: [16, 24) is protected; the prefix [0, 16) is scored by the 8
// window queries (v[10] ~ 8) plus the lookahead (v[5] ~ 4; 18 lies in the window): pooled,
// [7, 13] get ~8 and [2, 6] ~4, so the C - w2 = 7 kept prefix positions are [7, 13].
TEST(LaqPlusPlusOracle, KeepsWindowAndTopOfPrefix) {
  const Outcome run = Replay(HandTrace(), "laqpp-oracle", 15, sim::Regime::kPrefill);
  std::vector<int64_t> expected = Range(7, 14);
  for (int64_t p : Range(16, 24)) expected.push_back(p);
  EXPECT_EQ(run.kept, expected);
}

// SnapKV on the same trace (window 8 to match): it follows the prompt's last window to key 10
// and drops key 5, which the decode queries read.
TEST(LaqOracle, DiffersFromSnapKvWhenDecodeQueriesShift) {
  PolicyParams params;
  params.Set("window", "8");
  const Outcome snap = Replay(HandTrace(), "snapkv", 15, sim::Regime::kPrefill, params);
  EXPECT_FALSE(std::binary_search(snap.kept.begin(), snap.kept.end(), 5));
  const Outcome laq = Replay(HandTrace(), "laq-oracle", 15, sim::Regime::kPrefill);
  EXPECT_TRUE(std::binary_search(laq.kept.begin(), laq.kept.end(), 5));
  EXPECT_GT(laq.recall, snap.recall + 0.4);
}

// Lookahead and pseudo queries sit after the prompt and see every prompt key (card 6 (h): the
// official code masks the last m'+w2 keys as if they were prompt positions); a prompt query at
// position p sees keys 0..p only.
TEST(LaqStage2, ObservationQueriesSeeEveryPromptKey) {
  const traces::Trace trace = sim::RandomTrace(
      {.name = "r", .layers = 1, .q_heads = 1, .kv_heads = 1, .head_dim = 8}, 12, 16, 5);
  const ConstMatrixMap keys(trace.Keys(0, 0).data(), 12, 8);
  const ConstMatrixMap queries = trace.Queries(0, 0);
  const int64_t positions[] = {9, 11, 12, 15};
  RowMatrixXf rows(4, 8);
  for (int r = 0; r < 4; ++r) rows.row(r) = queries.row(positions[r]);
  const RowMatrixXf a = ObservationAttention(keys, ConstMatrixMap(rows.data(), 4, 8), positions);
  ASSERT_EQ(a.rows(), 4);
  ASSERT_EQ(a.cols(), 12);
  for (int r = 0; r < 4; ++r) {
    const int64_t visible = std::min<int64_t>(12, positions[r] + 1);
    Eigen::VectorXd logits =
        (keys.topRows(visible).cast<double>() * rows.row(r).transpose().cast<double>()) /
        std::sqrt(8.0);
    const Eigen::VectorXd expected = (logits.array() - logits.maxCoeff()).exp() /
                                     (logits.array() - logits.maxCoeff()).exp().sum();
    for (int64_t j = 0; j < 12; ++j) {
      const double want = j < visible ? expected[j] : 0.0;
      EXPECT_NEAR(a(r, j), want, 1e-6) << "row " << r << " key " << j;
    }
  }
  EXPECT_GT(a(2, 11), 0.0f);  // a lookahead query reads the last prompt key
  EXPECT_EQ(a(0, 11), 0.0f);  // a prompt query at 9 does not
}

// The reusable stage 2 fed with the recorded decode queries as "pseudo" queries (what a faithful
// LAQ would pass) selects exactly what laq-oracle selects from the FutureView.
TEST(LaqStage2, PseudoQueryPathMatchesOracle) {
  const models::ModelShape shape = {
      .name = "r", .layers = 1, .q_heads = 4, .kv_heads = 2, .head_dim = 8};
  const traces::Trace trace = sim::RandomTrace(shape, 40, 56, 9);
  const Outcome oracle = Replay(trace, "laq-oracle", 16, sim::Regime::kPrefill);
  LaqOptions options;
  std::vector<RowMatrixXf> head_rows;
  const int64_t positions[] = {40, 41, 42, 43, 44, 45, 46, 47};
  for (int h = 0; h < 2; ++h) {  // the query heads of KV head 0
    const ConstMatrixMap q = trace.Queries(0, h);
    head_rows.push_back(ObservationAttention(ConstMatrixMap(trace.Keys(0, 0).data(), 40, 8),
                                             ConstMatrixMap(q.row(40).data(), 8, 8), positions));
  }
  std::vector<int64_t> victims;
  SelectStage2Victims(head_rows, options, 16, 24, &victims);
  std::vector<int64_t> kept;
  for (int64_t p = 0; p < 40; ++p) {
    if (std::find(victims.begin(), victims.end(), p) == victims.end()) kept.push_back(p);
  }
  EXPECT_EQ(kept, oracle.kept);
}

// Acceptance: on the synthetic shifted-queries scenario (decode queries read a set of prompt
// tokens disjoint from the one the prompt's last window reads), laq-oracle's mass recall is at
// least snapkv's at equal budget, in both regimes.
TEST(LaqOracle, RecallAtLeastSnapKvOnShiftedQueries) {
  traces::synthetic::SynthParams params =
      traces::synthetic::ScenarioParams(traces::synthetic::Scenario::kShiftedQueries);
  params.prompt_len = 512;
  params.decode_len = 64;
  params.seed = 7;
  const models::ModelShape shape = {
      .name = "s", .layers = 1, .q_heads = 4, .kv_heads = 2, .head_dim = 64};
  const traces::Trace trace = traces::synthetic::GenerateSynthetic(shape, params).trace;
  for (const sim::Regime regime : {sim::Regime::kPrefill, sim::Regime::kBounded}) {
    for (const int64_t budget : {64, 128}) {
      const double snap = Replay(trace, "snapkv", budget, regime).recall;
      const double laq = Replay(trace, "laq-oracle", budget, regime).recall;
      const double laqpp = Replay(trace, "laqpp-oracle", budget, regime).recall;
      std::printf("[ shifted ] %s budget %lld: snapkv %.4f laq-oracle %.4f laqpp-oracle %.4f\n",
                  sim::RegimeName(regime), static_cast<long long>(budget), snap, laq, laqpp);
      EXPECT_GE(laq, snap) << sim::RegimeName(regime) << " budget " << budget;
      EXPECT_GE(laqpp, snap) << sim::RegimeName(regime) << " budget " << budget;
    }
  }
}

}  // namespace
}  // namespace kvsim::policies
