// Memory tiers in the replay engine: the ledger's bytes per category against hand computation
// (full, quantized payload, quantization metadata, policy state, prefill transient), quantized
// demotion through EntryRewrite::tier, block-wise prefill's peak versus full prefill's, and
// turn-arrival events from the trace's segments.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/error.h"
#include "sim/budget.h"
#include "sim/quantization.h"
#include "sim/random_trace.h"
#include "sim/replay.h"

namespace kvsim::sim {
namespace {

using policies::EvictionPolicy;
using policies::EvictionRequest;
using policies::StreamView;

// 1 layer, 2 query heads over 1 KV head, d = 8, FP16: 2 * 8 * 2 = 32 bytes per token.
models::ModelShape OneHeadShape() {
  models::ModelShape shape;
  shape.name = "one-head";
  shape.layers = 1;
  shape.q_heads = 2;
  shape.kv_heads = 1;
  shape.head_dim = 8;
  return shape;
}

// Keeps the `budget` most recent tokens; 4 bytes of state per resident token.
class RecentPolicy : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "recent"; }
  void OnPrefill(const policies::PrefillView& view) override {
    blocks.push_back({view.begin, view.end});
  }
  void SelectVictims(const EvictionRequest& request,
                     std::span<EvictionDecision> decisions) override {
    for (const StreamView& s : request.streams) {
      const std::vector<int64_t> positions = s.cache->SortedPositions();
      const auto count = request.min_victims[static_cast<size_t>(s.stream)];
      decisions[static_cast<size_t>(s.stream)].victims.assign(positions.begin(),
                                                              positions.begin() + count);
      resident = s.cache->size() - count;
    }
  }
  int64_t StateBytes() const override { return 4 * resident; }
  std::vector<std::pair<int64_t, int64_t>> blocks;
  int64_t resident = 0;
};

// Never evicts; at each evict phase at `step`, demotes every full-precision position <= step - 4 to
// 2-bit per-token quantization with groups of 4 channels, and reports exact tier bytes.
class DemotePolicy : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "demote"; }
  int64_t LayerBudget(const policies::BudgetPlanView&) override {
    return policies::kUnlimitedTokens;
  }
  bool ActsEveryStep() const override { return true; }
  void SelectVictims(const EvictionRequest& request,
                     std::span<EvictionDecision> decisions) override {
    for (const StreamView& s : request.streams) {
      for (const CacheEntry& e : s.cache->entries()) {
        if (e.tier != PrecisionTier::kFull || e.position > request.step - 4) continue;
        const int64_t slot = s.cache->SlotOf(e.position);
        Eigen::VectorXf k = s.cache->KeyRow(slot).transpose();
        Eigen::VectorXf v = s.cache->ValueRow(slot).transpose();
        FakeQuantizePerToken(std::span<float>(k.data(), 8), 2, 4);
        FakeQuantizePerToken(std::span<float>(v.data(), 8), 2, 4);
        decisions[static_cast<size_t>(s.stream)].rewrites.push_back(
            EntryRewrite{.position = e.position,
                         .key = k,
                         .value = v,
                         .merged_tokens = 0,
                         .tier = PrecisionTier::kQuantized});
      }
    }
  }
  std::optional<KvTierBytes> TierBytes(std::span<const StreamView> streams) const override {
    KvTierBytes bytes;
    for (const StreamView& s : streams) {
      const int64_t q = s.cache->CountTier(PrecisionTier::kQuantized);
      bytes.full += (s.cache->size() - q) * 32;
      bytes.quantized += q * 2 * 2;     // K and V: 8 values x 2 bits = 2 bytes each
      bytes.metadata += q * 2 * 2 * 4;  // K and V: 2 groups x (fp16 scale + fp16 zero)
    }
    return bytes;
  }
  int64_t StateBytes() const override { return 12; }
};

// Latest level of (category) at or before `step` in `ledger` (layer 0).
int64_t LevelAt(const MemoryLedger& ledger, MemoryCategory category, int64_t step) {
  int64_t level = -1;
  for (const LedgerSample& s : ledger.samples()) {
    if (s.category == category && s.step <= step) level = s.bytes;
  }
  return level;
}

LayerReplayResult Replay(const traces::Trace& trace,
                         EvictionPolicy& policy,
                         int64_t budget,
                         ReplayOptions options = {}) {
  const PrefillAttention prefill(trace.layer(0), trace.meta().prompt_len);
  LayerReplayInput input;
  input.trace = &trace;
  input.layer = 0;
  input.options = options;
  input.budget_tokens = budget;
  input.prefill = &prefill;
  return ReplayLayer(input, policy, nullptr);
}

