// `oracle`: NOT a deployable policy. At every evict phase it drops the resident tokens with the
// least FUTURE full-cache attention mass (summed over the stream's query heads and over every
// decode step still to be measured), read through FutureView. It is an upper bound for
// mass-recall at its budget: in the prefill regime it is exactly optimal (the prompt tokens kept
// are the ones with the most mass to come); in the bounded regime it is the greedy Belady-style
// bound. No real policy can know what it knows.
#include <memory>

#include "common/error.h"
#include "policies/registry.h"
#include "policies/selection.h"

namespace kvsim::policies {
namespace {

class OraclePolicyImpl final : public OraclePolicy {
 public:
  explicit OraclePolicyImpl(const PolicySetup& setup) : setup_(setup) {}

  std::string_view Name() const override { return "oracle"; }

  void AttachFuture(const FutureView& future) override {
    future_ = &future;
    remaining_.clear();
    for (int s = 0; s < setup_.num_streams(); ++s) {
      remaining_.push_back(
          future.FutureMass(setup_.FirstQueryHead(s), setup_.queries_per_stream()));
    }
    subtracted_through_ = setup_.prompt_len - 1;
  }

  // A step's mass leaves the future once the step is measured. Its full attention is guaranteed
  // only while its block is replayed, so it is read here, at the step's attend phase: after-attend
  // timing subtracts it at once (the evict phase follows the measure); before-attend timing holds
  // a copy until the next step, since the step's output is measured after its evict phase. Only
  // the bounded regime evicts at decode steps, so only it needs the subtraction.
  void OnStep(const StepView& step) override {
    if (setup_.options.regime != sim::Regime::kBounded) return;
    const bool hold = setup_.options.timing == sim::EvictTiming::kBeforeAttend;
    if (hold && !held_.empty()) SubtractHeld();
    held_.clear();
    for (int s = 0; s < setup_.num_streams(); ++s) {
      const int first = setup_.FirstQueryHead(s);
      for (int h = first; h < first + setup_.queries_per_stream(); ++h) {
        const std::span<const float> weights = future_->FullAttention(h, step.step);
        held_.emplace_back(weights.begin(), weights.end());
      }
    }
    if (!hold) SubtractHeld();
    subtracted_through_ = hold ? step.step - 1 : step.step;
  }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    KVSIM_ASSERT(future_ != nullptr, "oracle used without a FutureView");
    // Mass still to be measured: steps after this one, or from this one on when the step's
    // output is measured after eviction (EvictTiming::kBeforeAttend).
    const bool step_measured_later =
        !request.after_prefill && setup_.options.timing == sim::EvictTiming::kBeforeAttend;
    const int64_t last_past = request.after_prefill ? setup_.prompt_len - 1
                              : step_measured_later ? request.step - 1
                                                    : request.step;
    KVSIM_ASSERT(subtracted_through_ == last_past,
                 "oracle's future is at step {}, the request needs {}", subtracted_through_,
                 last_past);
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const int64_t count = request.min_victims[s];
      if (count == 0) continue;
      std::vector<Candidate> candidates;
      candidates.reserve(static_cast<size_t>(stream.cache->size()));
      for (const sim::CacheEntry& e : stream.cache->entries()) {
        candidates.push_back({remaining_[s][static_cast<size_t>(e.position)], e.position});
      }
      TakeLowest(candidates, count, &decisions[s].victims);
    }
  }

 private:
  // Subtracts the held weights (stream-major, then query head) from every stream's remaining mass,
  // in the order the future mass was accumulated.
  void SubtractHeld() {
    size_t next = 0;
    for (int s = 0; s < setup_.num_streams(); ++s) {
      std::vector<double>& mass = remaining_[static_cast<size_t>(s)];
      for (int i = 0; i < setup_.queries_per_stream(); ++i) {
        const std::vector<float>& weights = held_[next++];
        for (size_t j = 0; j < weights.size(); ++j) mass[j] -= weights[j];
      }
    }
    held_.clear();
  }

  PolicySetup setup_;
  const FutureView* future_ = nullptr;
  std::vector<std::vector<double>> remaining_;  // [stream][position]
  std::vector<std::vector<float>> held_;        // a measured step's weights, not yet subtracted
  int64_t subtracted_through_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeOracle(const PolicyParams& params, const PolicySetup& setup) {
  params.Validate();
  return std::make_unique<OraclePolicyImpl>(setup);
}

}  // namespace kvsim::policies
