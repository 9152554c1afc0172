// `laq-oracle` and `laqpp-oracle`: Lookahead Q-Cache (LAQ, arXiv 2505.20334, card 6) with w2 = 0
// and LAQ++ with a w2 = 8 local window; NOT deployable policies. LAQ observes the prompt through
// the queries of m pseudo tokens that a provisionally compressed model generates; a trace has no
// model, so these variants use the queries of the first m REAL decode steps instead (card 6 (h),
// option (i)): an upper bound on what LAQ's lookahead can achieve, read through FutureView. The
// two differ only in w2, so one class serves both registry names. Selection in
// policies/laq_scoring.h; the faithful, model-in-the-loop LAQ is policies/laq.cc.
#include <memory>
#include <string>

#include "policies/laq_scoring.h"
#include "policies/registry.h"

namespace kvsim::policies {
namespace {

class LaqOraclePolicy final : public OraclePolicy {
 public:
  LaqOraclePolicy(std::string name, const PolicySetup& setup, LaqOptions options)
      : name_(std::move(name)), scoring_(setup, options) {}
  std::string_view Name() const override { return name_; }
  void AttachFuture(const FutureView& future) override { scoring_.AttachFuture(future); }
  void OnStep(const StepView& step) override { scoring_.OnStep(step); }
  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    scoring_.SelectVictims(request, decisions);
  }
  int64_t StateBytes() const override { return scoring_.StateBytes(); }

 private:
  std::string name_;
  LaqOracleScoring scoring_;
};

}  // namespace

std::unique_ptr<EvictionPolicy> MakeLaqOracle(const PolicyParams& params,
                                              const PolicySetup& setup) {
  // LAQ proper: pseudo (here: real) queries only, no protected window (card 6 (b) step 5);
  // m = 8 lookahead queries, kernel 7, max pooling (run_LAQ.sh, card 6 (f)).
  const LaqOptions options = ReadLaqOptions(params, 0);
  params.Validate();
  return std::make_unique<LaqOraclePolicy>("laq-oracle", setup, options);
}

std::unique_ptr<EvictionPolicy> MakeLaqPlusPlusOracle(const PolicyParams& params,
                                                      const PolicySetup& setup) {
  // LAQ++: the last w2 = 8 prompt tokens are protected and their queries observe too
  // (stage2_window_size 8, the official run script's setting); otherwise as LAQ.
  const LaqOptions options = ReadLaqOptions(params, 8);
  params.Validate();
  return std::make_unique<LaqOraclePolicy>("laqpp-oracle", setup, options);
}

}  // namespace kvsim::policies
