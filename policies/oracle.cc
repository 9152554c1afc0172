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
    remaining_.assign(static_cast<size_t>(setup_.num_streams()),
                      std::vector<double>(static_cast<size_t>(setup_.total_len), 0.0));
    for (int64_t t = setup_.prompt_len; t < setup_.total_len; ++t) AddStep(t, 1.0);
    subtracted_through_ = setup_.prompt_len - 1;
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
    while (subtracted_through_ < last_past) AddStep(++subtracted_through_, -1.0);
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
  // Adds sign * (full attention of decode step t) to every stream's remaining mass.
  void AddStep(int64_t t, double sign) {
    for (int s = 0; s < setup_.num_streams(); ++s) {
      std::vector<double>& mass = remaining_[static_cast<size_t>(s)];
      const int first = setup_.FirstQueryHead(s);
      for (int h = first; h < first + setup_.queries_per_stream(); ++h) {
        const std::span<const float> weights = future_->FullAttention(h, t);
        for (size_t j = 0; j < weights.size(); ++j) mass[j] += sign * weights[j];
      }
    }
  }

  PolicySetup setup_;
  const FutureView* future_ = nullptr;
  std::vector<std::vector<double>> remaining_;  // [stream][position]
  int64_t subtracted_through_ = 0;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeOracle(const PolicyParams& params, const PolicySetup& setup) {
  params.Validate();
  return std::make_unique<OraclePolicyImpl>(setup);
}

}  // namespace kvsim::policies
