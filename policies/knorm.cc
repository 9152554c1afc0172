// `knorm`: key L2 norm (Devoto et al. 2024, card 11). Low key norm = important: the resident
// keys with the largest L2 norm go first. No queries, nothing protected (kvpress KnormPress).
// Scores rewritten entries by their current key.
//
// Variant `skip_first_layers=N`: layers 0..N-1 keep their whole cache, as KVCache-Factory's
// L2NormCluster does with its default skip_layers = [0, 1] (pyramidkv/pyramidkv_utils.py,
// init_l2norm), i.e. N = 2 there. Default 0 (kvpress), so every layer holds the same budget and
// budgets stay comparable across policies; with N > 0 the skipped layers' memory shows in the
// results' resident and kv_bytes columns.
#include <memory>

#include "policies/registry.h"
#include "policies/selection.h"

namespace kvsim::policies {
namespace {

class KNormPolicy final : public EvictionPolicy {
 public:
  explicit KNormPolicy(bool skipped) : skipped_(skipped) {}
  std::string_view Name() const override { return "knorm"; }
  int64_t LayerBudget(const BudgetPlanView& plan) override {
    return skipped_ ? kUnlimitedTokens : plan.uniform_budget_tokens;
  }
  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const int64_t count = request.min_victims[s];
      if (count == 0) continue;
      const Eigen::VectorXf norms = stream.cache->Keys().rowwise().norm();
      std::vector<Candidate> candidates;
      candidates.reserve(static_cast<size_t>(stream.cache->size()));
      for (int64_t slot = 0; slot < stream.cache->size(); ++slot) {
        candidates.push_back({-static_cast<double>(norms[slot]), stream.cache->Position(slot)});
      }
      TakeLowest(candidates, count, &decisions[s].victims);
    }
  }

 private:
  bool skipped_;  // this layer is one of the first skip_first_layers
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeKNorm(const PolicyParams& params, const PolicySetup& setup) {
  const int64_t skip = params.GetInt("skip_first_layers", 0, 0, 4096);
  params.Validate();
  return std::make_unique<KNormPolicy>(setup.layer < skip);
}

}  // namespace kvsim::policies
