// Sweeps: thread-count independence, output files, sweep files and their errors.
#include "analysis/sweep.h"

#include <gtest/gtest.h>

#include <array>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>

#include "analysis/csv.h"
#include "common/atomic_file.h"
#include "common/test_util.h"
#include "sim/random_trace.h"
#include "traces/trace_io.h"

namespace kvsim::analysis {
namespace {

models::ModelShape TinyShape() {
  models::ModelShape shape;
  shape.name = "tiny";
  shape.layers = 3;
  shape.q_heads = 4;
  shape.kv_heads = 2;
  shape.head_dim = 8;
  return shape;
}

SweepPlan GridPlan(int threads) {
  SweepPlan plan;
  for (const char* p : {"full", "random", "h2o", "tova", "snapkv", "oracle"}) {
    plan.policies.push_back({p, {}});
  }
  for (const char* b : {"6", "0.25p", "30"}) plan.budgets.push_back(sim::Budget::Parse(b, "t"));
  plan.options.seed = 5;
  plan.threads = threads;
  return plan;
}

std::string CsvText(const SweepResult& result, const testing::TempDir& dir, const char* name) {
  result.table.WriteCsv(dir.path() / name);
  return ReadFileToString(dir.path() / name);
}

TEST(Sweep, OneAndTwoThreadsWriteIdenticalCsv) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 40, 64, 17);
  testing::TempDir dir;
  const std::string one = CsvText(RunSweepOnTrace(GridPlan(1), trace, "t.h5"), dir, "1.csv");
  const std::string two = CsvText(RunSweepOnTrace(GridPlan(2), trace, "t.h5"), dir, "2.csv");
  EXPECT_EQ(one, two);
  const CsvTable table = CsvTable::Parse(one, "sweep.csv");
  EXPECT_EQ(table.header(), ResultTable::Header());
  EXPECT_EQ(table.num_rows(), 6u * 3u * 4u);  // cells x (3 layers + all)
}

TEST(Sweep, RowsFollowPlanOrderWithAllRowLast) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 40, 44, 18);
  SweepPlan plan = GridPlan(1);
  plan.policies.resize(2);
  plan.budgets.resize(2);
  const SweepResult result = RunSweepOnTrace(plan, trace, "t.h5");
  const auto& rows = result.table.rows();
  ASSERT_EQ(rows.size(), 16u);
  EXPECT_EQ(rows[0].policy, "full");
  EXPECT_EQ(rows[0].layer, "0");
  EXPECT_EQ(rows[3].layer, "all");
  EXPECT_EQ(rows[4].budget, "0.25p");
  EXPECT_EQ(rows[4].budget_tokens, 44.0);  // full keeps everything: T
  EXPECT_EQ(rows[8].policy, "random");
  EXPECT_EQ(rows[12].budget_tokens, 10.0);  // 0.25 x 40
  EXPECT_EQ(rows[12].regime, "bounded");
  // Bounded, evict-after-attend: B + 1 resident while a step attends; 2 KV heads x 2 x 8 x 2 B.
  EXPECT_EQ(rows[12].resident_tokens_peak, 11);
  EXPECT_EQ(rows[12].kv_bytes_peak, 11 * 2 * 32);
  EXPECT_EQ(rows[15].kv_bytes_peak, 3 * 11 * 2 * 32);
}

