// `random`: evicts uniformly random resident tokens; the floor any informed policy should beat.
// Seeded per stream from (setup.seed, stream), so results do not depend on thread scheduling.
#include <memory>
#include <random>

#include "policies/registry.h"
#include "sim/replay.h"

namespace kvsim::policies {
namespace {

class RandomPolicy final : public EvictionPolicy {
 public:
  explicit RandomPolicy(const PolicySetup& setup) {
    for (int s = 0; s < setup.num_streams(); ++s) {
      rngs_.emplace_back(sim::MixSeed(setup.seed, static_cast<uint64_t>(s)));
    }
  }
  std::string_view Name() const override { return "random"; }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    for (const StreamView& stream : request.streams) {
      const int64_t count = request.min_victims[static_cast<size_t>(stream.stream)];
      if (count == 0) continue;
      // Partial Fisher-Yates over positions in increasing order (slot order is an artefact of
      // earlier removals), with our own index draw so results match across standard libraries.
      std::vector<int64_t> positions = stream.cache->SortedPositions();
      std::mt19937_64& rng = rngs_[static_cast<size_t>(stream.stream)];
      auto& victims = decisions[static_cast<size_t>(stream.stream)].victims;
      const auto n = static_cast<uint64_t>(positions.size());
      for (uint64_t i = 0; i < static_cast<uint64_t>(count); ++i) {
        const uint64_t j = i + rng() % (n - i);  // modulo bias < 2^-40 for caches below 2^24
        std::swap(positions[i], positions[j]);
        victims.push_back(positions[i]);
      }
    }
  }

 private:
  std::vector<std::mt19937_64> rngs_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeRandom(const PolicyParams& params, const PolicySetup& setup) {
  params.Validate();
  return std::make_unique<RandomPolicy>(setup);
}

}  // namespace kvsim::policies
