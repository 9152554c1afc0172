// The replay engine's semantics (sim/README.md): hook order, budgets in both regimes, eviction
// timing, GQA modes, memory accounting and the observer's view.
#include "sim/replay.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "common/tiny_shape.h"
#include "models/model_shape.h"
#include "sim/random_trace.h"

namespace kvsim::sim {
namespace {

using policies::EvictionPolicy;
using policies::EvictionRequest;
using policies::StepView;
using policies::StreamView;

using testing::TinyShape;

// Evicts the oldest resident positions (a FIFO), recording every hook call.
class SpyPolicy : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "spy"; }
  std::vector<double> PrefillLayerStats(const policies::PrefillView& view) override {
    calls.push_back("stats");
    return {static_cast<double>(view.layer)};
  }
  int64_t LayerBudget(const policies::BudgetPlanView& plan) override {
    calls.push_back("budget");
    return plan.uniform_budget_tokens;
  }
  void OnPrefill(const policies::PrefillView& view) override {
    calls.push_back("prefill");
    for (const StreamView& s : view.streams) {
      EXPECT_EQ(s.attention, nullptr);
      EXPECT_EQ(s.cache->size(), view.end);
    }
    EXPECT_EQ(view.queries.last_visible(), view.end - 1);
  }
  void OnStep(const StepView& view) override {
    calls.push_back("step " + std::to_string(view.step));
    EXPECT_EQ(view.queries.last_visible(), view.step);
    for (const StreamView& s : view.streams) {
      ASSERT_NE(s.attention, nullptr);
      EXPECT_EQ(s.attention->rows(), s.num_q_heads);
      EXPECT_EQ(s.attention->cols(), s.cache->size());
      EXPECT_TRUE(s.cache->Contains(view.step));
      for (int r = 0; r < s.num_q_heads; ++r) EXPECT_NEAR(s.attention->row(r).sum(), 1.0f, 1e-5f);
    }
  }
  void SelectVictims(const EvictionRequest& request,
                     std::span<EvictionDecision> decisions) override {
    calls.push_back(std::string(request.after_prefill ? "select prefill" : "select ") +
                    (request.after_prefill ? "" : std::to_string(request.step)));
    caps.push_back(request.budget_cap_tokens);
    for (const StreamView& s : request.streams) {
      const std::vector<int64_t> positions = s.cache->SortedPositions();
      const auto count = request.min_victims[static_cast<size_t>(s.stream)];
      decisions[static_cast<size_t>(s.stream)].victims.assign(positions.begin(),
                                                              positions.begin() + count);
    }
  }
  void OnEvicted(int stream, std::span<const int64_t> positions) override {
    if (stream == 0) calls.push_back("evicted " + std::to_string(positions.size()));
  }
  std::vector<std::string> calls;
  std::vector<int64_t> caps;  // EvictionRequest::budget_cap_tokens per evict phase
};

class RecordingObserver : public ReplayObserver {
 public:
  void OnMeasure(const MeasureView& view) override {
    steps.push_back(view.step);
    sizes.push_back(view.streams[0].cache->size());
    outputs_rows = view.outputs->rows();
  }
  std::vector<int64_t> steps;
  std::vector<int64_t> sizes;
  Eigen::Index outputs_rows = 0;
};

LayerReplayInput Input(const traces::Trace& trace,
                       const PrefillAttention& prefill,
                       int64_t budget,
                       ReplayOptions options = {}) {
  LayerReplayInput input;
  input.trace = &trace;
  input.layer = 0;
  input.options = options;
  input.budget_tokens = budget;
  input.prefill = &prefill;
  return input;
}

TEST(Replay, CallsHooksInDocumentedOrder) {
  const traces::Trace trace = RandomTrace(TinyShape(), 6, 8, 1);
  PrefillAttention prefill0(trace.layer(0), 6);
  PrefillAttention prefill1(trace.layer(1), 6);
  SpyPolicy spy0, spy1;
  EvictionPolicy* policies[] = {&spy0, &spy1};
  const PrefillAttention* prefills[] = {&prefill0, &prefill1};
  const std::vector<int64_t> budgets = PlanLayerBudgets(trace, policies, prefills, 4);
  EXPECT_EQ(budgets, (std::vector<int64_t>{4, 4}));
  ReplayLayer(Input(trace, prefill0, 4), spy0, nullptr);
  const std::vector<std::string> expected = {"stats",     "budget",   "prefill",  "select prefill",
                                             "evicted 2", "step 6",   "select 6", "evicted 1",
                                             "step 7",    "select 7", "evicted 1"};
  EXPECT_EQ(spy0.calls, expected);
}

