// What the sweep engine does to stay within issue 11's memory bound must not change a number:
// cells of a budget-ignoring policy share one replay, and finished layers' samples may wait in
// a temporary file. Both are checked against sweeps that do neither.
#include <gtest/gtest.h>

#include <set>
#include <string>

#include "analysis/sweep.h"
#include "policies/registry.h"
#include "sim/random_trace.h"

namespace kvsim::analysis {
namespace {

models::ModelShape Shape() {
  models::ModelShape shape;
  shape.name = "gqa";
  shape.layers = 3;
  shape.q_heads = 4;
  shape.kv_heads = 2;
  shape.head_dim = 8;
  return shape;
}

// A random trace with random gate flags, so that `gate` can replay too.
traces::Trace TraceWithFlags() {
  traces::Trace trace = sim::RandomTrace(Shape(), 31, 47, 17);
  std::vector<uint8_t> flags(static_cast<size_t>(3 * 2 * 47));
  for (size_t i = 0; i < flags.size(); ++i) flags[i] = (i * 2654435761u >> 7) % 3 != 0;
  trace.set_gate_flags(std::move(flags));
  return trace;
}

// Every field of a row that a replay decides (the budget text aside).
void ExpectSameRow(const ResultRow& got, const ResultRow& want, const std::string& what) {
  EXPECT_EQ(got.layer, want.layer) << what;
  EXPECT_EQ(got.budget_tokens, want.budget_tokens) << what;
  EXPECT_EQ(got.steps, want.steps) << what;
  for (const auto& [g, w, name] : {std::tuple{got.mass_recall, want.mass_recall, "mass_recall"},
                                   std::tuple{got.rel_l2_error, want.rel_l2_error, "rel_l2_error"},
                                   std::tuple{got.cosine, want.cosine, "cosine"}}) {
    EXPECT_EQ(g.mean, w.mean) << what << " " << name;
    EXPECT_EQ(g.p5, w.p5) << what << " " << name;
    EXPECT_EQ(g.p50, w.p50) << what << " " << name;
    EXPECT_EQ(g.p95, w.p95) << what << " " << name;
  }
  EXPECT_EQ(got.top_recall_mean, want.top_recall_mean) << what;
  EXPECT_EQ(got.resident_tokens_mean, want.resident_tokens_mean) << what;
  EXPECT_EQ(got.resident_tokens_peak, want.resident_tokens_peak) << what;
  EXPECT_EQ(got.kv_bytes_mean, want.kv_bytes_mean) << what;
  EXPECT_EQ(got.kv_bytes_peak, want.kv_bytes_peak) << what;
  EXPECT_EQ(got.kv_bytes_over_budget_peak, want.kv_bytes_over_budget_peak) << what;
  EXPECT_EQ(got.mass_recall_worst_layer_mean, want.mass_recall_worst_layer_mean) << what;
  EXPECT_EQ(got.worst_layer, want.worst_layer) << what;
  EXPECT_EQ(got.rel_l2_error_worst_layer_mean, want.rel_l2_error_worst_layer_mean) << what;
  EXPECT_EQ(got.cosine_worst_layer_mean, want.cosine_worst_layer_mean) << what;
  EXPECT_EQ(got.top_recall_worst_layer_mean, want.top_recall_worst_layer_mean) << what;
  EXPECT_EQ(got.ranked_victims, want.ranked_victims) << what;
  EXPECT_EQ(got.tie_victims, want.tie_victims) << what;
}

SweepPlan Plan(const std::vector<std::string>& policies, const std::vector<std::string>& budgets) {
  SweepPlan plan;
  for (const std::string& p : policies) plan.policies.push_back({p, {}});
  for (const std::string& b : budgets) plan.budgets.push_back(sim::Budget::Parse(b, "t"));
  plan.options.seed = 5;
  plan.block_steps = 4;
  plan.threads = 2;
  return plan;
}

bool IgnoresBudget(const std::string& name) {
  policies::PolicySetup setup;
  setup.shape = Shape();
  setup.prompt_len = 31;
  setup.total_len = 47;
  return policies::MakePolicy(name, {}, setup)->IgnoresBudget();
}

// A policy that claims to ignore the budget is replayed once per sweep; each budget replayed in a
// sweep of its own (where nothing can be shared) must give the same rows.
TEST(SweepMemory, BudgetIgnoringPoliciesReallyIgnoreTheBudget) {
  const traces::Trace trace = TraceWithFlags();
  const std::vector<std::string> budgets = {"3", "12", "0.5p"};
  std::set<std::string> claiming;
  for (const std::string& name : policies::PolicyNames()) {
    if (!IgnoresBudget(name)) continue;
    claiming.insert(name);
    const SweepResult together = RunSweepOnTrace(Plan({name}, budgets), trace, "t");
    const size_t rows_per_cell = static_cast<size_t>(trace.num_layers()) + 1;
    ASSERT_EQ(together.table.rows().size(), rows_per_cell * budgets.size());
    for (size_t b = 0; b < budgets.size(); ++b) {
      const SweepResult alone = RunSweepOnTrace(Plan({name}, {budgets[b]}), trace, "t");
      for (size_t r = 0; r < rows_per_cell; ++r) {
        const ResultRow& got = together.table.rows()[b * rows_per_cell + r];
        EXPECT_EQ(got.budget, budgets[b]);
        ExpectSameRow(got, alone.table.rows()[r], name + " budget " + budgets[b]);
      }
    }
  }
  // The policies that never evict by budget make the claim, so the check above is not empty.
  EXPECT_EQ(claiming, (std::set<std::string>{"full", "gate", "kivi"}));
}

TEST(SweepMemory, SpilledSamplesGiveIdenticalRowsAndLedgers) {
  const traces::Trace trace = TraceWithFlags();
  SweepPlan plan = Plan({"full", "h2o", "d2o", "kivi", "mikv", "snapkv", "cake"}, {"5", "0.5p"});
  plan.spill_threshold_bytes = -1;
  const SweepResult in_memory = RunSweepOnTrace(plan, trace, "t");
  plan.spill_threshold_bytes = 0;
  const SweepResult spilled = RunSweepOnTrace(plan, trace, "t");
  ASSERT_EQ(spilled.table.rows().size(), in_memory.table.rows().size());
  for (size_t r = 0; r < in_memory.table.rows().size(); ++r) {
    const ResultRow& want = in_memory.table.rows()[r];
    ExpectSameRow(spilled.table.rows()[r], want, want.policy + " " + want.budget);
  }
  ASSERT_EQ(spilled.ledgers.size(), in_memory.ledgers.size());
  for (size_t c = 0; c < in_memory.ledgers.size(); ++c) {
    const auto want = in_memory.ledgers[c].samples();
    const auto got = spilled.ledgers[c].samples();
    ASSERT_EQ(got.size(), want.size()) << c;
    ASSERT_FALSE(want.empty());
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_EQ(got[i].step, want[i].step);
      EXPECT_EQ(got[i].phase, want[i].phase);
      EXPECT_EQ(got[i].category, want[i].category);
      EXPECT_EQ(got[i].layer, want[i].layer);
      EXPECT_EQ(got[i].bytes, want[i].bytes);
    }
  }
}

TEST(SweepMemory, LedgersAreKeptOnlyWhenAsked) {
  const traces::Trace trace = TraceWithFlags();
  SweepPlan plan = Plan({"h2o"}, {"5", "9"});
  EXPECT_EQ(RunSweepOnTrace(plan, trace, "t").ledgers.size(), 2u);
  plan.keep_ledgers = false;
  const SweepResult result = RunSweepOnTrace(plan, trace, "t");
  EXPECT_TRUE(result.ledgers.empty());
  EXPECT_GT(result.table.rows().back().kv_bytes_peak, 0.0);  // the rows still carry the bytes
}

}  // namespace
}  // namespace kvsim::analysis
