// `lazy-eviction`: LazyEviction (arXiv 2506.15969, card 10), from the vendored official code
// (WeianMao/triattention LazyEviction/model/kv_utils.py `Window_LAZYKVCluster`,
// temp_cacheobs.py `TempCache.record_recurrence`).
//
// Recurrence tracking, every decode step t = 1, 2, ... (t = step - prompt_len + 1): a token is
// "attended" when its attention weight, cast to fp16, is >= alpha (fp16 too: PyTorch compares a
// half tensor with a Python float in half). Then MRI_j = max(MRI_j, t - last_j) and last_j = t.
// Prompt tokens start at last = 0, MRI = 0; a decode token at last = t - 1, MRI = 0, so
// attending to itself at once gives MRI = 1.
//
// Eviction, lazily: only at steps with t % W == 0 and more than C resident, keep the last
// min(W, C) positions plus the top of
//   score_j = 2 sigmoid(-(1 + (t - last_j) / (MRI_j + 1e-5))) + [MRI_j > 0] 2 sigmoid(1 - MRI_j)
// among the rest, down to exactly C. Between rounds the cache grows to C + W - 1 after an evict
// phase (BudgetSlackTokens() = W - 1) and attends over up to C + W tokens: the peak is C + W,
// not C (card 10 (h)).
//
// Where the card is silent (kvsim choices):
//  - GQA: in GqaMode::kKvHead the threshold is applied to the group mean of the stream's query
//    heads' weights (sim/README.md "mean unless a card says otherwise"); kQueryHead mode is the
//    official per-query-head tracking.
//  - The official code never compresses the prompt: a long prompt stays until the first round.
//    kvsim bounds every step by C + W - 1, so a prompt longer than C is cut to C right after
//    prefill (then the cache grows to C + W - 1 before the round at t = W, the same
//    oscillation). The card's score cannot rank the prompt there (every prompt token has
//    last = 0, MRI = 0: a tie, which would keep only the most recent C and drop the attention
//    sinks), so the cut keeps the last min(W, C) prompt tokens plus the top of the prompt's
//    accumulated attention (H2O's prefill score, group mean), the only importance signal before
//    the first decode step.
//  - Regime::kPrefill never evicts during decode (the engine issues no decode evict phase).
//  - Equal memory (issue 13), parameter `window_in_budget` (default false: the official C = B,
//    peak B + W): true counts the window inside the budget B, so that LazyEviction holds no more
//    than B after any evict phase, like every other policy: rounds every W' = min(W, B) steps
//    compress to C = B - W' + 1, which grows back to exactly B before the next round. With
//    B < W the rounds come every B steps and compress to one token.
#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "policies/registry.h"
#include "policies/selection.h"

namespace kvsim::policies {

namespace {

// The value of `x` rounded to the nearest IEEE binary16 number (ties to even), as float. For
// probabilities: REQUIRES 0 <= x < 65504.
float RoundToFloat16(float x) {
  if (x <= 0.0f) return x;
  int exponent = 0;
  std::frexp(static_cast<double>(x), &exponent);  // x = m 2^exponent, m in [0.5, 1)
  // 10 fraction bits below the leading bit; subnormals (below 2^-14) share the quantum 2^-24.
  const double quantum = std::ldexp(1.0, std::max(exponent - 11, -24));
  return static_cast<float>(std::nearbyint(static_cast<double>(x) / quantum) * quantum);
}

class LazyEvictionPolicy final : public EvictionPolicy {
 public:
  LazyEvictionPolicy(const PolicySetup& setup, int64_t window, double alpha, bool window_in_budget)
      : window_(window),
        window_in_budget_(window_in_budget),
        alpha_half_(RoundToFloat16(static_cast<float>(alpha))),
        prompt_len_(setup.prompt_len),
        last_(static_cast<size_t>(setup.num_streams()),
              std::vector<int32_t>(static_cast<size_t>(setup.total_len), 0)),
        mri_(last_) {}

  std::string_view Name() const override { return "lazy-eviction"; }
  int64_t BudgetSlackTokens() const override { return window_in_budget_ ? 0 : window_ - 1; }

  void OnPrefill(const PrefillView& prefill) override {
    resident_ = 0;
    for (const StreamView& stream : prefill.streams) resident_ += stream.cache->size();
  }

