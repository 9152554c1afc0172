// `gate`: Attention-Gate (Zeng et al. 2024, memory-and-paging.md card 5) replayed from recorded
// per-token keep (1) / evict (0) flags, the optional trace dataset /gate_flags [L, Hkv, T] captured
// from a run of the gated model (card 5 (h): the gate is a trained function of that model's hidden
// states, so flags are replayed, not recomputed). No token budget: the kept fraction is whatever
// the gate decided (card 5 (e)), so LayerBudget is unlimited.
//
// Timing: the gate runs in the forward pass that processes a token, and the token's own K/V is used
// at that step; a flagged prompt token leaves at the evict phase after prefill, a flagged decode
// token at the first evict phase after its own query attended: its own step's phase with
// EvictTiming::kAfterAttend, the next step's with kBeforeAttend (so no query ever sees an empty
// cache). GQA: flags are per KV head (the format's choice); in GqaMode::kQueryHead every query head
// of a group replays its KV head's flags.
#include <algorithm>
#include <memory>

#include "common/error.h"
#include "policies/registry.h"

namespace kvsim::policies {
namespace {

class GateFlagsPolicy final : public EvictionPolicy {
 public:
  explicit GateFlagsPolicy(const PolicySetup& setup)
      : keep_own_step_(setup.options.timing == sim::EvictTiming::kBeforeAttend) {}

  std::string_view Name() const override { return "gate"; }
  int64_t LayerBudget(const BudgetPlanView& /*plan*/) override { return kUnlimitedTokens; }
  bool IgnoresBudget() const override { return true; }

  void OnPrefill(const PrefillView& prefill) override {
    if (prefill.gate_flags.empty()) {
      ThrowInputError(
          "policy 'gate': the trace has no dataset '/gate_flags' "
          "(expected [layers, kv_heads, T] "
          "uint8 keep/evict flags, traces/FORMAT.md; `kvsim closed-loop` reads them with "
          "--gate-flags TRACE)");
    }
    flags_ = prefill.gate_flags;
  }

  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    for (const StreamView& stream : request.streams) {
      const std::span<const uint8_t> flags = flags_[static_cast<size_t>(stream.kv_head)];
      std::vector<int64_t>& victims = decisions[static_cast<size_t>(stream.stream)].victims;
      for (const CacheEntry& entry : stream.cache->entries()) {
        const bool own_step =
            keep_own_step_ && !request.after_prefill && entry.position == request.step;
        if (!own_step && flags[static_cast<size_t>(entry.position)] == 0) {
          victims.push_back(entry.position);
        }
      }
      std::sort(victims.begin(), victims.end());
    }
  }

 private:
  using CacheEntry = sim::CacheEntry;
  bool keep_own_step_;  // evict-before-attend: token t has not attended yet at step t's phase
  std::span<const std::span<const uint8_t>> flags_;  // per KV head; valid during the replay
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeGateFlags(const PolicyParams& params,
                                              const PolicySetup& setup) {
  params.Validate();
  return std::make_unique<GateFlagsPolicy>(setup);
}

}  // namespace kvsim::policies
