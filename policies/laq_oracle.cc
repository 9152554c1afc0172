// `laq-oracle`: Lookahead Q-Cache (LAQ, arXiv 2505.20334, card 6) with w2 = 0, NOT a deployable
// policy. LAQ observes the prompt through the queries of m pseudo tokens that a provisionally
// compressed model generates; a trace has no model, so this variant uses the queries of the first
// m REAL decode steps instead (card 6 (h), option (i)): an upper bound on what LAQ's lookahead
// can achieve, read through FutureView. Selection in policies/laq_scoring.h.
#include <memory>

#include "policies/laq_scoring.h"
#include "policies/registry.h"

namespace kvsim::policies {
namespace {

class LaqOraclePolicy final : public OraclePolicy {
 public:
  LaqOraclePolicy(const PolicySetup& setup, LaqOptions options) : scoring_(setup, options) {}
  std::string_view Name() const override { return "laq-oracle"; }
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

std::unique_ptr<EvictionPolicy> MakeLaqOracle(const PolicyParams& params,
                                              const PolicySetup& setup) {
  // LAQ proper: pseudo (here: real) queries only, no protected window (card 6 (b) step 5);
  // m = 8 lookahead queries, kernel 7, max pooling (run_LAQ.sh, card 6 (f)).
  const LaqOptions options = ReadLaqOptions(params, 0);
  params.Validate();
  return std::make_unique<LaqOraclePolicy>(setup, options);
}

}  // namespace kvsim::policies
