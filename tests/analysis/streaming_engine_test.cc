// The streamed sweep engine (issue 11) against the whole-matrix reference path: every registered
// policy, replayed by RunSweepOnTrace (blocks of decode steps, cells in lockstep, logits shared
// from the block, caches holding positions) must give the per-layer metrics of a replay through
// ReplayLayer with a whole-trace FullCacheAttention and per-cell q . K (the engine before the
// change), to 1e-6; and the block size changes nothing but float rounding.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <memory>
#include <string>

#include "analysis/full_attention_stream.h"
#include "analysis/metrics.h"
#include "analysis/sweep.h"
#include "policies/registry.h"
#include "sim/random_trace.h"

namespace kvsim::analysis {
namespace {

models::ModelShape GqaShape() {
  models::ModelShape shape;
  shape.name = "gqa";
  shape.layers = 2;
  shape.q_heads = 4;
  shape.kv_heads = 2;
  shape.head_dim = 8;
  return shape;
}

// The pre-streaming path for one cell: plan budgets over every layer, then per layer a
// FullCacheAttention of every decode step and a ReplayLayer without shared logits.
std::vector<MetricSamples> ReferenceSamples(const traces::Trace& trace,
                                            const std::string& policy,
                                            int64_t budget,
                                            const sim::ReplayOptions& options) {
  const int num_layers = trace.num_layers();
  const int64_t n = trace.meta().prompt_len;
  std::vector<std::unique_ptr<policies::EvictionPolicy>> instances;
  std::vector<policies::EvictionPolicy*> raw;
  std::vector<std::unique_ptr<sim::PrefillAttention>> prefill;
  std::vector<const sim::PrefillAttention*> prefill_ptrs;
  for (int l = 0; l < num_layers; ++l) {
    policies::PolicySetup setup;
    setup.shape = trace.shape();
    setup.layer = l;
    setup.options = options;
    setup.prompt_len = n;
    setup.total_len = trace.meta().total_len;
    setup.seed = sim::LayerSeed(options.seed, l);
    instances.push_back(policies::MakePolicy(policy, {}, setup));
    raw.push_back(instances.back().get());
    prefill.push_back(std::make_unique<sim::PrefillAttention>(trace.layer(l), n));
    prefill_ptrs.push_back(prefill.back().get());
  }
  const std::vector<int64_t> budgets = sim::PlanLayerBudgets(trace, raw, prefill_ptrs, budget);
  std::vector<MetricSamples> samples;
  for (int l = 0; l < num_layers; ++l) {
    const FullCacheAttention full(trace, l);
    LayerMetrics metrics(full);
    sim::LayerReplayInput input;
    input.trace = &trace;
    input.layer = l;
    input.options = options;
    input.budget_tokens = budgets[static_cast<size_t>(l)];
    input.prefill = prefill_ptrs[static_cast<size_t>(l)];
    input.future = &full;
    sim::ReplayLayer(input, *raw[static_cast<size_t>(l)], &metrics);
    samples.push_back(metrics.TakeSamples());
  }
  return samples;
}

// 1e-6, relative above 1: a float metric of magnitude 3 (relative output errors on random
// traces) rounds in steps of 2.4e-7, and the engine sums outputs in another order than a GEMM.
void ExpectNear(const Summary& got, const Summary& want, const std::string& what) {
  const auto tolerance = [](double want_value) {
    return 1e-6 * std::max(1.0, std::abs(want_value));
  };
  EXPECT_NEAR(got.mean, want.mean, tolerance(want.mean)) << what << " mean";
  EXPECT_NEAR(got.p5, want.p5, tolerance(want.p5)) << what << " p5";
  EXPECT_NEAR(got.p50, want.p50, tolerance(want.p50)) << what << " p50";
  EXPECT_NEAR(got.p95, want.p95, tolerance(want.p95)) << what << " p95";
}

class StreamingEngine : public ::testing::TestWithParam<std::string> {};

TEST_P(StreamingEngine, MatchesWholeMatrixReplayForEveryPolicy) {
  const std::string policy = GetParam();
  if (policy == "gate") GTEST_SKIP() << "gate replays recorded flags; random traces have none";
  const traces::Trace trace = sim::RandomTrace(GqaShape(), 37, 61, 23);
  for (const sim::EvictTiming timing :
       {sim::EvictTiming::kAfterAttend, sim::EvictTiming::kBeforeAttend}) {
    SweepPlan plan;
    plan.policies = {{policy, {}}};
    plan.budgets = {sim::Budget::Parse("9", "t")};
    plan.options.seed = 3;
    plan.options.timing = timing;
    plan.block_steps = 5;  // several blocks, the last one partial
    plan.threads = 2;
    const SweepResult result = RunSweepOnTrace(plan, trace, "t");
    const std::vector<MetricSamples> want = ReferenceSamples(trace, policy, 9, plan.options);
    for (int l = 0; l < trace.num_layers(); ++l) {
      const ResultRow& row = result.table.rows()[static_cast<size_t>(l)];
      const MetricSamples& ref = want[static_cast<size_t>(l)];
      const std::string what =
          policy + " layer " + std::to_string(l) + " timing " + sim::EvictTimingName(timing);
      ExpectNear(row.mass_recall, Summarize(ref.mass_recall), what + " mass_recall");
      ExpectNear(row.rel_l2_error, Summarize(ref.rel_l2_error), what + " rel_l2_error");
      ExpectNear(row.cosine, Summarize(ref.cosine), what + " cosine");
      for (size_t k = 0; k < kTopK.size(); ++k) {
        EXPECT_NEAR(row.top_recall_mean[k], ref.TopRecallMean(k), 1e-6) << what << " top" << k;
      }
    }
  }
}

// Cells of a sweep share what does not depend on the budget (the block's logits, prompt
// statistics, PrefillAttention::SharedStatistic: MPCache's static scores, EpiCache's scores over
// a fully resident prefix); a cell's rows must still be what that cell alone gives, exactly.
TEST_P(StreamingEngine, ACellsRowsDoNotDependOnTheOtherCellsOfItsSweep) {
  const std::string policy = GetParam();
  if (policy == "gate") GTEST_SKIP() << "gate replays recorded flags; random traces have none";
  const traces::Trace trace = sim::RandomTrace(GqaShape(), 37, 61, 29);
  SweepPlan plan;
  plan.policies = {{policy, {}}};
  plan.block_steps = 7;
  plan.threads = 2;
  for (const char* budget : {"4", "9", "20"}) {
    plan.budgets.push_back(sim::Budget::Parse(budget, "t"));
  }
  const SweepResult together = RunSweepOnTrace(plan, trace, "t");
  for (size_t b = 0; b < plan.budgets.size(); ++b) {
    SweepPlan alone_plan = plan;
    alone_plan.budgets = {plan.budgets[b]};
    const SweepResult alone = RunSweepOnTrace(alone_plan, trace, "t");
    for (const ResultRow& want : alone.table.rows()) {
      const auto got = std::find_if(
          together.table.rows().begin(), together.table.rows().end(),
          [&](const ResultRow& r) { return r.budget == want.budget && r.layer == want.layer; });
      ASSERT_NE(got, together.table.rows().end()) << policy << " budget " << want.budget;
      const std::string what = policy + " budget " + want.budget + " layer " + want.layer;
      EXPECT_EQ(got->mass_recall.mean, want.mass_recall.mean) << what;
      EXPECT_EQ(got->mass_recall.p5, want.mass_recall.p5) << what;
      EXPECT_EQ(got->rel_l2_error.mean, want.rel_l2_error.mean) << what;
      EXPECT_EQ(got->cosine.mean, want.cosine.mean) << what;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(EveryPolicy,
                         StreamingEngine,
                         ::testing::ValuesIn(policies::PolicyNames()),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           std::string name = param.param;
                           for (char& c : name)
                             c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

// The block size changes the shape of the logits GEMM, so results may differ in the last float
// bits (Eigen picks kernels by size) but in nothing else: no decision, no count, no budget.
TEST(StreamingEngine, BlockSizeChangesNothingButRounding) {
  const traces::Trace trace = sim::RandomTrace(GqaShape(), 30, 53, 29);
  std::vector<ResultRow> first;
  for (const int64_t block : {0, 1, 4, 23}) {
    SweepPlan plan;
    for (const char* p : {"full", "h2o", "tova", "snapkv", "oracle", "d2o", "knorm", "kivi"}) {
      plan.policies.push_back({p, {}});
    }
    plan.budgets = {sim::Budget::Parse("7", "t"), sim::Budget::Parse("0.5p", "t")};
    plan.block_steps = block;
    const std::vector<ResultRow> rows = RunSweepOnTrace(plan, trace, "t").table.rows();
    if (first.empty()) {
      first = rows;
      continue;
    }
    ASSERT_EQ(rows.size(), first.size());
    for (size_t i = 0; i < rows.size(); ++i) {
      const ResultRow& a = rows[i];
      const ResultRow& b = first[i];
      const std::string what =
          a.policy + "@" + a.budget + " layer " + a.layer + " block " + std::to_string(block);
      EXPECT_EQ(a.steps, b.steps) << what;
      EXPECT_EQ(a.budget_tokens, b.budget_tokens) << what;
      EXPECT_EQ(a.resident_tokens_peak, b.resident_tokens_peak) << what;
      EXPECT_EQ(a.kv_bytes_peak, b.kv_bytes_peak) << what;
      EXPECT_DOUBLE_EQ(a.resident_tokens_mean, b.resident_tokens_mean) << what;
      ExpectNear(a.mass_recall, b.mass_recall, what + " mass_recall");
      ExpectNear(a.rel_l2_error, b.rel_l2_error, what + " rel_l2_error");
      ExpectNear(a.cosine, b.cosine, what + " cosine");
      for (size_t k = 0; k < kTopK.size(); ++k) {
        EXPECT_DOUBLE_EQ(a.top_recall_mean[k], b.top_recall_mean[k]) << what << " top" << k;
      }
    }
  }
}

TEST(FullAttentionStream, AgreesWithTheWholeMatrixPerBlock) {
  const traces::Trace trace = sim::RandomTrace(GqaShape(), 20, 47, 31);
  const FullCacheAttention whole(trace, 1);
  FullAttentionStream::Options options;
  options.block_steps = 6;
  options.future_mass_group = 2;
  FullAttentionStream stream(trace.layer(1), 20, options);
  ASSERT_EQ(stream.num_blocks(), 3);  // 27 decode steps: a first block of 16, then 6 and 5
  for (int h = 0; h < 4; h += 2) {
    const std::vector<double> a = whole.FutureMass(h, 2);
    const std::vector<double> b = stream.FutureMass(h, 2);
    ASSERT_EQ(a.size(), b.size());
    for (size_t j = 0; j < a.size(); ++j) EXPECT_NEAR(a[j], b[j], 1e-5);
  }
  for (int64_t block = 0; block < stream.num_blocks(); ++block) {
    stream.ComputeBlock(block);
    for (int64_t t = stream.BlockBegin(block); t < stream.BlockEnd(block); ++t) {
      for (int h = 0; h < 4; ++h) {
        const std::span<const float> a = whole.FullAttention(h, t);
        const std::span<const float> b = stream.FullAttention(h, t);
        const std::span<const float> logits = stream.Logits(h, t);
        ASSERT_EQ(a.size(), b.size());
        double dot = 0.0;
        for (int c = 0; c < 8; ++c) {
          dot += static_cast<double>(trace.layer(1).queries.Row(h, t)[c]) *
                 static_cast<double>(trace.layer(1).keys.Row(h / 2, 3)[c]);
        }
        EXPECT_NEAR(logits[3], dot / std::sqrt(8.0), 1e-5);
        for (size_t j = 0; j < a.size(); ++j) EXPECT_NEAR(a[j], b[j], 1e-6);
        EXPECT_NEAR(whole.TotalMass(h, t), stream.TotalMass(h, t), 1e-6);
        EXPECT_TRUE(whole.Output(h, t).isApprox(stream.Output(h, t), 1e-5f));
        const std::span<const int64_t> ta = whole.TopPositions(h, t);
        const std::span<const int64_t> tb = stream.TopPositions(h, t);
        EXPECT_EQ(std::vector<int64_t>(ta.begin(), ta.end()),
                  std::vector<int64_t>(tb.begin(), tb.end()));
      }
    }
  }
  EXPECT_THROW(stream.FullAttention(0, stream.BlockBegin(0)), InternalError);  // not current
}

}  // namespace
}  // namespace kvsim::analysis