TEST(Replay, BoundedRegimeAttendsOverBudgetPlusOneThenEvicts) {
  const traces::Trace trace = RandomTrace(TinyShape(), 10, 16, 2);
  PrefillAttention prefill(trace.layer(0), 10);
  SpyPolicy spy;
  RecordingObserver observer;
  const LayerReplayResult result = ReplayLayer(Input(trace, prefill, 5), spy, &observer);
  EXPECT_EQ(result.steps, 6);
  EXPECT_EQ(observer.steps, (std::vector<int64_t>{10, 11, 12, 13, 14, 15}));
  EXPECT_EQ(observer.sizes, std::vector<int64_t>(6, 6));  // evict-after-attend: B + 1
  EXPECT_EQ(observer.outputs_rows, 4);
  EXPECT_EQ(result.resident_tokens_peak, 6);
  EXPECT_DOUBLE_EQ(result.resident_tokens_mean, 6.0);
}

// A budget schedule (serving pools): entry k caps the cache after the evict phase at position
// prompt_len - 1 + k, so position prompt_len + k attends over at most entry k + 1 tokens; a
// cache already below the entry keeps what it has (evicted tokens never come back).
TEST(Replay, BudgetScheduleCapsEachEvictPhase) {
  const traces::Trace trace = RandomTrace(TinyShape(), 10, 16, 2);
  PrefillAttention prefill(trace.layer(0), 10);
  const std::vector<int64_t> schedule = {5, 3, 3, 4, 2, 5};
  SpyPolicy spy;
  RecordingObserver observer;
  LayerReplayInput input = Input(trace, prefill, 5);
  input.budget_schedule = schedule;
  input.schedule_base = 5;
  ReplayLayer(input, spy, &observer);
  // Attend at 10..15 over entry + 1, except where the cache was already smaller: at 13 (4 kept
  // at 12, budget 4: 4 + 1) and 15 (2 kept at 13, budget 5 at 14: 2 + 1 + 1).
  EXPECT_EQ(observer.sizes, (std::vector<int64_t>{6, 4, 4, 5, 3, 4}));
  // The policy sees the entry in force; the last phase (15) keeps the last entry.
  EXPECT_EQ(spy.caps, (std::vector<int64_t>{5, 3, 3, 4, 2, 5, 5}));
}

// A layer that the plan gave b tokens keeps floor(b * entry / base), at least 1 (PyramidKV-style
// layer budgets shrink in proportion with the pool's share).
TEST(Replay, BudgetScheduleScalesAPlannedLayerBudget) {
  const traces::Trace trace = RandomTrace(TinyShape(), 10, 16, 2);
  PrefillAttention prefill(trace.layer(0), 10);
  const std::vector<int64_t> schedule = {4, 2, 3, 1, 4, 4};  // budgets 6, 3, 4, 1, 6, 6
  SpyPolicy spy;
  RecordingObserver observer;
  LayerReplayInput input = Input(trace, prefill, 6);
  input.budget_schedule = schedule;
  input.schedule_base = 4;
  ReplayLayer(input, spy, &observer);
  EXPECT_EQ(observer.sizes, (std::vector<int64_t>{7, 4, 5, 2, 3, 4}));
}

TEST(Replay, EvictBeforeAttendMeasuresSurvivorsOnly) {
  const traces::Trace trace = RandomTrace(TinyShape(), 10, 16, 2);
  PrefillAttention prefill(trace.layer(0), 10);
  SpyPolicy spy;
  RecordingObserver observer;
  ReplayOptions options;
  options.timing = EvictTiming::kBeforeAttend;
  ReplayLayer(Input(trace, prefill, 5, options), spy, &observer);
  EXPECT_EQ(observer.sizes, std::vector<int64_t>(6, 5));
}

TEST(Replay, PrefillRegimeCompressesOnceThenGrows) {
  const traces::Trace trace = RandomTrace(TinyShape(), 10, 14, 3);
  PrefillAttention prefill(trace.layer(0), 10);
  SpyPolicy spy;
  RecordingObserver observer;
  ReplayOptions options;
  options.regime = Regime::kPrefill;
  ReplayLayer(Input(trace, prefill, 4, options), spy, &observer);
  EXPECT_EQ(observer.sizes, (std::vector<int64_t>{5, 6, 7, 8}));
  EXPECT_EQ(std::count(spy.calls.begin(), spy.calls.end(), "select prefill"), 1);
  EXPECT_EQ(std::count_if(spy.calls.begin(), spy.calls.end(),
                          [](const std::string& c) { return c.starts_with("select 1"); }),
            0);
}

