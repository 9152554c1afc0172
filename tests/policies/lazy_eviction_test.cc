// LazyEviction (arXiv 2506.15969, card 10): recurrence tracking, the MRI-centric score, the lazy
// schedule (eviction only at t % W == 0), the C + W memory peak and the absolute fp16 alpha.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "policies/registry.h"
#include "sim/random_trace.h"
#include "sim/replay.h"

namespace kvsim::policies {
namespace {

// Drives one stream of a LazyEviction instance by hand: the test chooses every attention weight.
class Harness {
 public:
  Harness(int64_t prompt_len, int64_t total_len, int64_t budget, PolicyParams params)
      : cache_(2, total_len), queries_(1, total_len, 2), zeros_(2, 0.0f) {
    setup_.shape = {.name = "one-head", .layers = 1, .q_heads = 1, .kv_heads = 1, .head_dim = 2};
    setup_.prompt_len = prompt_len;
    setup_.total_len = total_len;
    policy_ = MakePolicy("lazy-eviction", params, setup_);
    cache_.set_budget_tokens(budget);
    cache_.set_slack_tokens(policy_->BudgetSlackTokens());
    stream_[0].cache = &cache_;
    for (int64_t p = 0; p < prompt_len; ++p) cache_.Append(p, zeros_.data(), zeros_.data());
    const PrefillView prefill{.layer = 0,
                              .begin = 0,
                              .end = prompt_len,
                              .prompt_len = prompt_len,
                              .streams = stream_,
                              .attention = nullptr,
                              .queries = QueryHistory(queries_, prompt_len - 1)};
    policy_->OnPrefill(prefill);
    Evict(prompt_len - 1, true);
  }

  const EvictionPolicy& policy() const { return *policy_; }
  const sim::KvCache& cache() const { return cache_; }

  // Decode step `step`: appends it, attends with `weights` (position -> weight, others 0), then
  // runs the evict phase. Returns the victims, sorted.
  std::vector<int64_t> Step(int64_t step, const std::map<int64_t, float>& weights) {
    cache_.Append(step, zeros_.data(), zeros_.data());
    attention_ = RowMatrixXf::Zero(1, cache_.size());
    for (const auto& [pos, w] : weights) attention_(0, cache_.SlotOf(pos)) = w;
    stream_[0].attention = &attention_;
    policy_->OnStep(StepView{.layer = 0,
                             .step = step,
                             .prompt_len = setup_.prompt_len,
                             .streams = stream_,
                             .queries = QueryHistory(queries_, step)});
    return Evict(step, false);
  }

 private:
  std::vector<int64_t> Evict(int64_t step, bool after_prefill) {
    const int64_t budget[] = {cache_.budget_tokens()};
    const int64_t min_victims[] = {
        std::max<int64_t>(0, cache_.size() - cache_.budget_tokens() - cache_.slack_tokens())};
    std::vector<sim::EvictionDecision> decisions(1);
    policy_->SelectVictims(EvictionRequest{.layer = 0,
                                           .step = step,
                                           .after_prefill = after_prefill,
                                           .streams = stream_,
                                           .budget_tokens = budget,
                                           .min_victims = min_victims,
                                           .queries = QueryHistory(queries_, step)},
                           decisions);
    std::vector<int64_t> victims = decisions[0].victims;
    cache_.Apply(decisions[0]);
    if (!victims.empty()) policy_->OnEvicted(0, victims);
    std::sort(victims.begin(), victims.end());
    return victims;
  }

