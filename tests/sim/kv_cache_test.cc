// KvCache, EventQueue and MemoryLedger on hand-built cases.
#include "sim/kv_cache.h"

#include <gtest/gtest.h>

#include "sim/event_queue.h"
#include "sim/memory_ledger.h"

namespace kvsim::sim {
namespace {

void AppendPositions(KvCache& cache, int64_t end) {
  for (int64_t p = 0; p < end; ++p) {
    const float row[2] = {static_cast<float>(p), -static_cast<float>(p)};
    cache.Append(p, row, row);
  }
}

TEST(KvCache, RemovesVictimsAndKeepsRowsWithTheirPositions) {
  KvCache cache(2, 8);
  cache.set_budget_tokens(3);
  AppendPositions(cache, 6);
  EvictionDecision d;
  d.victims = {1, 4, 0};
  cache.Apply(d);
  EXPECT_EQ(cache.size(), 3);
  EXPECT_EQ(cache.SortedPositions(), (std::vector<int64_t>{2, 3, 5}));
  EXPECT_EQ(cache.peak_size(), 6);
  for (int64_t slot = 0; slot < cache.size(); ++slot) {
    EXPECT_EQ(cache.Keys()(slot, 0), static_cast<float>(cache.Position(slot)));
    EXPECT_EQ(cache.SlotOf(cache.Position(slot)), slot);
  }
  EXPECT_FALSE(cache.Contains(4));
}

TEST(KvCache, NeverExceedsBudgetAfterApply) {
  KvCache cache(2, 8);
  cache.set_budget_tokens(3);
  AppendPositions(cache, 5);
  EvictionDecision d;
  d.victims = {0};
  EXPECT_THROW(cache.Apply(d), InternalError);
}

TEST(KvCache, RejectsNonResidentOrRepeatedVictims) {
  KvCache cache(2, 8);
  cache.set_budget_tokens(8);
  AppendPositions(cache, 4);
  EvictionDecision absent;
  absent.victims = {6};
  EXPECT_THROW(cache.Apply(absent), InternalError);
  EvictionDecision repeated;
  repeated.victims = {1, 1};
  EXPECT_THROW(cache.Apply(repeated), InternalError);
}

TEST(KvCache, RewriteChangesRowAndCountsMerges) {
  KvCache cache(2, 8);
  cache.set_budget_tokens(2);
  AppendPositions(cache, 3);
  EvictionDecision d;
  d.rewrites.push_back({2, Eigen::Vector2f(7, 8), Eigen::Vector2f(9, 10), 1});
  d.victims = {0};
  cache.Apply(d);
  const int64_t slot = cache.SlotOf(2);
  EXPECT_EQ(cache.Keys()(slot, 1), 8.0f);
  EXPECT_EQ(cache.Values()(slot, 0), 9.0f);
  EXPECT_EQ(cache.entries()[static_cast<size_t>(slot)].merge_count, 1);
  EXPECT_FALSE(cache.entries()[static_cast<size_t>(slot)].pristine());
}

// Owned rows live in fixed chunks (kv_cache.h); a cache that owns far more rows than one chunk,
// frees some and reuses them must still return every position's own row.
TEST(KvCache, OwnedRowsSpanManyChunksAndAreReused) {
  KvCache cache(2, 2000);
  cache.set_budget_tokens(2000);
  AppendPositions(cache, 1500);
  EvictionDecision d;
  for (int64_t p = 0; p < 1500; p += 3) d.victims.push_back(p);
  cache.Apply(d);
  for (int64_t p = 1500; p < 2000; ++p) {  // reuses the freed rows, then new chunks
    const float row[2] = {static_cast<float>(p), -static_cast<float>(p)};
    cache.Append(p, row, row);
  }
  EvictionDecision rewrite;
  rewrite.rewrites.push_back(EntryRewrite{
      .position = 1999, .key = Eigen::Vector2f(7, 8), .value = Eigen::Vector2f(9, 10)});
  cache.Apply(rewrite);
  EXPECT_EQ(cache.size(), 2000 - 500);
  for (int64_t slot = 0; slot < cache.size(); ++slot) {
    const int64_t p = cache.Position(slot);
    EXPECT_NE(p % 3 == 0 && p < 1500, true) << p;
    const float want = p == 1999 ? 7.0f : static_cast<float>(p);
    EXPECT_EQ(cache.KeyRow(slot)(0), want) << p;
    EXPECT_EQ(cache.ValueRow(slot)(1), p == 1999 ? 10.0f : -static_cast<float>(p)) << p;
  }
}

// A codec that stores each row as one byte per element (value = byte - offset): enough to tell
// which codec and which bytes a decoded row came from.
class OffsetCodec final : public RowCodec {
 public:
  explicit OffsetCodec(float offset) : offset_(offset) {}
  int64_t EncodedBytes() const override { return 4; }  // head_dim 2: key, value
  void Decode(const uint8_t* encoded, bool value, float* out) const override {
    for (int c = 0; c < 2; ++c) out[c] = static_cast<float>(encoded[(value ? 2 : 0) + c]) - offset_;
  }
  static EntryRewrite Rewrite(int64_t position, const OffsetCodec& codec, uint8_t first) {
    return EntryRewrite{
        .position = position,
        .merged_tokens = 0,
        .tier = PrecisionTier::kQuantized,
        .codec = &codec,
        .encoded = {first, static_cast<uint8_t>(first + 1), static_cast<uint8_t>(first + 2),
                    static_cast<uint8_t>(first + 3)}};
  }

