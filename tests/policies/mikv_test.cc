// `mikv` (card 2): the byte budget (B full-precision tokens' worth) split between a high-precision
// set and a 2-bit tier, against hand computation; demoted keys are balanced and on the 2-bit grid;
// and at equal bytes MiKV holds more tokens and loses less output than h2o.
#include <gtest/gtest.h>

#include <cmath>
#include <set>

#include "policy_test_util.h"
#include "sim/quantization.h"

namespace kvsim::policies {
namespace {

using testing::SetupFor;

models::ModelShape OneHeadShape() {
  models::ModelShape shape;
  shape.name = "one-head";
  shape.layers = 1;
  shape.q_heads = 2;
  shape.kv_heads = 1;
  shape.head_dim = 8;
  return shape;
}

// Resident state at each measure, plus the attention-output error against the full cache.
class Capture : public sim::ReplayObserver {
 public:
  explicit Capture(const traces::Trace& trace) : trace_(trace) {}
  void OnMeasure(const sim::MeasureView& view) override {
    const sim::KvCache& cache = *view.streams[0].cache;
    sizes.push_back(cache.size());
    full_tier.push_back(cache.CountTier(sim::PrecisionTier::kFull));
    last_keys = cache.Keys();
    last_entries.assign(cache.entries().begin(), cache.entries().end());
    const int q_heads = trace_.shape().q_heads;
    for (int h = 0; h < q_heads; ++h) {
      const int kv = h / trace_.shape().GroupSize();
      const std::vector<double> w =
          testing::NaiveSoftmax(trace_, 0, h, view.step, testing::Range(0, view.step + 1));
      Eigen::RowVectorXf full = Eigen::RowVectorXf::Zero(trace_.shape().head_dim);
      for (int64_t j = 0; j <= view.step; ++j) {
        full += static_cast<float>(w[static_cast<size_t>(j)]) *
                Eigen::Map<const Eigen::RowVectorXf>(trace_.layer(0).values.Row(kv, j),
                                                     trace_.shape().head_dim);
      }
      error += static_cast<double>((view.outputs->row(h) - full).norm());
    }
  }
  std::vector<int64_t> sizes, full_tier;
  RowMatrixXf last_keys;
  std::vector<sim::CacheEntry> last_entries;
  double error = 0.0;

