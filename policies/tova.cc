// `tova`: Token Omission Via Attention (Oren et al. 2024, card 3). Memoryless: keeps the tokens
// the CURRENT query attends to most, averaged over every query head of the layer, one selection
// per layer applied to every stream (granularity L; "do not implement it per head", card 3 (h)).
// After prefill the prompt is cut using the last prompt token's attention row only.
//
// Variant `keep_last=true` reproduces kvpress TOVAPress (kvpress/presses/tova_press.py): the
// newest resident token is never a victim (kvpress pads the last prompt token's score with the
// maximum + 1, "to make sure the window is not pruned"). kvpress compresses the prompt only; in
// the bounded regime kvsim applies the same rule at every decode step (the current token stays).
// Default false: official TOVA (schwartz-lab-NLP/TOVA), where the newest token competes too.
#include <algorithm>
#include <memory>

#include "common/error.h"
#include "policies/registry.h"
#include "policies/selection.h"

namespace kvsim::policies {
namespace {

class TovaPolicy final : public EvictionPolicy {
 public:
  TovaPolicy(const PolicySetup& setup, bool keep_last)
      : num_q_heads_(setup.shape.q_heads),
        keep_last_(keep_last),
        scores_(static_cast<size_t>(setup.total_len), 0.0f) {}

  std::string_view Name() const override { return "tova"; }

  void OnPrefill(const PrefillView& prefill) override {
    std::fill(scores_.begin(), scores_.end(), 0.0f);
    const float inv = 1.0f / static_cast<float>(num_q_heads_);
    for (int h = 0; h < num_q_heads_; ++h) {
      const RowMatrixXf row = prefill.attention->WindowAttention(h, 1);
      for (int64_t j = 0; j < prefill.end; ++j) scores_[j] += inv * row(0, j);
    }
  }

  void OnStep(const StepView& step) override {
    std::fill(scores_.begin(), scores_.end(), 0.0f);
    const float inv = 1.0f / static_cast<float>(num_q_heads_);
    for (const StreamView& stream : step.streams) {
      for (int64_t slot = 0; slot < stream.cache->size(); ++slot) {
        scores_[stream.cache->Position(slot)] += inv * stream.attention->col(slot).sum();
      }
    }
  }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    // Every stream holds the same positions (one selection per layer), so rank once.
    const StreamView& first = request.streams.front();
    const int64_t count = request.min_victims[0];
    std::vector<Candidate> candidates;
    candidates.reserve(static_cast<size_t>(first.cache->size()));
    int64_t newest = -1;
    for (const sim::CacheEntry& e : first.cache->entries()) newest = std::max(newest, e.position);
    for (const sim::CacheEntry& e : first.cache->entries()) {
      if (keep_last_ && e.position == newest) continue;
      candidates.push_back({scores_[static_cast<size_t>(e.position)], e.position});
    }
    std::vector<int64_t> victims;
    TakeLowest(candidates, count, &victims);
    for (const StreamView& stream : request.streams) {
      KVSIM_ASSERT(request.min_victims[static_cast<size_t>(stream.stream)] == count,
                   "tova streams diverged in layer {}", request.layer);
      decisions[static_cast<size_t>(stream.stream)].victims = victims;
    }
  }

  // One selection per layer: every stream ranks by the layer's scores.
  bool ResidentScores(int /*stream*/,
                      const sim::KvCache& cache,
                      std::vector<double>& scores) const override {
    scores.clear();
    for (const sim::CacheEntry& e : cache.entries()) {
      scores.push_back(static_cast<double>(scores_[static_cast<size_t>(e.position)]));
    }
    return true;
  }

 private:
  int num_q_heads_;
  bool keep_last_;
  std::vector<float> scores_;  // [position], this step's head-mean attention
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeTova(const PolicyParams& params, const PolicySetup& setup) {
  const bool keep_last = params.GetBool("keep_last", false);
  params.Validate();
  return std::make_unique<TovaPolicy>(setup, keep_last);
}

}  // namespace kvsim::policies