  void OnStep(const StepView& step) override {
    const int32_t t = StepCounter(step.step);
    resident_ = 0;
    for (const StreamView& stream : step.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      last_[s][static_cast<size_t>(step.step)] = t - 1;
      const Eigen::VectorXf mean = GroupMeanAttention(stream);
      for (int64_t slot = 0; slot < stream.cache->size(); ++slot) {
        if (RoundToFloat16(mean[slot]) < alpha_half_) continue;
        const auto pos = static_cast<size_t>(stream.cache->Position(slot));
        mri_[s][pos] = std::max(mri_[s][pos], t - last_[s][pos]);
        last_[s][pos] = t;
      }
      resident_ += stream.cache->size();
    }
  }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    const int32_t t = request.after_prefill ? 0 : StepCounter(request.step);
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const Rounds rounds = RoundsFor(request.budget_tokens[s]);
      // After prefill the cache goes down to C too, so that it can grow by W - 1 before the
      // first round at t = W without exceeding C + W - 1.
      const bool round = request.after_prefill || t % rounds.window == 0;
      const int64_t size = stream.cache->size();
      const int64_t count =
          round ? std::max<int64_t>(0, size - rounds.target) : request.min_victims[s];
      if (count == 0) continue;
      const int64_t protected_tokens = std::min<int64_t>(rounds.window, rounds.target);
      const std::vector<int64_t> positions = stream.cache->SortedPositions();
      const int64_t candidates_end = size - protected_tokens;
      const Eigen::VectorXf prompt_score =
          request.after_prefill ? PromptScore(*request.prefill, stream) : Eigen::VectorXf();
      std::vector<Candidate> candidates;
      candidates.reserve(static_cast<size_t>(candidates_end));
      for (int64_t i = 0; i < candidates_end; ++i) {
        const int64_t pos = positions[static_cast<size_t>(i)];
        const double score = request.after_prefill ? static_cast<double>(prompt_score[pos])
                                                   : Score(t, last_[s][static_cast<size_t>(pos)],
                                                           mri_[s][static_cast<size_t>(pos)]);
        candidates.push_back({score, pos});
      }
      TakeLowest(candidates, count, &decisions[s].victims);
    }
  }

  void OnEvicted(int /*stream*/, std::span<const int64_t> positions) override {
    resident_ -= static_cast<int64_t>(positions.size());
  }

  // last and MRI per resident token, two 32-bit counters (the official per-slot tensors).
  int64_t StateBytes() const override {
    return resident_ * 2 * static_cast<int64_t>(sizeof(int32_t));
  }

 private:
  // The round cadence W and the compress target C for a stream budget B.
  struct Rounds {
    int64_t window;
    int64_t target;
  };
  Rounds RoundsFor(int64_t budget) const {
    if (!window_in_budget_) return {window_, budget};
    const int64_t window = std::min(window_, budget);
    return {window, budget - window + 1};
  }

  int32_t StepCounter(int64_t step) const { return static_cast<int32_t>(step - prompt_len_ + 1); }

  // Group mean of the prompt's column sums (H2O's prefill score).
  static Eigen::VectorXf PromptScore(const sim::PrefillAttention& prefill,
                                     const StreamView& stream) {
    Eigen::VectorXf score = Eigen::VectorXf::Zero(prefill.prompt_len());
    for (int h = stream.first_q_head; h < stream.first_q_head + stream.num_q_heads; ++h) {
      score += prefill.ColumnSums(h);
    }
    return score / static_cast<float>(stream.num_q_heads);
  }

  static double Score(int32_t t, int32_t last, int32_t mri) {
    const auto sigmoid = [](double x) { return 1.0 / (1.0 + std::exp(-x)); };
    const double silence = static_cast<double>(t - last) / (static_cast<double>(mri) + 1e-5);
    double score = 2.0 * sigmoid(-(1.0 + silence));
    if (mri > 0) score += 2.0 * sigmoid(1.0 - static_cast<double>(mri));
    return score;
  }

  int64_t window_;
  bool window_in_budget_;
  float alpha_half_;
  int64_t prompt_len_;
  std::vector<std::vector<int32_t>> last_;  // [stream][position]: last attended step
  std::vector<std::vector<int32_t>> mri_;   // [stream][position]: maximum recurrence interval
  int64_t resident_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeLazyEviction(const PolicyParams& params,
                                                 const PolicySetup& setup) {
  // W = 128 (evaluation.py `decoding_recent_size`, also the observation window `obs_size` of
  // method window_lazy) and alpha = 1e-4 (argparse default), card 10 (f).
  const int64_t window = params.GetInt("window", 128, 1, 1 << 20);
  const double alpha = params.GetDouble("alpha", 1e-4, 0.0, 1.0);
  const bool window_in_budget = params.GetBool("window_in_budget", false);
  params.Validate();
  return std::make_unique<LazyEvictionPolicy>(setup, window, alpha, window_in_budget);
}

}  // namespace kvsim::policies