 private:
  float offset_;
};

TEST(KvCache, EncodedEntriesDecodeOnReadAndSwitchStorageBothWays) {
  const OffsetCodec plain(0.0f);
  const OffsetCodec shifted(100.0f);
  KvCache cache(2, 600);
  cache.set_budget_tokens(600);
  AppendPositions(cache, 600);
  // Encode every other entry (more than one 256-row chunk), half of them with each codec.
  EvictionDecision encode;
  for (int64_t p = 0; p < 600; p += 2) {
    encode.rewrites.push_back(
        OffsetCodec::Rewrite(p, p % 4 == 0 ? plain : shifted, static_cast<uint8_t>(p % 200)));
  }
  cache.Apply(encode);
  EXPECT_EQ(cache.EncodedEntries(), 300);
  EXPECT_EQ(cache.CountTier(PrecisionTier::kQuantized), 300);
  const auto expect_rows = [&](int64_t p, float k0, float k1, float v0, float v1) {
    const int64_t slot = cache.SlotOf(p);
    ASSERT_GE(slot, 0) << p;
    const auto key = cache.KeyRow(slot);  // one key row and one value row held at once
    const auto value = cache.ValueRow(slot);
    EXPECT_EQ(key(0), k0) << p;
    EXPECT_EQ(key(1), k1) << p;
    EXPECT_EQ(value(0), v0) << p;
    EXPECT_EQ(value(1), v1) << p;
    EXPECT_FALSE(cache.IsSourceView(slot));
  };
  for (int64_t p = 0; p < 600; ++p) {
    const auto b = static_cast<float>(p % 200);
    const float off = p % 4 == 0 ? 0.0f : 100.0f;
    if (p % 2 == 0) {
      expect_rows(p, b - off, b + 1 - off, b + 2 - off, b + 3 - off);
    } else {
      expect_rows(p, static_cast<float>(p), -static_cast<float>(p), static_cast<float>(p),
                  -static_cast<float>(p));
    }
  }
  // Gather decodes every encoded row.
  const RowMatrixXf values = cache.Values();
  EXPECT_EQ(values(cache.SlotOf(6), 1), 6.0f + 3.0f - 100.0f);
  // Evict encoded entries, encode a float entry into a freed row, turn an encoded one back to
  // floats (a later rewrite without a codec), and re-encode an encoded one in place.
  EvictionDecision mixed;
  mixed.victims = {0, 2, 4};
  mixed.rewrites.push_back(OffsetCodec::Rewrite(1, plain, 50));
  mixed.rewrites.push_back(EntryRewrite{
      .position = 8, .key = Eigen::Vector2f(-1, -2), .value = Eigen::Vector2f(-3, -4)});
  mixed.rewrites.push_back(OffsetCodec::Rewrite(10, shifted, 110));
  cache.Apply(mixed);
  EXPECT_EQ(cache.size(), 597);
  EXPECT_EQ(cache.EncodedEntries(), 300 - 3 + 1 - 1);
  expect_rows(1, 50, 51, 52, 53);
  expect_rows(8, -1, -2, -3, -4);
  expect_rows(10, 10, 11, 12, 13);
  expect_rows(12, 12, 13, 14, 15);
  // A rewrite whose bytes do not match its codec is an internal error.
  EvictionDecision bad;
  bad.rewrites.push_back(OffsetCodec::Rewrite(12, plain, 1));
  bad.rewrites.back().encoded.pop_back();
  EXPECT_THROW(cache.Apply(bad), InternalError);
}

TEST(EventQueue, OrdersByStepThenPhaseThenPushOrder) {
  EventQueue q;
  q.Push({.step = 5, .phase = Phase::kMeasure, .type = EventType::kMeasure, .begin = 1});
  q.Push({.step = 4, .phase = Phase::kLedger, .type = EventType::kLedgerSample});
  q.Push({.step = 5, .phase = Phase::kAppend, .type = EventType::kDecodeAppend});
  q.Push({.step = 5, .phase = Phase::kMeasure, .type = EventType::kMeasure, .begin = 2});
  EXPECT_EQ(q.Pop().step, 4);
  EXPECT_EQ(q.Pop().phase, Phase::kAppend);
  EXPECT_EQ(q.Pop().begin, 1);
  EXPECT_EQ(q.Pop().begin, 2);
  EXPECT_TRUE(q.empty());
}

TEST(MemoryLedger, PeakSumsLayersAtTheSameStep) {
  MemoryLedger ledger;
  ledger.Record(1, LedgerPhase::kDecode, 0, MemoryCategory::kKvFull, 10);
  ledger.Record(1, LedgerPhase::kDecode, 1, MemoryCategory::kKvFull, 5);
  ledger.Record(2, LedgerPhase::kDecode, 0, MemoryCategory::kKvFull, 12);
  ledger.Record(3, LedgerPhase::kDecode, 1, MemoryCategory::kKvFull, 1);
  ledger.Record(3, LedgerPhase::kDecode, 0, MemoryCategory::kPolicyState, 100);
  const MemoryPeak kv = ledger.PeakBytes(MemoryLedger::kAllLayers, MemoryLedger::kKvCategories);
  EXPECT_EQ(kv.bytes, 17);  // step 2: 12 + 5 (layer 1 keeps its level)
  EXPECT_EQ(kv.step, 2);
  EXPECT_DOUBLE_EQ(ledger.MeanDecodeBytes(MemoryLedger::kAllLayers, MemoryLedger::kKvCategories),
                   (15.0 + 17.0 + 13.0) / 3.0);
  EXPECT_EQ(ledger.PeakBytes(MemoryLedger::kAllLayers, MemoryLedger::kAllCategories).bytes, 113);
  EXPECT_EQ(ledger.PeakBytes(0, MemoryLedger::kKvCategories).bytes, 12);
}

}  // namespace
}  // namespace kvsim::sim