// Equal memory: kv_bytes_over_budget_peak is 0 for a policy held to B (B + 1 while a step
// attends), and counts the excess of one that is not: LazyEviction's window (peak C + W tokens),
// `full` below T. Per stream and token 2 x 8 x 2 bytes (K and V, head_dim 8, fp16), 2 streams.
TEST(Sweep, OverBudgetBytesCountWhatExceedsTheAskedBudget) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 40, 64, 19);
  SweepPlan plan;
  using policies::PolicyParams;
  plan.policies.push_back({"streaming", PolicyParams()});
  const std::vector<std::string> window = {"window=4"};
  const std::vector<std::string> window_in_budget = {"window=4", "window_in_budget=true"};
  plan.policies.push_back({"lazy-eviction", PolicyParams::Parse(window, "t")});
  plan.policies.push_back({"lazy-eviction", PolicyParams::Parse(window_in_budget, "t")});
  plan.policies.push_back({"full", PolicyParams()});
  plan.budgets = {sim::Budget::Parse("8", "t")};
  plan.threads = 1;
  const SweepResult result = RunSweepOnTrace(plan, trace, "t.h5");
  const auto& rows = result.table.rows();
  ASSERT_EQ(rows.size(), 4u * 4u);
  const int64_t token_bytes = 2 * 32;  // per token over both streams of a layer
  const std::vector<int64_t> over_tokens = {0, 4 - 1, 0, 64 - 9};  // per layer
  for (size_t cell = 0; cell < 4; ++cell) {
    for (size_t l = 0; l < 3; ++l) {
      const ResultRow& row = rows[cell * 4 + l];
      EXPECT_EQ(row.kv_bytes_over_budget_peak, over_tokens[cell] * token_bytes)
          << row.policy << " " << row.params << " layer " << l;
    }
    const ResultRow& all = rows[cell * 4 + 3];
    EXPECT_EQ(all.kv_bytes_over_budget_peak, 3 * over_tokens[cell] * token_bytes)
        << all.policy << " " << all.params;
  }
}

// The `all` row names the cell's worst layer by mass recall; a layer row names itself.
TEST(Sweep, AllRowCarriesTheWorstLayersRecall) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 40, 64, 21);
  SweepPlan plan = GridPlan(2);
  plan.policies.push_back({"pyramidkv", {}});  // uneven layer budgets
  const SweepResult result = RunSweepOnTrace(plan, trace, "t.h5");
  const std::vector<ResultRow>& rows = result.table.rows();
  const int layers = TinyShape().layers;
  ASSERT_EQ(rows.size(), result.cells.size() * static_cast<size_t>(layers + 1));
  for (size_t cell = 0; cell < result.cells.size(); ++cell) {
    const size_t first = cell * static_cast<size_t>(layers + 1);
    double worst = 2.0;
    std::string worst_layer;
    // Each other metric's worst layer, found by hand: highest error, lowest cosine and recall.
    double worst_error = -1.0;
    double worst_cosine = 2.0;
    std::array<double, kTopK.size()> worst_top = {2.0, 2.0, 2.0};
    for (int l = 0; l < layers; ++l) {
      const ResultRow& row = rows[first + static_cast<size_t>(l)];
      EXPECT_EQ(row.mass_recall_worst_layer_mean, row.mass_recall.mean);
      EXPECT_EQ(row.worst_layer, row.layer);
      EXPECT_EQ(row.rel_l2_error_worst_layer_mean, row.rel_l2_error.mean);
      EXPECT_EQ(row.cosine_worst_layer_mean, row.cosine.mean);
      EXPECT_EQ(row.top_recall_worst_layer_mean, row.top_recall_mean);
      if (row.mass_recall.mean < worst) {
        worst = row.mass_recall.mean;
        worst_layer = row.layer;
      }
      if (row.rel_l2_error.mean > worst_error) worst_error = row.rel_l2_error.mean;
      if (row.cosine.mean < worst_cosine) worst_cosine = row.cosine.mean;
      for (size_t k = 0; k < kTopK.size(); ++k) {
        if (row.top_recall_mean[k] < worst_top[k]) worst_top[k] = row.top_recall_mean[k];
      }
    }
    const ResultRow& all = rows[first + static_cast<size_t>(layers)];
    ASSERT_EQ(all.layer, "all");
    EXPECT_EQ(all.mass_recall_worst_layer_mean, worst) << all.policy << " " << all.budget;
    EXPECT_EQ(all.worst_layer, worst_layer) << all.policy << " " << all.budget;
    EXPECT_LE(all.mass_recall_worst_layer_mean, all.mass_recall.mean + 1e-12);
    EXPECT_EQ(all.rel_l2_error_worst_layer_mean, worst_error);
    EXPECT_EQ(all.cosine_worst_layer_mean, worst_cosine);
    EXPECT_EQ(all.top_recall_worst_layer_mean, worst_top);
    EXPECT_GE(all.rel_l2_error_worst_layer_mean, all.rel_l2_error.mean - 1e-12);
    EXPECT_LE(all.cosine_worst_layer_mean, all.cosine.mean + 1e-12);
  }
}

