// The contract every registered policy keeps (policies/eviction_policy.h), checked by a wrapper
// that watches each hook: victims are resident and unique, at least min_victims of them, the
// cache never holds more than budget + slack (+1 while a step attends), and the same seed gives
// the same decisions. A TEST_P over the registry, so policies added later are covered.
#include <gtest/gtest.h>

#include <set>

#include "policy_test_util.h"

namespace kvsim::policies {
namespace {

using testing::BruteFuture;
using testing::SetupFor;
using testing::TinyShape;

// Forwards to `inner` and checks the contract; logs every decision for determinism checks.
class CheckingPolicy final : public OraclePolicy {
 public:
  explicit CheckingPolicy(std::unique_ptr<EvictionPolicy> inner) : inner_(std::move(inner)) {}
  std::string_view Name() const override { return inner_->Name(); }
  void AttachFuture(const FutureView& future) override {
    if (auto* oracle = dynamic_cast<OraclePolicy*>(inner_.get())) oracle->AttachFuture(future);
  }
  std::vector<double> PrefillLayerStats(const PrefillView& view) override {
    return inner_->PrefillLayerStats(view);
  }
  int64_t LayerBudget(const BudgetPlanView& plan) override {
    budget_ = inner_->LayerBudget(plan);
    return budget_;
  }
  int64_t BudgetSlackTokens() const override { return inner_->BudgetSlackTokens(); }
  void OnPrefill(const PrefillView& view) override { inner_->OnPrefill(view); }
  void OnStep(const StepView& view) override {
    for (const StreamView& s : view.streams) {
      if (budget_ < kUnlimitedTokens && regime_bounded_) {
        EXPECT_LE(s.cache->size(), budget_ + inner_->BudgetSlackTokens() + 1)
            << Name() << " step " << view.step;
      }
    }
    inner_->OnStep(view);
  }
  void SelectVictims(const EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    inner_->SelectVictims(request, decisions);
    for (const StreamView& s : request.streams) {
      const auto& victims = decisions[static_cast<size_t>(s.stream)].victims;
      std::set<int64_t> unique(victims.begin(), victims.end());
      EXPECT_EQ(unique.size(), victims.size()) << Name() << ": repeated victim";
      for (const int64_t v : victims) {
        EXPECT_TRUE(s.cache->Contains(v)) << Name() << ": victim " << v << " not resident";
      }
      EXPECT_GE(static_cast<int64_t>(victims.size()),
                request.min_victims[static_cast<size_t>(s.stream)]);
      log.push_back(victims);
    }
  }
  void OnEvicted(int stream, std::span<const int64_t> positions) override {
    inner_->OnEvicted(stream, positions);
  }
  int64_t StateBytes() const override { return inner_->StateBytes(); }

  bool regime_bounded_ = true;
  std::vector<std::vector<int64_t>> log;

 private:
  std::unique_ptr<EvictionPolicy> inner_;
  int64_t budget_ = 0;
};

struct ContractCase {
  sim::ReplayOptions options;
  int64_t budget = 0;
};

// Replays every layer with checking wrappers; returns the decision log.
std::vector<std::vector<int64_t>> RunChecked(const std::string& name,
                                             const traces::Trace& trace,
                                             const ContractCase& c) {
  const int layers = trace.num_layers();
  std::vector<std::unique_ptr<sim::PrefillAttention>> prefill;
  std::vector<const sim::PrefillAttention*> prefill_ptrs;
  std::vector<std::unique_ptr<CheckingPolicy>> instances;
  std::vector<EvictionPolicy*> ptrs;
  for (int l = 0; l < layers; ++l) {
    prefill.push_back(
        std::make_unique<sim::PrefillAttention>(trace.layer(l), trace.meta().prompt_len));
    prefill_ptrs.push_back(prefill.back().get());
    instances.push_back(std::make_unique<CheckingPolicy>(
        MakePolicy(name, PolicyParams(), SetupFor(trace, l, c.options))));
    instances.back()->regime_bounded_ = c.options.regime == sim::Regime::kBounded;
    ptrs.push_back(instances.back().get());
  }
  const std::vector<int64_t> budgets = sim::PlanLayerBudgets(trace, ptrs, prefill_ptrs, c.budget);
  std::vector<std::vector<int64_t>> log;
  for (int l = 0; l < layers; ++l) {
    BruteFuture future(trace, l);
    sim::LayerReplayInput input;
    input.trace = &trace;
    input.layer = l;
    input.options = c.options;
    input.budget_tokens = budgets[static_cast<size_t>(l)];
    input.prefill = prefill_ptrs[static_cast<size_t>(l)];
    input.future = &future;
    sim::ReplayLayer(input, *instances[static_cast<size_t>(l)], nullptr);
    log.insert(log.end(), instances[static_cast<size_t>(l)]->log.begin(),
               instances[static_cast<size_t>(l)]->log.end());
  }
  return log;
}

std::vector<ContractCase> Cases() {
  static constexpr sim::Regime kRegimes[] = {sim::Regime::kBounded, sim::Regime::kPrefill};
  static constexpr sim::GqaMode kModes[] = {sim::GqaMode::kKvHead, sim::GqaMode::kQueryHead};
  static constexpr sim::EvictTiming kTimings[] = {sim::EvictTiming::kAfterAttend,
                                                  sim::EvictTiming::kBeforeAttend};
  static constexpr int64_t kBudgets[] = {12, 36};
  std::vector<ContractCase> cases;
  for (const sim::Regime regime : kRegimes) {
    for (const sim::GqaMode gqa : kModes) {
      for (const sim::EvictTiming timing : kTimings) {
        for (const int64_t budget : kBudgets) {
          ContractCase c;
          c.options.regime = regime;
          c.options.gqa_mode = gqa;
          c.options.timing = timing;
          c.options.seed = 7;
          c.budget = budget;
          cases.push_back(c);
        }
      }
    }
  }
  return cases;
}

class PolicyContract : public ::testing::TestWithParam<std::string> {};

TEST_P(PolicyContract, KeepsBudgetEvictsOnlyResidentTokensAndIsDeterministic) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 48, 72, 11);
  const std::vector<ContractCase> cases = Cases();
  for (const ContractCase& c : cases) {
    const std::string label = std::string(sim::RegimeName(c.options.regime)) + " " +
                              sim::GqaModeName(c.options.gqa_mode) + " " +
                              sim::EvictTimingName(c.options.timing) + " budget " +
                              std::to_string(c.budget);
    SCOPED_TRACE(label);
    const auto first = RunChecked(GetParam(), trace, c);
    const auto second = RunChecked(GetParam(), trace, c);
    EXPECT_EQ(first, second) << "same seed, different decisions";
  }
}

TEST_P(PolicyContract, RejectsUnknownParameterNamingIt) {
  PolicyParams params;
  params.Set("no_such_knob", "3");
  try {
    CheckPolicy(GetParam(), params);
    FAIL() << "accepted an unknown parameter";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("no_such_knob=3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(GetParam()), std::string::npos) << e.what();
  }
}

INSTANTIATE_TEST_SUITE_P(AllRegistered,
                         PolicyContract,
                         ::testing::ValuesIn(PolicyNames()),
                         [](const ::testing::TestParamInfo<std::string>& param_info) {
                           std::string name = param_info.param;
                           for (char& ch : name) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return name;
                         });

TEST(Registry, UnknownPolicyListsKnownNames) {
  try {
    FindPolicy("nope");
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("unknown policy 'nope'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("h2o"), std::string::npos);
  }
}

}  // namespace
}  // namespace kvsim::policies