TEST(MemoryTiers, LedgerBytesMatchHandComputationInEveryCategory) {
  const traces::Trace trace = RandomTrace(OneHeadShape(), 20, 26, 5);
  for (const Regime regime : {Regime::kBounded, Regime::kPrefill}) {
    DemotePolicy policy;
    ReplayOptions options;
    options.regime = regime;
    const LayerReplayResult r = Replay(trace, policy, policies::kUnlimitedTokens, options);
    const MemoryLedger& ledger = r.ledger;
    // After prefill (step 19): positions 0..15 demoted, 16..19 full.
    EXPECT_EQ(LevelAt(ledger, MemoryCategory::kKvFull, 19), 4 * 32);
    EXPECT_EQ(LevelAt(ledger, MemoryCategory::kKvQuantized, 19), 16 * 4);
    EXPECT_EQ(LevelAt(ledger, MemoryCategory::kQuantMetadata, 19), 16 * 16);
    EXPECT_EQ(LevelAt(ledger, MemoryCategory::kPolicyState, 19), 12);
    // The whole prompt existed at full precision before demotion: 20 x 32 bytes in all.
    EXPECT_EQ(LevelAt(ledger, MemoryCategory::kPrefillTransient, 19), 20 * 32 - (128 + 64 + 256));
    // Decode step t is sampled at its high-water mark (after append, before its evict): the evict
    // phase of t-1 demoted positions <= t-5, so t-4 quantized and 5 full tokens.
    for (int64_t t = 20; t < 26; ++t) {
      EXPECT_EQ(LevelAt(ledger, MemoryCategory::kKvFull, t), 5 * 32) << t;
      EXPECT_EQ(LevelAt(ledger, MemoryCategory::kKvQuantized, t), (t - 4) * 4) << t;
      EXPECT_EQ(LevelAt(ledger, MemoryCategory::kQuantMetadata, t), (t - 4) * 16) << t;
      EXPECT_EQ(LevelAt(ledger, MemoryCategory::kPrefillTransient, t), 0) << t;
    }
    const MemoryPeak peak =
        ledger.PeakBytes(MemoryLedger::kAllLayers, MemoryLedger::kAllCategories);
    EXPECT_EQ(peak.bytes, 20 * 32 + 12);
    EXPECT_EQ(peak.step, 19);
  }
}

TEST(MemoryTiers, RewriteSetsTierAndStoresQuantizedValues) {
  const traces::Trace trace = RandomTrace(OneHeadShape(), 12, 12, 9);
  KvCache cache(8, 12);
  for (int64_t p = 0; p < 12; ++p) {
    cache.Append(p, trace.layer(0).keys.Row(0, p), trace.layer(0).values.Row(0, p));
  }
  cache.set_budget_tokens(12);
  Eigen::VectorXf k = cache.KeyRow(cache.SlotOf(3)).transpose();
  Eigen::VectorXf v = cache.ValueRow(cache.SlotOf(3)).transpose();
  const Eigen::VectorXf k_orig = k;
  FakeQuantizePerToken(std::span<float>(k.data(), 8), 2, 8);
  EvictionDecision d;
  d.rewrites.push_back(EntryRewrite{
      .position = 3, .key = k, .value = v, .merged_tokens = 0, .tier = PrecisionTier::kQuantized});
  // A rewrite without a tier (D2O's merges) leaves the tier as it is.
  d.rewrites.push_back(EntryRewrite{.position = 4,
                                    .key = cache.KeyRow(cache.SlotOf(4)).transpose(),
                                    .value = cache.ValueRow(cache.SlotOf(4)).transpose()});
  cache.Apply(d);
  EXPECT_EQ(cache.CountTier(PrecisionTier::kQuantized), 1);
  EXPECT_EQ(cache.entries()[static_cast<size_t>(cache.SlotOf(3))].tier, PrecisionTier::kQuantized);
  EXPECT_FALSE(cache.entries()[static_cast<size_t>(cache.SlotOf(3))].pristine());
  EXPECT_EQ(cache.entries()[static_cast<size_t>(cache.SlotOf(4))].tier, PrecisionTier::kFull);
  EXPECT_TRUE(cache.KeyRow(cache.SlotOf(3)).transpose().isApprox(k));
  EXPECT_FALSE(k.isApprox(k_orig));
}