// SnapKV's max pooling copies a window sum onto its neighbours, so equal scores straddle the
// selection boundary: the tie_share column counts those victims, and only cells with ties change
// when the tie rule does.
TEST(Sweep, TieShareFlagsTheCellsWhoseResultTheTieRuleDecides) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 60, 64, 23);
  SweepPlan plan;
  plan.policies = {{"snapkv", {}}, {"h2o", {}}};
  for (const char* b : {"12", "20", "33", "45"}) plan.budgets.push_back(sim::Budget::Parse(b, "t"));
  plan.options.regime = sim::Regime::kPrefill;
  const SweepResult newest = RunSweepOnTrace(plan, trace, "t.h5");
  plan.options.ties = sim::TieRule::kKeepOldest;
  const SweepResult oldest = RunSweepOnTrace(plan, trace, "t.h5");
  const std::vector<ResultRow>& a = newest.table.rows();
  const std::vector<ResultRow>& b = oldest.table.rows();
  ASSERT_EQ(a.size(), b.size());
  int tied_rows = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_GT(a[i].ranked_victims, 0) << a[i].policy << " " << a[i].budget << " " << a[i].layer;
    EXPECT_EQ(a[i].ranked_victims, b[i].ranked_victims);
    if (a[i].tie_victims == 0 && b[i].tie_victims == 0) {
      EXPECT_EQ(a[i].mass_recall.mean, b[i].mass_recall.mean) << a[i].policy << " " << a[i].budget;
      continue;
    }
    ++tied_rows;
    EXPECT_GT(a[i].tie_share(), 0.0);
    EXPECT_LE(a[i].tie_share(), 1.0);
  }
  EXPECT_GT(tied_rows, 0) << "no cell has a tie at its boundary: the test cannot tell";
  bool some_differ = false;
  for (size_t i = 0; i < a.size(); ++i) {
    some_differ |= a[i].tie_victims > 0 && a[i].mass_recall.mean != b[i].mass_recall.mean;
  }
  EXPECT_TRUE(some_differ) << "the tie rule changed no tied cell";
}

// A budget schedule whose entries are all c behaves as the fixed budget c for a policy with a
// uniform plan (MiKV: its byte budget capped at c tokens' worth): the same victims at every
// phase, so the same rows bit for bit. A schedule that dips below c in the middle changes them.
TEST(Sweep, ConstantBudgetScheduleEqualsTheFixedBudget) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 40, 64, 29);
  const auto row_of = [&](const std::string& policy, sim::Budget budget) {
    SweepPlan plan;
    plan.policies = {{policy, {}}};
    plan.budgets = {std::move(budget)};
    plan.threads = 1;
    return RunSweepOnTrace(plan, trace, "t.h5").table.rows().back();
  };
  const auto scheduled = [](std::vector<int64_t> entries) {
    sim::Budget b = sim::Budget::Parse("12", "t");
    b.schedule = std::make_shared<const std::vector<int64_t>>(std::move(entries));
    return b;
  };
  for (const char* policy : {"h2o", "tova", "snapkv", "streaming", "random", "mikv"}) {
    const ResultRow fixed = row_of(policy, sim::Budget::Parse("7", "t"));
    const ResultRow constant = row_of(policy, scheduled(std::vector<int64_t>(24, 7)));
    EXPECT_EQ(constant.mass_recall.mean, fixed.mass_recall.mean) << policy;
    EXPECT_EQ(constant.cosine.mean, fixed.cosine.mean) << policy;
    EXPECT_EQ(constant.resident_tokens_mean, fixed.resident_tokens_mean) << policy;
    std::vector<int64_t> dip(24, 7);
    for (size_t k = 8; k < 16; ++k) dip[k] = 3;
    const ResultRow dipped = row_of(policy, scheduled(dip));
    EXPECT_LT(dipped.resident_tokens_mean, fixed.resident_tokens_mean) << policy;
    EXPECT_NE(dipped.mass_recall.mean, fixed.mass_recall.mean) << policy;
  }
}