TEST(Replay, QueryHeadModeKeepsOneCopyPerQueryHeadAndCountsItsMemory) {
  const models::ModelShape shape = TinyShape();
  const traces::Trace trace = RandomTrace(shape, 10, 12, 4);
  PrefillAttention prefill(trace.layer(0), 10);
  SpyPolicy kv_spy, q_spy;
  ReplayOptions q_options;
  q_options.gqa_mode = GqaMode::kQueryHead;
  const LayerReplayResult kv = ReplayLayer(Input(trace, prefill, 5), kv_spy, nullptr);
  const LayerReplayResult q = ReplayLayer(Input(trace, prefill, 5, q_options), q_spy, nullptr);
  const int64_t kv_peak = kv.ledger.PeakBytes(0, MemoryLedger::Bit(MemoryCategory::kKvFull)).bytes;
  const int64_t q_peak = q.ledger.PeakBytes(0, MemoryLedger::Bit(MemoryCategory::kKvFull)).bytes;
  // 6 tokens (B + 1 at a step's high-water) x 2 KV heads x 2 * d * 2 bytes.
  EXPECT_EQ(kv_peak, 6 * 2 * shape.KvBytesPerTokenPerHead());
  EXPECT_EQ(q_peak, shape.GroupSize() * kv_peak);
}

TEST(Replay, LedgerSplitsPromptIntoKeptAndTransient) {
  const models::ModelShape shape = TinyShape();
  const traces::Trace trace = RandomTrace(shape, 10, 12, 5);
  PrefillAttention prefill(trace.layer(0), 10);
  SpyPolicy spy;
  const LayerReplayResult result = ReplayLayer(Input(trace, prefill, 4), spy, nullptr);
  const int64_t token_bytes = 2 * shape.KvBytesPerTokenPerHead();  // 2 KV heads
  const MemoryPeak total = result.ledger.PeakBytes(0, MemoryLedger::kAllCategories);
  EXPECT_EQ(total.bytes, 10 * token_bytes);  // the whole prompt during prefill
  EXPECT_EQ(total.step, 9);
  const MemoryPeak kv = result.ledger.PeakBytes(0, MemoryLedger::kKvCategories);
  EXPECT_EQ(kv.bytes, 5 * token_bytes);  // B + 1 during decode
  EXPECT_DOUBLE_EQ(result.ledger.MeanDecodeBytes(0, MemoryLedger::kKvCategories),
                   5.0 * static_cast<double>(token_bytes));
}

// A policy that returns fewer victims than required is a kvsim bug the engine catches.
class LazyPolicy : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "lazy"; }
  void SelectVictims(const EvictionRequest&, std::span<EvictionDecision>) override {}
};

TEST(Replay, RejectsPolicyThatLeavesCacheOverBudget) {
  const traces::Trace trace = RandomTrace(TinyShape(), 10, 12, 6);
  PrefillAttention prefill(trace.layer(0), 10);
  LazyPolicy lazy;
  EXPECT_THROW(ReplayLayer(Input(trace, prefill, 4), lazy, nullptr), InternalError);
}

class NeedsFuture : public policies::OraclePolicy {
 public:
  std::string_view Name() const override { return "needs-future"; }
  void AttachFuture(const policies::FutureView&) override {}
  void SelectVictims(const EvictionRequest&, std::span<EvictionDecision>) override {}
};

TEST(Replay, RefusesOracleWithoutFutureView) {
  const traces::Trace trace = RandomTrace(TinyShape(), 4, 6, 7);
  PrefillAttention prefill(trace.layer(0), 4);
  NeedsFuture oracle;
  EXPECT_THROW(ReplayLayer(Input(trace, prefill, 8), oracle, nullptr), InternalError);
}

TEST(QueryHistory, RefusesFutureRows) {
  const traces::Trace trace = RandomTrace(TinyShape(), 4, 6, 8);
  const policies::QueryHistory history(trace.layer(0).queries, 4);
  EXPECT_NO_THROW(history.Row(0, 4));
  EXPECT_THROW(history.Row(0, 5), InternalError);
  EXPECT_THROW(history.Rows(0, 0, 6), InternalError);
}

}  // namespace
}  // namespace kvsim::sim
