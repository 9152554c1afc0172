// `full`: keeps every token; the reference every other policy is measured against.
#include <memory>

#include "policies/registry.h"

namespace kvsim::policies {
namespace {

class FullPolicy final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "full"; }
  int64_t LayerBudget(const BudgetPlanView& /*plan*/) override { return kUnlimitedTokens; }
  bool IgnoresBudget() const override { return true; }
  void SelectVictims(const EvictionRequest& /*request*/,
                     std::span<sim::EvictionDecision> /*decisions*/) override {}
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeFull(const PolicyParams& params, const PolicySetup& /*setup*/) {
  params.Validate();
  return std::make_unique<FullPolicy>();
}

}  // namespace kvsim::policies
