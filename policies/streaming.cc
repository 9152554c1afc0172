// `streaming`: StreamingLLM (Xiao et al. 2023, card 1). Keeps the first `sinks` positions
// (attention sinks) plus the most recent budget - sinks; drops the oldest non-sink token first.
// Replaying post-RoPE keys gives the variant without position re-rotation (card 1 (h)).
#include <algorithm>
#include <memory>

#include "policies/registry.h"

namespace kvsim::policies {
namespace {

class StreamingPolicy final : public EvictionPolicy {
 public:
  explicit StreamingPolicy(int64_t sinks) : sinks_(sinks) {}
  std::string_view Name() const override { return "streaming"; }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    for (const StreamView& stream : request.streams) {
      const auto s = static_cast<size_t>(stream.stream);
      const int64_t count = request.min_victims[s];
      if (count == 0) continue;
      // With a budget below `sinks`, the sinks alone fill it (the first budget positions).
      const int64_t sinks = std::min(sinks_, request.budget_tokens[s]);
      const std::vector<int64_t> positions = stream.cache->SortedPositions();
      const int64_t first =
          std::min<int64_t>(sinks, static_cast<int64_t>(positions.size()) - count);
      for (int64_t i = first; i < first + count; ++i) {
        decisions[s].victims.push_back(positions[static_cast<size_t>(i)]);
      }
    }
  }

 private:
  int64_t sinks_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeStreaming(const PolicyParams& params,
                                              const PolicySetup& /*setup*/) {
  // S = 4: the StreamingLLM paper and code (run_streaming_llama.py, kv_cache.py) and kvpress.
  const int64_t sinks = params.GetInt("sinks", 4, 0, 1 << 20);
  params.Validate();
  return std::make_unique<StreamingPolicy>(sinks);
}

}  // namespace kvsim::policies
