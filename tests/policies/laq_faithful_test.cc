#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/error.h"
#include "models/model_loader.h"
#include "policies/laq.h"
#include "policies/registry.h"
#include "sim/closed_loop.h"

namespace kvsim::policies {
namespace {

const models::LoadedModel& Stories() {
  static const models::LoadedModel loaded = models::LoadModel(models::BundledModelPath());
  return loaded;
}

std::vector<int32_t> Prompt() {
  return Stories().RequireTokenizer().Encode(
      "Once upon a time there was a little girl named Lily who loved to play outside in the park",
      true, false);
}

sim::ClosedLoopResult RunPolicy(std::string_view policy,
                                int64_t budget,
                                int64_t new_tokens = 32,
                                sim::Regime regime = sim::Regime::kBounded) {
  sim::ClosedLoopOptions o;
  o.new_tokens = new_tokens;
  o.budget_tokens = budget;
  o.replay.regime = regime;
  return sim::RunClosedLoop(Stories().model, Prompt(), o,
                            ClosedLoopPolicyFactory(policy, PolicyParams{}));
}

sim::ModelContext Context(const sim::ClosedLoopResult& r, int64_t budget) {
  sim::ModelContext c{.model = &Stories().model,
                      .prompt_state = &r.prompt_state,
                      .prompt_queries = {},
                      .prompt_len = r.prompt_len,
                      .first_token = r.full_tokens[static_cast<size_t>(r.prompt_len)],
                      .budget_tokens = budget,
                      .eos_token = -1};
  for (int l = 0; l < r.full_trace.num_layers(); ++l) {
    c.prompt_queries.push_back(&r.full_trace.layer(l).queries);
  }
  return c;
}

// With a stage-1 budget covering the prompt nothing is dropped, so the pseudo decode IS the full
// run's greedy decode: its queries are the trace's first m decode queries, bit for bit.
TEST(LaqFaithful, LookaheadWithFullBudgetIsTheRealDecode) {
  const sim::ClosedLoopResult r = RunPolicy("full", 1000, 8);
  const int64_t before = r.prompt_state.total_entries();
  const LaqLookahead la = GenerateLaqLookahead(Context(r, 1000), LaqOptions{});
  EXPECT_EQ(r.prompt_state.total_entries(), before);
  ASSERT_EQ(la.count(), 8);
  const int64_t n = r.prompt_len;
  for (int64_t i = 0; i < 8; ++i) {
    EXPECT_EQ(la.tokens[static_cast<size_t>(i)], r.full_tokens[static_cast<size_t>(n + i)]);
  }
  for (int l = 0; l < r.full_trace.num_layers(); ++l) {
    const HeadTensor& q = r.full_trace.layer(l).queries;
    for (int h = 0; h < q.heads(); ++h) {
      for (int64_t i = 0; i < 8; ++i) {
        for (int d = 0; d < q.dim(); ++d) {
          ASSERT_EQ(la.queries[static_cast<size_t>(l)].Row(h, i)[d], q.Row(h, n + i)[d]);
        }
      }
    }
  }
}

// A tight stage-1 budget changes the pseudo queries (the copy was really compressed) and leaves
// the caller's prompt cache untouched.
TEST(LaqFaithful, TightStageOneBudgetChangesPseudoQueries) {
  const sim::ClosedLoopResult r = RunPolicy("full", 1000, 8);
  const int64_t before = r.prompt_state.total_entries();
  const LaqLookahead la = GenerateLaqLookahead(Context(r, 4), LaqOptions{});
  EXPECT_EQ(r.prompt_state.total_entries(), before);
  ASSERT_EQ(la.count(), 8);
  const int64_t n = r.prompt_len;
  // Position n is the query of y0 itself; layer 0's query does not depend on the cache, later
  // layers' do.
  const HeadTensor& q = r.full_trace.layer(4).queries;
  double diff = 0.0;
  for (int d = 0; d < q.dim(); ++d)
    diff += std::abs(la.queries[4].Row(0, 1)[d] - q.Row(0, n + 1)[d]);
  EXPECT_GT(diff, 1e-4);
  for (int d = 0; d < q.dim(); ++d) {
    EXPECT_EQ(la.queries[0].Row(0, 0)[d], r.full_trace.layer(0).queries.Row(0, n)[d]);
  }
}

TEST(LaqFaithful, CompressesThePromptToTheBudgetOnceInPrefillRegime) {
  const sim::ClosedLoopResult r = RunPolicy("laq", 8, 16, sim::Regime::kPrefill);
  for (size_t k = 0; k < r.steps.size(); ++k) {
    EXPECT_DOUBLE_EQ(r.steps[k].resident_mean, static_cast<double>(8 + k + 1));
  }
  EXPECT_GT(r.kl_mean, 0.0);
  const sim::ClosedLoopResult pp = RunPolicy("laqpp", 8, 16, sim::Regime::kPrefill);
  EXPECT_DOUBLE_EQ(pp.steps[0].resident_mean, 9.0);
}

TEST(LaqFaithful, BudgetCoveringThePromptReproducesTheFullRun) {
  for (const char* name : {"laq", "laqpp"}) {
    const sim::ClosedLoopResult r = RunPolicy(name, 1000, 24);
    EXPECT_EQ(r.free_tokens, r.full_tokens) << name;
    EXPECT_EQ(r.kl_mean, 0.0) << name;
    EXPECT_EQ(r.perplexity_evicted, r.perplexity_full) << name;
  }
}

TEST(LaqFaithful, OnlyClosedLoopKnowsIt) {
  EXPECT_THROW(FindPolicy("laq"), InputError);
  EXPECT_THROW(FindPolicy("laqpp"), InputError);
  try {
    ClosedLoopPolicyFactory("nope", PolicyParams{});
    FAIL() << "no error";
  } catch (const InputError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'nope'"), std::string::npos) << what;
    EXPECT_NE(what.find("laqpp"), std::string::npos) << what;
    EXPECT_NE(what.find("h2o"), std::string::npos) << what;
  }
  const std::vector<std::string> bad = {"lookahead=-1"};
  EXPECT_THROW(ClosedLoopPolicyFactory("laq", PolicyParams::Parse(bad, "--param")), InputError);
}

// The acceptance trend on stories260K: smaller budgets do more real damage.
TEST(ClosedLoopPolicies, SmallerBudgetsDoMoreDamage) {
  for (const char* name : {"h2o", "streaming", "laq"}) {
    std::vector<sim::ClosedLoopResult> runs;
    for (const int64_t budget : {8, 16, 64}) runs.push_back(RunPolicy(name, budget, 48));
    EXPECT_GT(runs[0].kl_mean, runs[1].kl_mean) << name;
    EXPECT_GT(runs[1].kl_mean, runs[2].kl_mean) << name;
    EXPECT_LE(runs[0].agreement, runs[2].agreement) << name;
    EXPECT_GE(runs[0].perplexity_evicted, runs[2].perplexity_evicted) << name;
  }
}

}  // namespace
}  // namespace kvsim::policies