TEST(MemoryTiers, BlockwisePrefillPeakIsBudgetPlusBlock) {
  // P = 64, budget B = 16, block C = 8, 32 bytes per token. Full prefill holds the whole prompt (64
  // x 32 = 2048 bytes); block-wise prefill never more than B + C = 24 tokens (768 bytes): the
  // predicted difference is (64 - 24) x 32 = 1280 bytes.
  const traces::Trace trace = RandomTrace(OneHeadShape(), 64, 70, 3);
  const uint32_t kv_and_transient =
      MemoryLedger::kKvCategories | MemoryLedger::Bit(MemoryCategory::kPrefillTransient);
  RecentPolicy full_policy;
  const LayerReplayResult full = Replay(trace, full_policy, 16);
  ReplayOptions blockwise;
  blockwise.prefill_block = 8;
  RecentPolicy block_policy;
  const LayerReplayResult block = Replay(trace, block_policy, 16, blockwise);
  const MemoryPeak full_peak = full.ledger.PeakBytes(0, kv_and_transient);
  const MemoryPeak block_peak = block.ledger.PeakBytes(0, kv_and_transient);
  EXPECT_EQ(full_peak.bytes, 64 * 32);
  EXPECT_EQ(full_peak.step, 63);
  EXPECT_EQ(block_peak.bytes, 24 * 32);
  EXPECT_EQ(block_peak.step,
            23);  // the first block that arrives over a full budget
  EXPECT_EQ(full_peak.bytes - block_peak.bytes, 1280);
  // The policy saw the 8 blocks, in order; both end with the same resident set.
  ASSERT_EQ(block_policy.blocks.size(), 8u);
  for (int64_t b = 0; b < 8; ++b) {
    EXPECT_EQ(block_policy.blocks[static_cast<size_t>(b)], std::make_pair(8 * b, 8 * b + 8));
  }
  EXPECT_EQ(full.resident_tokens_peak, block.resident_tokens_peak);
  // Decode is identical afterwards: same mean bytes.
  EXPECT_DOUBLE_EQ(full.ledger.MeanDecodeBytes(0, MemoryLedger::kKvCategories),
                   block.ledger.MeanDecodeBytes(0, MemoryLedger::kKvCategories));
}

TEST(MemoryTiers, TurnBoundariesSplitPrefillBlocksAndArrive) {
  traces::Trace trace = RandomTrace(OneHeadShape(), 30, 34, 4);
  trace.mutable_meta().segments = {
      {0, 10, 0, "user"}, {10, 22, 0, "assistant"}, {22, 30, 1, "user"}, {30, 34, 1, "assistant"}};
  ReplayOptions options;
  options.prefill_block = 16;
  RecentPolicy policy;
  const LayerReplayResult r = Replay(trace, policy, 1000, options);
  // Turn 1 arrives at 22: blocks are [0,16) [16,22) [22,30).
  const std::vector<std::pair<int64_t, int64_t>> expected = {{0, 16}, {16, 22}, {22, 30}};
  EXPECT_EQ(policy.blocks, expected);
  ASSERT_EQ(r.turn_arrivals.size(), 2u);
  EXPECT_EQ(r.turn_arrivals[0].position, 0);
  EXPECT_EQ(r.turn_arrivals[1].position, 22);
  EXPECT_EQ(r.turn_arrivals[1].turn, 1);
}

TEST(MemoryTiers, BytesBudgetResolvesByFullPrecisionTokenBytes) {
  // Llama-3-8B: 32 layers x 8 KV heads x 2 x 128 x 2 bytes = 131072 bytes per token.
  const int64_t per_token = 32 * 8 * 512;
  const Budget b = Budget::Parse("64MiB", "--budget");
  EXPECT_EQ(b.kind, Budget::Kind::kBytes);
  EXPECT_EQ(b.value, 64.0 * 1024 * 1024);
  EXPECT_EQ(b.text, "64MiB");
  EXPECT_EQ(b.ResolveTokens(1000, per_token), 512);
  EXPECT_EQ(Budget::Parse("1GiB", "b").ResolveTokens(1000, per_token), 8192);
  EXPECT_EQ(Budget::Parse("200000B", "b").ResolveTokens(1000, per_token), 1);  // at least one
  EXPECT_EQ(Budget::Parse("1.5KiB", "b").value, 1536.0);
  EXPECT_EQ(Budget::Parse("256", "b").ResolveTokens(1000, per_token), 256);  // tokens unchanged
  for (const char* bad : {"0B", "xMiB", "MiB", "-3KiB"}) {
    try {
      Budget::Parse(bad, "--budget");
      ADD_FAILURE() << bad;
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("--budget"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
  EXPECT_THROW(b.ResolveTokens(1000), InputError);  // no shape to divide by
}

}  // namespace
}  // namespace kvsim::sim
