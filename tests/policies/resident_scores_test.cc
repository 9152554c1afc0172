// EvictionPolicy::ResidentScores is the score the policy ranks victims by: a serving pool that
// divides memory by it (share = "global") must see the same ranking the policy applies.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "policies/policy_test_util.h"
#include "policies/registry.h"
#include "sim/prefill_attention.h"
#include "sim/random_trace.h"
#include "sim/replay.h"

namespace kvsim::policies {
namespace {

// Forwards every hook to `inner` and, at every evict phase, checks that no victim outscores a
// survivor by inner.ResidentScores (policies run without protected windows here).
class RankCheck final : public EvictionPolicy {
 public:
  explicit RankCheck(std::unique_ptr<EvictionPolicy> inner) : inner_(std::move(inner)) {}

  std::string_view Name() const override { return inner_->Name(); }
  std::vector<double> PrefillLayerStats(const PrefillView& prefill) override {
    return inner_->PrefillLayerStats(prefill);
  }
  bool UsesPrefillLayerStats() const override { return inner_->UsesPrefillLayerStats(); }
  int64_t LayerBudget(const BudgetPlanView& plan) override { return inner_->LayerBudget(plan); }
  void OnPrefill(const PrefillView& prefill) override {
    inner_->OnPrefill(prefill);
    prefill_ = prefill.attention;
  }
  void OnStep(const StepView& step) override { inner_->OnStep(step); }
  void OnEvicted(int stream, std::span<const int64_t> positions) override {
    inner_->OnEvicted(stream, positions);
  }
  bool ResidentScores(int stream,
                      const sim::KvCache& cache,
                      std::vector<double>& scores) const override {
    return inner_->ResidentScores(stream, cache, scores);
  }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    inner_->SelectVictims(request, decisions);
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      std::vector<double> scores;
      ASSERT_TRUE(inner_->ResidentScores(stream.stream, *stream.cache, scores));
      ASSERT_EQ(static_cast<int64_t>(scores.size()), stream.cache->size());
      if (request.after_prefill && inner_->Name() == "h2o") {
        // By hand: H2O's prompt score is the group mean of the column sums, in float.
        for (int64_t slot = 0; slot < stream.cache->size(); ++slot) {
          const int64_t j = stream.cache->Position(slot);
          float expected = 0.0f;
          const float inv = 1.0f / static_cast<float>(stream.num_q_heads);
          for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
            expected += inv * prefill_->ColumnSums(h)[j];
          }
          EXPECT_EQ(scores[static_cast<size_t>(slot)], static_cast<double>(expected));
        }
      }
      const std::vector<int64_t>& victims = decisions[s].victims;
      if (victims.empty()) continue;
      double worst_kept = std::numeric_limits<double>::infinity();
      double best_victim = -std::numeric_limits<double>::infinity();
      for (int64_t slot = 0; slot < stream.cache->size(); ++slot) {
        const double score = scores[static_cast<size_t>(slot)];
        const bool victim = std::find(victims.begin(), victims.end(),
                                      stream.cache->Position(slot)) != victims.end();
        if (victim) {
          best_victim = std::max(best_victim, score);
        } else {
          worst_kept = std::min(worst_kept, score);
        }
      }
      EXPECT_LE(best_victim, worst_kept) << "step " << request.step << " stream " << s;
      ++checked_phases;
    }
  }

  int64_t checked_phases = 0;

 private:
  std::unique_ptr<EvictionPolicy> inner_;
  const sim::PrefillAttention* prefill_ = nullptr;
};

int64_t ReplayChecked(const std::string& name, const PolicyParams& params) {
  const traces::Trace trace = sim::RandomTrace(testing::TinyShape(), 20, 44, 9);
  int64_t checked = 0;
  for (int l = 0; l < trace.num_layers(); ++l) {
    const sim::ReplayOptions options;
    RankCheck policy(MakePolicy(name, params, testing::SetupFor(trace, l, options)));
    const sim::PrefillAttention prefill(trace.layer(l), trace.meta().prompt_len);
    sim::LayerReplayInput input;
    input.trace = &trace;
    input.layer = l;
    input.options = options;
    input.budget_tokens = 8;
    input.prefill = &prefill;
    (void)sim::ReplayLayer(input, policy, nullptr);
    checked += policy.checked_phases;
  }
  return checked;
}

TEST(ResidentScores, H2OScoresRankItsVictims) {
  PolicyParams params;
  params.Set("recent_ratio", "0");
  // Prompt compression plus one eviction per decode step, per stream and layer.
  EXPECT_EQ(ReplayChecked("h2o", params), 2 * 2 * (1 + 24));
}

TEST(ResidentScores, TovaScoresRankItsVictims) {
  EXPECT_EQ(ReplayChecked("tova", {}), 2 * 2 * (1 + 24));
}

TEST(ResidentScores, PoliciesWithoutAScoreSayNo) {
  const traces::Trace trace = sim::RandomTrace(testing::TinyShape(), 8, 12, 1);
  const sim::KvCache cache(trace.shape().head_dim, trace.meta().total_len);
  std::vector<double> scores;
  for (const std::string name : {"streaming", "full", "random"}) {
    const auto policy = MakePolicy(name, {}, testing::SetupFor(trace, 0, {}));
    EXPECT_FALSE(policy->ResidentScores(0, cache, scores)) << name;
  }
}

}  // namespace
}  // namespace kvsim::policies