  PolicySetup setup_;
  sim::KvCache cache_;
  HeadTensor queries_;
  std::vector<float> zeros_;
  std::unique_ptr<EvictionPolicy> policy_;
  StreamView stream_[1];
  RowMatrixXf attention_;
};

PolicyParams Params(std::map<std::string, std::string, std::less<>> values) {
  return PolicyParams(std::move(values));
}

using Positions = std::vector<int64_t>;

// Hand computation, C = 4, W = 2, alpha = 0.1; prompt 0..3 (last = 0, MRI = 0), decode step t
// is position t + 3. score = 2 sig(-(1 + (t - last) / (MRI + 1e-5))) + [MRI > 0] 2 sig(1 - MRI).
//  t=1 (pos 4): attended 0, 4 -> pos0 MRI 1 last 1; pos4 (last 0) MRI 1 last 1. 5 <= C+W-1.
//  t=2 (pos 5): attended 1, 5 -> pos1 MRI 2 last 2; pos5 (last 1) MRI 1 last 2. Round, 6 > C:
//    keep {4, 5} + top 2 of: pos0 2sig(-2)+1 = 1.238, pos1 2sig(-1)+2sig(-1) = 1.076,
//    pos2 = pos3 ~ 0 -> evict {2, 3}.
//  t=3 (pos 6): attended 4, 6 -> pos4 MRI max(1, 3-1) = 2 last 3; pos6 MRI 1 last 3. No round.
//  t=4 (pos 7): attended 1, 7 -> pos1 MRI max(2, 4-2) = 2 last 4; pos7 MRI 1 last 4. Round:
//    keep {6, 7} + top 2 of: pos0 (last 1, MRI 1) 2sig(-4)+1 = 1.036; pos1 (4, 2) 2sig(-1)+
//    2sig(-1) = 1.076; pos4 (3, 2) 2sig(-1.5)+2sig(-1) = 0.903; pos5 (2, 1) 2sig(-3)+1 = 1.095
//    -> keep 5 and 1, evict {0, 4}: pos4, attended one step ago, goes because its MRI is 2.
TEST(LazyEviction, MatchesHandComputedRetainedSet) {
  Harness h(4, 12, 4, Params({{"window", "2"}, {"alpha", "0.1"}}));
  EXPECT_EQ(h.policy().BudgetSlackTokens(), 1);
  EXPECT_EQ(h.Step(4, {{0, 0.5f}, {4, 0.5f}}), Positions{});
  EXPECT_EQ(h.Step(5, {{1, 0.5f}, {5, 0.5f}}), (Positions{2, 3}));
  EXPECT_EQ(h.Step(6, {{4, 0.4f}, {6, 0.6f}}), Positions{});
  EXPECT_EQ(h.Step(7, {{1, 0.3f}, {7, 0.7f}}), (Positions{0, 4}));
  EXPECT_EQ(h.cache().SortedPositions(), (Positions{1, 5, 6, 7}));
}

// alpha = 1e-4 is compared in fp16: 9.999e-5 rounds to the fp16 value of 1e-4 (1.00017e-4) and
// counts as attended, 9.998e-5 rounds one fp16 step lower and does not. C = 4, W = 1 (a round
// every step, the last position protected); prompt 0..3. At t = 1 pos0 (fp16-attended) and pos3
// score 2sig(-1) + 1, pos1 and pos2 ~0 -> one victim, the older of the tie: 1. In fp32 pos0
// would tie with 1 and 2 and go first, as the oldest.
TEST(LazyEviction, AlphaThresholdIsTestedInFloat16) {
  Harness h(4, 8, 4, Params({{"window", "1"}}));
  EXPECT_EQ(h.Step(4, {{0, 9.999e-5f}, {1, 9.998e-5f}, {3, 0.5f}, {4, 0.4998f}}), Positions{1});
}

// alpha is absolute, so whether a uniformly attended token counts depends on the cache length
// (card 10 (h)). Every prompt token but the last gets 1/(n+1); C = n, W = 1, so one victim at
// t = 1: with 1/(n+1) >= alpha the unattended last prompt token goes; below alpha nothing is
// tracked, every candidate ties and the oldest (0) goes.
TEST(LazyEviction, AlphaIsAnAbsoluteWeight) {
  for (const int64_t n : {4999, 11999}) {
    Harness h(n, n + 2, n, Params({{"window", "1"}}));
    std::map<int64_t, float> weights;
    const float uniform = 1.0f / static_cast<float>(n + 1);
    for (int64_t p = 0; p < n - 1; ++p) weights[p] = uniform;
    weights[n] = 2.0f * uniform;
    const int64_t expected = 1.0f / static_cast<float>(n + 1) >= 1e-4f ? n - 1 : 0;
    EXPECT_EQ(h.Step(n, weights), Positions{expected}) << "n = " << n;
  }
}

class SizeObserver : public sim::ReplayObserver {
 public:
  void OnMeasure(const sim::MeasureView& view) override {
    sizes.push_back(view.streams[0].cache->size());
  }
  std::vector<int64_t> sizes;
};

// Replay: the prompt is cut to C after prefill, then the cache grows by one per step and is cut
// back to C only at t % W == 0; steps attend over C + ((t - 1) % W) + 1 tokens, peaking at C + W
// (measured before eviction with evict-after-attend), and the ledger's kv_full peak is C + W
// tokens per stream.
TEST(LazyEviction, EvictsOnlyEveryWStepsAndPeaksAtBudgetPlusWindow) {
  const models::ModelShape shape = {
      .name = "tiny", .layers = 1, .q_heads = 4, .kv_heads = 2, .head_dim = 8};
  constexpr int64_t kPrompt = 20, kTotal = 56, kBudget = 8, kWindow = 4;
  const traces::Trace trace = sim::RandomTrace(shape, kPrompt, kTotal, 3);
  sim::PrefillAttention prefill(trace.layer(0), kPrompt);
  PolicySetup setup;
  setup.shape = shape;
  setup.prompt_len = kPrompt;
  setup.total_len = kTotal;
  auto policy = MakePolicy("lazy-eviction", Params({{"window", "4"}}), setup);
  sim::LayerReplayInput input;
  input.trace = &trace;
  input.budget_tokens = kBudget;
  input.prefill = &prefill;
  SizeObserver observer;
  const sim::LayerReplayResult result = sim::ReplayLayer(input, *policy, &observer);
  ASSERT_EQ(observer.sizes.size(), static_cast<size_t>(kTotal - kPrompt));
  for (size_t i = 0; i < observer.sizes.size(); ++i) {
    const auto t = static_cast<int64_t>(i) + 1;
    EXPECT_EQ(observer.sizes[i], kBudget + (t - 1) % kWindow + 1) << "t = " << t;
  }
  EXPECT_EQ(result.resident_tokens_peak, kBudget + kWindow);
  const sim::MemoryPeak peak =
      result.ledger.PeakBytes(0, sim::MemoryLedger::Bit(sim::MemoryCategory::kKvFull));
  EXPECT_EQ(peak.bytes, (kBudget + kWindow) * shape.kv_heads * shape.KvBytesPerTokenPerHead());
}

// window_in_budget=true (equal memory): rounds every W' = min(W, B) steps compress to
// C = B - W' + 1, so the cache is back to exactly B before each round and attends over at most
// B + 1 tokens (as every other policy with budget B); the ledger's peak is B + 1 per stream.
TEST(LazyEviction, WindowInBudgetHoldsTheCacheToTheBudget) {
  const models::ModelShape shape = {
      .name = "tiny", .layers = 1, .q_heads = 4, .kv_heads = 2, .head_dim = 8};
  constexpr int64_t kPrompt = 20, kTotal = 56;
  const traces::Trace trace = sim::RandomTrace(shape, kPrompt, kTotal, 3);
  sim::PrefillAttention prefill(trace.layer(0), kPrompt);
  PolicySetup setup;
  setup.shape = shape;
  setup.prompt_len = kPrompt;
  setup.total_len = kTotal;
  // (B, W) -> (W', C): (8, 4) -> (4, 5); (3, 4) -> (3, 1).
  for (const auto& [budget, window, cadence, target] :
       std::vector<std::array<int64_t, 4>>{{8, 4, 4, 5}, {3, 4, 3, 1}}) {
    auto policy = MakePolicy(
        "lazy-eviction", Params({{"window", std::to_string(window)}, {"window_in_budget", "true"}}),
        setup);
    EXPECT_EQ(policy->BudgetSlackTokens(), 0);
    sim::LayerReplayInput input;
    input.trace = &trace;
    input.budget_tokens = budget;
    input.prefill = &prefill;
    SizeObserver observer;
    const sim::LayerReplayResult result = sim::ReplayLayer(input, *policy, &observer);
    ASSERT_EQ(observer.sizes.size(), static_cast<size_t>(kTotal - kPrompt));
    for (size_t i = 0; i < observer.sizes.size(); ++i) {
      const auto t = static_cast<int64_t>(i) + 1;
      EXPECT_EQ(observer.sizes[i], target + (t - 1) % cadence + 1) << "B " << budget << " t " << t;
    }
    EXPECT_EQ(result.resident_tokens_peak, budget + 1) << budget;
  }
}

TEST(LazyEviction, RejectsBadParameters) {
  PolicySetup setup;
  setup.shape = models::ShapePreset("stories260k");
  setup.prompt_len = 8;
  setup.total_len = 16;
  EXPECT_THROW(MakePolicy("lazy-eviction", Params({{"window", "0"}}), setup), InputError);
  EXPECT_THROW(MakePolicy("lazy-eviction", Params({{"alpha", "-1"}}), setup), InputError);
  EXPECT_THROW(MakePolicy("lazy-eviction", Params({{"lag", "3"}}), setup), InputError);
}

}  // namespace
}  // namespace kvsim::policies
