// `kivi` (card 3): exact ledger bytes per category over time against the hand formula, the resident
// keys/values are the scheme's quantization of the trace (per-channel key groups, per-token value
// groups, full-precision residual), and fewer bits cost more output error.
#include <gtest/gtest.h>

#include <cmath>
#include <optional>
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

// Copies the resident K/V at the last measured step and sums the output error per step.
class Capture : public sim::ReplayObserver {
 public:
  explicit Capture(const traces::Trace& trace) : trace_(trace) {}
  void OnMeasure(const sim::MeasureView& view) override {
    const sim::KvCache& cache = *view.streams[0].cache;
    positions = cache.SortedPositions();
    keys = cache.Keys();
    values = cache.Values();
    slots.clear();
    for (const int64_t p : positions) slots.push_back(cache.SlotOf(p));
    // Full-cache output of query head 0 at this step, by brute force.
    const std::vector<double> w =
        testing::NaiveSoftmax(trace_, 0, 0, view.step, testing::Range(0, view.step + 1));
    Eigen::RowVectorXf full = Eigen::RowVectorXf::Zero(8);
    for (int64_t j = 0; j <= view.step; ++j) {
      full += static_cast<float>(w[static_cast<size_t>(j)]) *
              Eigen::Map<const Eigen::RowVectorXf>(trace_.layer(0).values.Row(0, j), 8);
    }
    error += static_cast<double>((view.outputs->row(0) - full).norm());
  }
  std::vector<int64_t> positions;
  std::vector<int64_t> slots;
  RowMatrixXf keys, values;
  double error = 0.0;

 private:
  const traces::Trace& trace_;
};

