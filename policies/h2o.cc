// `h2o`: Heavy-Hitter Oracle (Zhang et al. 2023, card 2), the causal step-wise version of the
// real-drop code, not the lm-eval variant that ranks by column sums over future queries.
// Score = accumulated attention: prompt column sums, then every decode row adds its weights
// (raw sums, no normalisation, no decay). Keeps the `recent` most recent positions plus the
// highest scores among the rest. GQA: group mean of the per-query-head scores (card 2 (b):
// KVCache-Factory gqa_score_agg='mean', kvpress); in kQueryHead mode each head scores alone.
#include <cmath>
#include <memory>

#include "policies/registry.h"
#include "policies/selection.h"

namespace kvsim::policies {
namespace {

class H2OPolicy final : public EvictionPolicy {
 public:
  H2OPolicy(const PolicySetup& setup, double recent_ratio)
      : recent_ratio_(recent_ratio),
        scores_(static_cast<size_t>(setup.num_streams()),
                std::vector<float>(static_cast<size_t>(setup.total_len), 0.0f)) {}

  std::string_view Name() const override { return "h2o"; }

  void OnPrefill(const PrefillView& prefill) override {
    for (const StreamView& stream : prefill.streams) {
      std::vector<float>& score = scores_[static_cast<size_t>(stream.stream)];
      const float inv = 1.0f / static_cast<float>(stream.num_q_heads);
      for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
        const Eigen::VectorXf& sums = prefill.attention->ColumnSums(h);
        for (int64_t j = prefill.begin; j < prefill.end; ++j) score[j] += inv * sums[j];
      }
    }
    resident_ = ResidentTokens(prefill.streams);
  }

  void OnStep(const StepView& step) override {
    for (const StreamView& stream : step.streams) {
      std::vector<float>& score = scores_[static_cast<size_t>(stream.stream)];
      const Eigen::VectorXf mean = GroupMeanAttention(stream);
      for (int64_t slot = 0; slot < stream.cache->size(); ++slot) {
        score[stream.cache->Position(slot)] += mean[slot];
      }
    }
    resident_ = ResidentTokens(step.streams);
  }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const int64_t count = request.min_victims[s];
      if (count == 0) continue;
      // Recent window R = floor(budget * recent_ratio); heavy hitters fill the rest (card 2 (d)).
      const auto recent = static_cast<int64_t>(
          std::floor(static_cast<double>(request.budget_tokens[s]) * recent_ratio_));
      std::vector<int64_t> positions = stream.cache->SortedPositions();
      const int64_t candidates_end = static_cast<int64_t>(positions.size()) - recent;
      std::vector<Candidate> candidates;
      candidates.reserve(static_cast<size_t>(candidates_end));
      for (int64_t i = 0; i < candidates_end; ++i) {
        const int64_t pos = positions[static_cast<size_t>(i)];
        candidates.push_back({scores_[s][static_cast<size_t>(pos)], pos});
      }
      TakeLowest(candidates, count, &decisions[s].victims);
    }
  }

  bool ResidentScores(int stream,
                      const sim::KvCache& cache,
                      std::vector<double>& scores) const override {
    const std::vector<float>& score = scores_[static_cast<size_t>(stream)];
    scores.clear();
    for (const sim::CacheEntry& e : cache.entries()) {
      scores.push_back(static_cast<double>(score[static_cast<size_t>(e.position)]));
    }
    return true;
  }

  // One float score per resident token, as the official per-slot score vector.
  int64_t StateBytes() const override { return resident_ * static_cast<int64_t>(sizeof(float)); }

  void OnEvicted(int /*stream*/, std::span<const int64_t> positions) override {
    resident_ -= static_cast<int64_t>(positions.size());
  }

 private:
  static int64_t ResidentTokens(std::span<const StreamView> streams) {
    int64_t total = 0;
    for (const StreamView& stream : streams) total += stream.cache->size();
    return total;
  }

  double recent_ratio_;
  std::vector<std::vector<float>> scores_;  // [stream][position]
  int64_t resident_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeH2O(const PolicyParams& params, const PolicySetup& setup) {
  // 0.5: H2O's lm-eval and HELM scripts use heavy_ratio = recent_ratio = 0.1, a 1:1 split of the
  // budget between heavy hitters and the recent window (card 2 (f)).
  const double recent_ratio = params.GetDouble("recent_ratio", 0.5, 0.0, 1.0);
  params.Validate();
  return std::make_unique<H2OPolicy>(setup, recent_ratio);
}

}  // namespace kvsim::policies