 private:
  const traces::Trace& trace_;
};

sim::LayerReplayResult RunPolicy(const std::string& name,
                                 const traces::Trace& trace,
                                 const PolicyParams& params,
                                 int64_t budget,
                                 Capture* capture) {
  auto policy = MakePolicy(name, params, SetupFor(trace, 0, {}));
  sim::PrefillAttention prefill(trace.layer(0), trace.meta().prompt_len);
  std::vector<EvictionPolicy*> ptrs = {policy.get()};
  std::vector<const sim::PrefillAttention*> pre = {&prefill};
  sim::LayerReplayInput input;
  input.trace = &trace;
  input.layer = 0;
  input.budget_tokens = sim::PlanLayerBudgets(trace, ptrs, pre, budget)[0];
  input.prefill = &prefill;
  return sim::ReplayLayer(input, *policy, capture);
}

int64_t LevelAt(const sim::MemoryLedger& ledger, sim::MemoryCategory category, int64_t step) {
  int64_t level = -1;
  for (const sim::LedgerSample& s : ledger.samples()) {
    if (s.category == category && s.step <= step) level = s.bytes;
  }
  return level;
}

TEST(MiKv, SplitsTheByteBudgetBetweenTiersAsComputedByHand) {
  // d = 8, FP16: a full token (K + V) is 32 bytes; a 2-bit token with one group per vector is 2 x
  // (2 bytes payload + 4 bytes scale/zero) = 12 bytes. Budget B = 10 tokens = 320 bytes.
  const traces::Trace trace = sim::RandomTrace(OneHeadShape(), 20, 40, 8);
  Capture capture(trace);
  const sim::LayerReplayResult r = RunPolicy("mikv", trace, PolicyParams(), 10, &capture);
  // After prefill, n = 20: all-low = 240 <= 320, so nothing is evicted; the remaining 80 bytes pay
  // for floor(80 / (32 - 12)) = 4 full tokens.
  EXPECT_EQ(LevelAt(r.ledger, sim::MemoryCategory::kKvFull, 19), 4 * 32);
  EXPECT_EQ(LevelAt(r.ledger, sim::MemoryCategory::kKvQuantized, 19), 16 * 4);
  EXPECT_EQ(LevelAt(r.ledger, sim::MemoryCategory::kQuantMetadata, 19), 16 * 8);
  // Each decode step's evict phase: n survivors with n <= floor(320 / 12) = 26, then floor((320 -
  // 12 n) / 20) full ones; measured before the evict (plus the new token).
  for (size_t i = 0; i < capture.sizes.size(); ++i) {
    const int64_t before = i == 0 ? 20 : std::min<int64_t>(26, 20 + static_cast<int64_t>(i));
    const int64_t full_before = std::max<int64_t>(0, (320 - 12 * before) / 20);
    EXPECT_EQ(capture.sizes[i], before + 1) << i;
    EXPECT_EQ(capture.full_tier[i], full_before + 1) << i;
  }
  // Bytes after every evict phase stay within the budget; the high-water mark is one new
  // full-precision token above it at most.
  const sim::MemoryPeak peak = r.ledger.PeakBytes(0, sim::MemoryLedger::kKvCategories);
  EXPECT_LE(peak.bytes, 320 + 32);
}

TEST(MiKv, DemotedKeysAreBalancedAndOnTheTwoBitGrid) {
  const traces::Trace trace = sim::RandomTrace(OneHeadShape(), 24, 30, 12);
  Capture capture(trace);
  RunPolicy("mikv", trace, PolicyParams(), 12, &capture);
  // beta from the prompt (both query heads, all 24 positions), computed here independently.
  Eigen::VectorXf beta(8);
  for (int c = 0; c < 8; ++c) {
    float q = 0.0f, k = 0.0f;
    for (int64_t p = 0; p < 24; ++p) {
      for (int h = 0; h < 2; ++h) q = std::max(q, std::abs(trace.layer(0).queries.Row(h, p)[c]));
      k = std::max(k, std::abs(trace.layer(0).keys.Row(0, p)[c]));
    }
    beta[c] = std::sqrt(q / k);
  }
  int demoted = 0;
  for (size_t slot = 0; slot < capture.last_entries.size(); ++slot) {
    const sim::CacheEntry& e = capture.last_entries[slot];
    const Eigen::VectorXf original =
        Eigen::Map<const Eigen::VectorXf>(trace.layer(0).keys.Row(0, e.position), 8);
    const Eigen::VectorXf stored = capture.last_keys.row(static_cast<int64_t>(slot)).transpose();
    if (e.tier == sim::PrecisionTier::kFull) {
      EXPECT_EQ(stored, original);
      continue;
    }
    ++demoted;
    const Eigen::VectorXf balanced = stored.cwiseProduct(beta);
    std::set<int> levels;
    const Eigen::VectorXf scaled = original.cwiseProduct(beta);
    const float lo = scaled.minCoeff(), step = (scaled.maxCoeff() - lo) / 3;
    for (int c = 0; c < 8; ++c) {
      const float q = (balanced[c] - lo) / step;
      EXPECT_NEAR(q, std::round(q), 1e-3f) << e.position;
      levels.insert(static_cast<int>(std::lround(q)));
      EXPECT_LE(std::abs(balanced[c] - scaled[c]), step / 2 * 1.001f);
    }
    EXPECT_LE(levels.size(), 4u);
  }
  EXPECT_GT(demoted, 0);
}

TEST(MiKv, BeatsEvictionAtEqualBytes) {
  const traces::Trace trace = sim::RandomTrace(OneHeadShape(), 96, 128, 21);
  Capture mikv(trace), h2o(trace);
  const sim::LayerReplayResult rm = RunPolicy("mikv", trace, PolicyParams(), 24, &mikv);
  const sim::LayerReplayResult rh = RunPolicy("h2o", trace, PolicyParams(), 24, &h2o);
  const uint32_t kv = sim::MemoryLedger::kKvCategories;
  // Same memory: the decode-time mean bytes differ by less than one full token.
  EXPECT_NEAR(rm.ledger.MeanDecodeBytes(0, kv), rh.ledger.MeanDecodeBytes(0, kv), 32.0);
  EXPECT_LE(rm.ledger.PeakBytes(0, kv).bytes, 24 * 32 + 32);
  // MiKV holds more tokens and loses less of the output.
  EXPECT_GT(mikv.sizes.back(), h2o.sizes.back());
  EXPECT_LT(mikv.error, h2o.error);
}

}  // namespace
}  // namespace kvsim::policies