TEST(Sweep, WritesCsvAndJsonMetadata) {
  const traces::Trace trace = sim::RandomTrace(TinyShape(), 20, 24, 19);
  testing::TempDir dir;
  const std::string path = dir.File("t.h5");
  traces::TraceWriterOptions options;
  options.storage = traces::StorageType::kFloat32;
  traces::WriteTrace(path, trace, options);
  SweepPlan plan = GridPlan(2);
  plan.traces = {path};
  plan.policies.resize(2);
  const SweepResult result = RunSweep(plan);
  WriteSweepOutputs(dir.path(), plan, result, "kvsim sweep --test");
  const CsvTable table = CsvTable::Read(dir.path() / "sweep.csv");
  EXPECT_EQ(table.Text(0, table.Column("trace")), "t.h5");
  const nlohmann::json meta = nlohmann::json::parse(ReadFileToString(dir.path() / "sweep.json"));
  for (const char* key : {"kvsim_version", "traces", "policies", "budgets", "regime", "seed",
                          "threads", "wall_seconds", "command"}) {
    EXPECT_TRUE(meta.contains(key)) << key;
  }
  EXPECT_EQ(meta["threads"], 2);
  EXPECT_EQ(meta["seed"], 5);
  EXPECT_EQ(meta["command"], "kvsim sweep --test");
  EXPECT_EQ(meta["traces"][0], "t.h5");
}

TEST(SweepFile, ReadsEveryKey) {
  testing::TempDir dir;
  std::ofstream(dir.File("s.toml")) << R"(
traces = ["a.h5", "/abs/b.h5"]
budgets = ["0.25p", 128]
regime = "prefill"
gqa = "query-head"
evict = "before-attend"
seed = 9
threads = 3
policies = ["full"]
[[policy]]
name = "h2o"
params = { recent_ratio = 0.25 }
)";
  const SweepPlan plan = ReadSweepFile(dir.File("s.toml"));
  EXPECT_EQ(plan.traces, (std::vector<std::string>{dir.File("a.h5"), "/abs/b.h5"}));
  ASSERT_EQ(plan.budgets.size(), 2u);
  EXPECT_EQ(plan.budgets[1].text, "128");
  EXPECT_EQ(plan.options.regime, sim::Regime::kPrefill);
  EXPECT_EQ(plan.options.gqa_mode, sim::GqaMode::kQueryHead);
  EXPECT_EQ(plan.options.timing, sim::EvictTiming::kBeforeAttend);
  EXPECT_EQ(plan.options.seed, 9u);
  EXPECT_EQ(plan.threads, 3);
  ASSERT_EQ(plan.policies.size(), 2u);
  EXPECT_EQ(plan.policies[1].name, "h2o");
  EXPECT_EQ(plan.policies[1].params.values().at("recent_ratio"), "0.25");
  plan.Validate();
}

TEST(SweepFile, UnknownKeyIsNamedWithTheFile) {
  testing::TempDir dir;
  std::ofstream(dir.File("bad.toml")) << "budget = [1]\n";
  try {
    ReadSweepFile(dir.File("bad.toml"));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("bad.toml: unknown key 'budget'"), std::string::npos)
        << e.what();
  }
}

TEST(SweepFile, BadBudgetNamesFileAndValue) {
  testing::TempDir dir;
  std::ofstream(dir.File("b.toml")) << "budgets = [\"1.5p\"]\n";
  try {
    ReadSweepFile(dir.File("b.toml"));
    FAIL();
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("b.toml: budgets: budget '1.5p'"), std::string::npos)
        << e.what();
  }
}

TEST(Budget, ParsesTokensAndPromptFractions) {
  EXPECT_EQ(sim::Budget::Parse("256", "b").ResolveTokens(1000), 256);
  EXPECT_EQ(sim::Budget::Parse("0.25p", "b").ResolveTokens(1001), 250);
  EXPECT_EQ(sim::Budget::Parse("0.001p", "b").ResolveTokens(10), 1);
  for (const char* bad : {"0", "-3", "2.5", "0p", "1.5p", "p", "abc", ""}) {
    EXPECT_THROW(sim::Budget::Parse(bad, "--budget"), InputError) << bad;
  }
}

}  // namespace
}  // namespace kvsim::analysis
