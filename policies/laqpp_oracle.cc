// `laqpp-oracle`: LAQ++ (arXiv 2505.20334, card 6): LAQ plus a w2 = 8 local window, NOT a
// deployable policy. LAQ observes the prompt through the queries of m pseudo tokens that a
// provisionally compressed model generates; a trace has no model, so this variant uses the queries
// of the first m REAL decode steps instead (card 6 (h), option (i)): an upper bound on what LAQ++'s
// lookahead can achieve, read through FutureView. The official run script's setting. Selection
// in policies/laq_scoring.h.
#include <memory>

#include "policies/laq_scoring.h"
#include "policies/registry.h"

namespace kvsim::policies {
namespace {

class LaqPlusPlusOraclePolicy final : public OraclePolicy {
 public:
  LaqPlusPlusOraclePolicy(const PolicySetup& setup, LaqOptions options)
      : scoring_(setup, options) {}
  std::string_view Name() const override { return "laqpp-oracle"; }
  void AttachFuture(const FutureView& future) override { scoring_.AttachFuture(future); }
  void OnStep(const StepView& step) override { scoring_.OnStep(step); }
  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    scoring_.SelectVictims(request, decisions);
  }
  int64_t StateBytes() const override { return scoring_.StateBytes(); }

 private:
  LaqOracleScoring scoring_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeLaqPlusPlusOracle(const PolicyParams& params,
                                                      const PolicySetup& setup) {
  // LAQ++: the last w2 = 8 prompt tokens are protected and their queries observe too
  // (stage2_window_size 8); m = 8 lookahead queries, kernel 7, max pooling (run_LAQ.sh, card 6
  // (f)).
  const LaqOptions options = ReadLaqOptions(params, 8);
  params.Validate();
  return std::make_unique<LaqPlusPlusOraclePolicy>(setup, options);
}

}  // namespace kvsim::policies
