// `snapkv`: SnapKV (Li et al. 2024, card 4); scoring in policies/snapkv_scoring.h.
#include <memory>

#include "policies/registry.h"
#include "policies/snapkv_scoring.h"

namespace kvsim::policies {
namespace {

class SnapKvPolicy final : public EvictionPolicy {
 public:
  SnapKvPolicy(const PolicySetup& setup, SnapKvOptions options) : scoring_(setup, options) {}
  std::string_view Name() const override { return "snapkv"; }
  void OnStep(const StepView& step) override { scoring_.OnStep(step); }
  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    scoring_.SelectVictims(request, decisions);
  }
  int64_t StateBytes() const override { return scoring_.StateBytes(); }

 private:
  SnapKvScoring scoring_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeSnapKv(const PolicyParams& params, const PolicySetup& setup) {
  // window 32, kernel 7, max pooling: the SnapKV paper's LongBench configurations
  // (experiments/LongBench/config/ablation_c*_w32_k7_maxpool.json, card 4 (f)).
  const SnapKvOptions options = ReadSnapKvOptions(params, 32, 7, true);
  params.Validate();
  return std::make_unique<SnapKvPolicy>(setup, options);
}

}  // namespace kvsim::policies