sim::LayerReplayResult RunKivi(const traces::Trace& trace,
                               PolicyParams params,
                               Capture* capture,
                               sim::ReplayOptions options = {}) {
  auto policy = MakePolicy("kivi", params, SetupFor(trace, 0, options));
  sim::PrefillAttention prefill(trace.layer(0), trace.meta().prompt_len);
  sim::LayerReplayInput input;
  input.trace = &trace;
  input.layer = 0;
  input.options = options;
  input.budget_tokens = 64;  // ignored: kivi's layer budget is unlimited
  std::vector<EvictionPolicy*> ptrs = {policy.get()};
  std::vector<const sim::PrefillAttention*> pre = {&prefill};
  input.budget_tokens = sim::PlanLayerBudgets(trace, ptrs, pre, 64)[0];
  EXPECT_EQ(input.budget_tokens, kUnlimitedTokens);
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

PolicyParams Params(int bits) {
  PolicyParams p;
  p.Set("k_bits", std::to_string(bits));
  p.Set("v_bits", std::to_string(bits));
  p.Set("group_size", "4");
  p.Set("residual", "8");
  return p;
}

TEST(Kivi, LedgerBytesFollowTheResidualSchedule) {
  const traces::Trace trace = sim::RandomTrace(OneHeadShape(), 37, 50, 2);
  for (const sim::Regime regime : {sim::Regime::kBounded, sim::Regime::kPrefill}) {
    sim::ReplayOptions options;
    options.regime = regime;
    const sim::LayerReplayResult r = RunKivi(trace, Params(2), nullptr, options);
    // d = 8, G = 4, R = 8, 2 bits. Per key group (4 tokens x 8 channels): 8 bytes payload, 8 x 4
    // bytes of scale+zero. Per value token: 2 bytes payload, 2 groups x 4 bytes.
    auto expect = [&](int64_t step, int64_t n) {
      const int64_t nk = n - n % 8;                    // keys quantized in whole residual buffers
      const int64_t nv = std::max<int64_t>(0, n - 8);  // values: all but the last 8
      EXPECT_EQ(LevelAt(r.ledger, sim::MemoryCategory::kKvFull, step), (n - nk + n - nv) * 16)
          << step;
      EXPECT_EQ(LevelAt(r.ledger, sim::MemoryCategory::kKvQuantized, step), nk / 4 * 8 + nv * 2)
          << step;
      EXPECT_EQ(LevelAt(r.ledger, sim::MemoryCategory::kQuantMetadata, step), nk / 4 * 32 + nv * 8)
          << step;
    };
    expect(36, 37);  // after prefill: 32 keys and 29 values quantized
    // Decode step t is sampled after its append, with the quantization of step t-1: t tokens.
    for (int64_t t = 37; t < 50; ++t) {
      const int64_t n = t;
      const int64_t nk = n - n % 8;
      const int64_t nv = std::max<int64_t>(0, n - 8);
      EXPECT_EQ(LevelAt(r.ledger, sim::MemoryCategory::kKvFull, t), (t + 1 - nk + t + 1 - nv) * 16)
          << t;
      EXPECT_EQ(LevelAt(r.ledger, sim::MemoryCategory::kKvQuantized, t), nk / 4 * 8 + nv * 2);
      EXPECT_EQ(LevelAt(r.ledger, sim::MemoryCategory::kQuantMetadata, t), nk / 4 * 32 + nv * 8);
    }
    EXPECT_EQ(r.resident_tokens_peak, 50);  // nothing is ever evicted
  }
}

// What the serving pool charges a KIVI sequence: the hand formula above at any context, and
// what the policy reports for its own stream after every evict phase of a replay.
TEST(Kivi, KeepAllStreamBytesIsTheSchemesBytesAtAnyContext) {
  const traces::Trace trace = sim::RandomTrace(OneHeadShape(), 37, 50, 2);
  sim::ReplayOptions options;
  options.timing = sim::EvictTiming::kBeforeAttend;
  auto policy = MakePolicy("kivi", Params(2), SetupFor(trace, 0, options));
  for (int64_t n = 0; n <= 64; ++n) {
    const int64_t nk = n - n % 8;
    const int64_t nv = std::max<int64_t>(0, n - 8);
    const std::optional<sim::KvTierBytes> bytes = policy->KeepAllStreamBytes(n);
    ASSERT_TRUE(bytes.has_value());
    EXPECT_EQ(bytes->full, (n - nk + n - nv) * 16) << n;
    EXPECT_EQ(bytes->quantized, nk / 4 * 8 + nv * 2) << n;
    EXPECT_EQ(bytes->metadata, nk / 4 * 32 + nv * 8) << n;
  }
  class Compare : public sim::ReplayObserver {
   public:
    explicit Compare(const EvictionPolicy& p) : policy_(p) {}
    // Evict-before-attend: the measure follows the step's evict phase.
    void OnMeasure(const sim::MeasureView& view) override {
      const int64_t n = view.streams[0].cache->size();
      EXPECT_EQ(policy_.TierBytes(view.streams), policy_.KeepAllStreamBytes(n)) << view.step;
      ++steps;
    }
    int steps = 0;

   private:
    const EvictionPolicy& policy_;
  } compare(*policy);
  sim::PrefillAttention prefill(trace.layer(0), 37);
  sim::LayerReplayInput input;
  input.trace = &trace;
  input.options = options;
  input.budget_tokens = kUnlimitedTokens;
  input.prefill = &prefill;
  sim::ReplayLayer(input, *policy, &compare);
  EXPECT_EQ(compare.steps, 13);
  // Policies that evict are charged at full precision: no override.
  EXPECT_FALSE(MakePolicy("h2o", {}, SetupFor(trace, 0, {}))->KeepAllStreamBytes(10).has_value());
}

TEST(Kivi, ResidentKeysAndValuesAreTheSchemesQuantization) {
  const traces::Trace trace = sim::RandomTrace(OneHeadShape(), 37, 50, 4);
  Capture capture(trace);
  RunKivi(trace, Params(2), &capture);
  // Last measure: step 49, after the quantization of step 48 (n = 49): keys [0, 48) quantized,
  // values [0, 41) quantized.
  ASSERT_EQ(capture.positions.size(), 50u);
  const auto& keys = trace.layer(0).keys;
  const auto& values = trace.layer(0).values;
  for (int64_t p = 0; p < 50; ++p) {
    const int64_t slot = capture.slots[static_cast<size_t>(p)];
    for (int c = 0; c < 8; ++c) {
      const float k = capture.keys(slot, c), k0 = keys.Row(0, p)[c];
      if (p >= 48) {
        EXPECT_EQ(k, k0);
        continue;
      }
      // Independent min/max of the key's group: channel c over the 4 tokens of its group.
      float lo = INFINITY, hi = -INFINITY;
      std::set<float> levels;
      for (int64_t q = p / 4 * 4; q < p / 4 * 4 + 4; ++q) {
        lo = std::min(lo, keys.Row(0, q)[c]);
        hi = std::max(hi, keys.Row(0, q)[c]);
        levels.insert(capture.keys(capture.slots[static_cast<size_t>(q)], c));
      }
      EXPECT_LE(std::abs(k - k0), (hi - lo) / 3 / 2 * (1 + 1e-5f)) << p << " " << c;
      EXPECT_LE(levels.size(), 4u);
    }
    for (int c = 0; c < 8; ++c) {
      const float v = capture.values(slot, c), v0 = values.Row(0, p)[c];
      if (p >= 41) {
        EXPECT_EQ(v, v0);
        continue;
      }
      float lo = INFINITY, hi = -INFINITY;
      for (int cc = c / 4 * 4; cc < c / 4 * 4 + 4; ++cc) {
        lo = std::min(lo, values.Row(0, p)[cc]);
        hi = std::max(hi, values.Row(0, p)[cc]);
      }
      EXPECT_LE(std::abs(v - v0), (hi - lo) / 3 / 2 * (1 + 1e-5f)) << p << " " << c;
    }
  }
  EXPECT_GT(capture.error, 0.0);
}

TEST(Kivi, FewerBitsCostMoreOutputError) {
  const traces::Trace trace = sim::RandomTrace(OneHeadShape(), 64, 96, 6);
  Capture two(trace), four(trace), eight(trace);
  RunKivi(trace, Params(2), &two);
  RunKivi(trace, Params(4), &four);
  RunKivi(trace, Params(8), &eight);
  EXPECT_GT(two.error, four.error);
  EXPECT_GT(four.error, eight.error);
  EXPECT_GT(eight.error, 0.0);
}

TEST(Kivi, RejectsResidualNotMultipleOfGroup) {
  PolicyParams p;
  p.Set("group_size", "32");
  p.Set("residual", "48");
  const traces::Trace trace = sim::RandomTrace(OneHeadShape(), 8, 8, 1);
  try {
    MakePolicy("kivi", p, SetupFor(trace, 0, {}));
    FAIL() << "expected InputError";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("residual=48"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace kvsim::policies
