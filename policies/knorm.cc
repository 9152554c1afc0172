// `knorm`: key L2 norm (Devoto et al. 2024, card 11). Low key norm = important: the resident
// keys with the largest L2 norm go first. No queries, nothing protected (kvpress KnormPress);
// unlike KVCache-Factory no layers are skipped, so budgets stay comparable. Scores rewritten
// entries by their current key.
#include <memory>

#include "policies/registry.h"
#include "policies/selection.h"

namespace kvsim::policies {
namespace {

class KNormPolicy final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "knorm"; }
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
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeKNorm(const PolicyParams& params,
                                          const PolicySetup& /*setup*/) {
  params.Validate();
  return std::make_unique<KNormPolicy>();
}

}  // namespace kvsim::policies