namespace kvsim::sim {
namespace {

// A cache over a source views pristine rows (no copies) and says when its slots are exactly the
// source's first rows; any removal or rewrite ends that, and rewrites land in owned rows.
TEST(KvCacheSource, ViewsSourceRowsUntilEvictedOrRewritten) {
  RowMatrixXf keys(6, 2);
  RowMatrixXf values(6, 2);
  for (int p = 0; p < 6; ++p) {
    keys.row(p) << static_cast<float>(p), 1.0f;
    values.row(p) << 10.0f + static_cast<float>(p), 2.0f;
  }
  KvCache cache{ConstMatrixMap(keys.data(), 6, 2), ConstMatrixMap(values.data(), 6, 2)};
  cache.set_budget_tokens(10);
  for (int p = 0; p < 4; ++p) cache.AppendFromSource(p);
  EXPECT_TRUE(cache.IsSourcePrefix());
  EXPECT_EQ(cache.KeyRow(2).data(), keys.row(2).data());  // a view, not a copy
  EXPECT_EQ(cache.SourceValues(4)(3, 0), 13.0f);
  EvictionDecision rewrite;
  rewrite.rewrites.push_back(EntryRewrite{
      .position = 1, .key = Eigen::Vector2f(7.0f, 7.0f), .value = Eigen::Vector2f(8.0f, 8.0f)});
  cache.Apply(rewrite);
  EXPECT_FALSE(cache.IsSourcePrefix());
  EXPECT_FALSE(cache.IsSourceView(cache.SlotOf(1)));
  EXPECT_EQ(cache.KeyRow(cache.SlotOf(1))(0), 7.0f);
  EXPECT_EQ(keys(1, 0), 1.0f);  // the source is untouched
  EvictionDecision evict;
  evict.victims = {0};
  cache.Apply(evict);
  EXPECT_EQ(cache.size(), 3);
  EXPECT_EQ(cache.ValueRow(cache.SlotOf(3))(0), 13.0f);
  const RowMatrixXf gathered = cache.Keys();
  for (int64_t slot = 0; slot < cache.size(); ++slot) {
    EXPECT_EQ(gathered.row(slot), cache.KeyRow(slot)) << slot;
  }
}

}  // namespace
}  // namespace kvsim::sim
