// share = "global" with live replays: the scheduler's splits are the brute-force optimum of the
// value curves it saw and the flat-attention sequence keeps more than an equal share; the live
// replay makes the quality replay's evictions; at the scenario level the pool never overflows,
// outputs are identical for any thread count, and a policy without a score shares equally.
#include "sim/serving/live_scores.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>

#include "analysis/sweep.h"
#include "common/atomic_file.h"
#include "common/test_util.h"
#include "common/tiny_shape.h"
#include "policies/policy_test_util.h"
#include "serving/global_share_test_util.h"
#include "sim/random_trace.h"
#include "sim/serving/scheduler.h"
#include "sim/serving/serve.h"
#include "traces/trace_io.h"

namespace kvsim::serving {
namespace {

using kvsim::testing::TempDir;

constexpr int64_t kPrompt = 24;
constexpr int64_t kTotal = 80;
constexpr int64_t kOwnBudget = 40;
constexpr int64_t kBlock = 4;
constexpr int64_t kRows = 12;

// Records what the scheduler asked and gave, forwarding to the live scorer.
class Recorder final : public SequenceScorer {
 public:
  explicit Recorder(std::unique_ptr<SequenceScorer> inner) : inner_(std::move(inner)) {}
  struct Iteration {
    std::map<int64_t, std::vector<double>> curves;           // ids that had one
    std::map<int64_t, std::pair<int64_t, int64_t>> decodes;  // id -> (k, budget)
  };
  // One iteration asks every decoding sequence's curve, then advances each: a curve asked after
  // an advance opens the next iteration.
  bool Value(int64_t id, std::vector<double>& value) override {
    if (iterations.empty() || advanced_) iterations.emplace_back();
    advanced_ = false;
    const bool has = inner_->Value(id, value);
    if (has) iterations.back().curves[id] = value;
    return has;
  }
  void Decode(int64_t id, int64_t k, int64_t budget) override {
    advanced_ = true;
    iterations.back().decodes[id] = {k, budget};
    inner_->Decode(id, k, budget);
  }
  void Done(int64_t id) override { inner_->Done(id); }
  std::vector<Iteration> iterations;

 private:
  std::unique_ptr<SequenceScorer> inner_;
  bool advanced_ = false;
};

CostModel Overhead() {
  CostModel cost;
  cost.overhead_s = 1e-3;
  cost.hbm_bytes_per_s = 1e30;
  cost.peak_flops = 1e30;
  cost.params = 1.0;
  cost.weight_bytes = 1.0;
  return cost;
}

struct LiveRun {
  std::vector<traces::Trace> traces;
  std::unique_ptr<Recorder> recorder;
  ScheduleResult schedule;
  // resident[layer] of request 0, at every measured step of its live replay.
  std::vector<policies::testing::ResidentRecorder> observed;
};

// Every query of a head is the same (strongly scaled) vector: every step attends to the same
// few keys.
traces::Trace Concentrated(const models::ModelShape& shape, uint64_t seed) {
  traces::Trace t = sim::RandomTrace(shape, kPrompt, kTotal, seed, 8.0);
  for (int l = 0; l < t.num_layers(); ++l) {
    HeadTensor& q = t.mutable_layer(l).queries;
    for (int h = 0; h < shape.q_heads; ++h) {
      for (int64_t p = 1; p < kTotal; ++p) std::copy_n(q.Row(h, 0), shape.head_dim, q.Row(h, p));
    }
  }
  return t;
}

// Zero keys: every query attends uniformly.
traces::Trace Flat(const models::ModelShape& shape, uint64_t seed) {
  traces::Trace t = sim::RandomTrace(shape, kPrompt, kTotal, seed);
  for (int l = 0; l < t.num_layers(); ++l) {
    HeadTensor& k = t.mutable_layer(l).keys;
    std::fill(k.data(), k.data() + k.size(), 0.0f);
  }
  return t;
}

// A (concentrated attention) and B (flat) arrive at 0; C (concentrated) at 10 ms, when
// the pool of 12 rows of 4 tokens must be split three ways.
void RunThree(const std::string& policy, BudgetShare share, LiveRun& run) {
  const models::ModelShape shape = kvsim::testing::TinyShape();
  run.traces.push_back(Concentrated(shape, 11));
  run.traces.push_back(Flat(shape, 12));
  run.observed.resize(static_cast<size_t>(shape.layers));
  SchedulerConfig config;
  config.on_full = OnFull::kEvict;
  config.share = share;
  config.min_budget_tokens = 3;
  const PoolGeometry pool = PoolGeometry::Make(
      shape, kBlock, kRows * shape.layers * shape.kv_heads * kBlock * 2 * shape.head_dim * 2, "t");
  EXPECT_EQ(pool.capacity_rows, kRows);
  const std::vector<SequenceShape> shapes(2, {kPrompt, kTotal - kPrompt, kOwnBudget, false});
  const std::vector<ServingRequest> requests = {{0, 0.0, 0}, {1, 0.0, 1}, {2, 0.0105, 0}};
  LiveScoresInput in;
  for (const traces::Trace& t : run.traces) in.traces.push_back(&t);
  in.own_budget_tokens = {kOwnBudget, kOwnBudget};
  in.policy = {policy, {}};
  in.request_trace = {0, 1, 0};
  in.observe = [&run](int64_t id, int layer) -> sim::ReplayObserver* {
    return id == 0 ? &run.observed[static_cast<size_t>(layer)] : nullptr;
  };
  run.recorder = std::make_unique<Recorder>(MakeLiveScorer(std::move(in)));
  run.schedule = Schedule(config, pool, Overhead(), shape, shapes, requests, run.recorder.get());
}

// The rows of each decoding sequence in the iterations where all three decode (nobody is in
// prefill, so every claim is known), checked against the brute-force optimum of the curves the
// scheduler saw; returns B's rows in the first of them.
TEST(GlobalShare, FlatSequenceKeepsMoreThanAnEqualShareAndEverySplitIsOptimal) {
  for (const std::string policy : {"h2o", "tova"}) {
    LiveRun run;
    RunThree(policy, BudgetShare::kGlobal, run);
    int checked = 0;
    int64_t first_a = -1, first_b = -1;
    for (const Recorder::Iteration& it : run.recorder->iterations) {
      if (it.decodes.size() != 3) continue;
      std::vector<RowClaim> claims;
      std::vector<int64_t> given;
      for (const auto& [id, decode] : it.decodes) {
        RowClaim c;
        const auto curve = it.curves.find(id);
        if (curve == it.curves.end()) {
          c.fixed_rows = kRows / 3;
        } else {
          const int64_t length = kPrompt + decode.first + 1;
          c.max_rows = (std::min(kOwnBudget + 1, length) + kBlock - 1) / kBlock;
          c.min_rows = 1;
          c.value = curve->second;
        }
        claims.push_back(c);
        given.push_back((std::min(decode.second + 1, kOwnBudget + 1) + kBlock - 1) / kBlock);
      }
      EXPECT_EQ(given, BruteForce(kRows, kBlock, claims)) << policy << " iteration " << checked;
      if (first_a < 0) first_a = given[0], first_b = given[1];
      ++checked;
    }
    EXPECT_GT(checked, 20) << policy;
    // When C arrives, A's and B's value curves decide who gives up rows: the flat B keeps more
    // than the equal 4 rows, the concentrated A less.
    EXPECT_GT(first_b, kRows / 3) << policy;
    EXPECT_LT(first_a, kRows / 3) << policy;
    for (const PoolSample& x : run.schedule.timeline) EXPECT_GE(x.free_bytes, 0);
    // Over their lives too, against the same run with equal shares.
    LiveRun equal;
    RunThree(policy, BudgetShare::kEqual, equal);
    EXPECT_TRUE(equal.recorder->iterations.empty());
    const auto mean = [](const LiveRun& r, size_t i) {
      return r.schedule.requests[i].mean_budget_tokens;
    };
    EXPECT_GT(mean(run, 1), mean(equal, 1)) << policy;
    EXPECT_LT(mean(run, 0), mean(equal, 0)) << policy;
  }
}

// The quality pass replays request A's trace under its recorded budgets; at every step the live
// replay reached, its resident positions equal the quality replay's. Applying an entry one evict
// phase early or late would change them (A's budget changes when C arrives).
TEST(GlobalShare, LiveReplayMakesTheQualityReplaysEvictions) {
  LiveRun run;
  RunThree("h2o", BudgetShare::kGlobal, run);
  const RequestRecord& a = run.schedule.requests[0];
  ASSERT_EQ(a.decode_budgets.size(), static_cast<size_t>(kTotal - kPrompt));
  const auto [lo, hi] = std::minmax_element(a.decode_budgets.begin(), a.decode_budgets.end());
  EXPECT_LT(*lo, *hi);
  std::vector<int64_t> schedule;
  for (const int64_t b : a.decode_budgets)
    schedule.push_back(std::clamp<int64_t>(b, 1, kOwnBudget));
  const traces::Trace& trace = run.traces[0];
  for (int l = 0; l < trace.num_layers(); ++l) {
    const auto policy = policies::MakePolicy(
        "h2o", {}, policies::testing::SetupFor(trace, l, sim::ReplayOptions{}));
    const sim::PrefillAttention prefill(trace.layer(l), kPrompt);
    sim::LayerReplayInput input;
    input.trace = &trace;
    input.layer = l;
    input.budget_tokens = kOwnBudget;
    input.prefill = &prefill;
    input.budget_schedule = schedule;
    input.schedule_base = kOwnBudget;
    policies::testing::ResidentRecorder quality;
    (void)sim::ReplayLayer(input, *policy, &quality);
    const auto& live = run.observed[static_cast<size_t>(l)].steps;
    // Live: through the evict phase before the last decode position (kTotal - 2).
    ASSERT_EQ(live.size(), static_cast<size_t>(kTotal - kPrompt - 1));
    for (size_t t = 0; t < live.size(); ++t) {
      EXPECT_EQ(live[t], quality.steps[t]) << "layer " << l << " step " << kPrompt + t;
    }
  }
}

std::string WriteTrace(
    const TempDir& dir, const std::string& name, int64_t total, uint64_t seed, double scale) {
  const std::string path = dir.File(name);
  traces::WriteTrace(path, sim::RandomTrace(kvsim::testing::TinyShape(), 24, total, seed, scale));
  return path;
}

ServingScenario Scenario(const TempDir& dir,
                         const std::string& policy,
                         BudgetShare share,
                         int threads) {
  ServingScenario s;
  s.traces = {WriteTrace(dir, "a.h5", 56, 7, 6.0), WriteTrace(dir, "b.h5", 48, 8, 0.2)};
  s.policies = {{policy, {}}};
  s.budget = "40";
  s.rates = {150.0, 400.0};
  s.capacities_bytes = {12 * 512, 24 * 512};  // 12 and 24 rows of 4 tokens
  s.block_tokens = 4;
  s.workload.num_requests = 16;
  s.scheduler.on_full = OnFull::kEvict;
  s.scheduler.share = share;
  s.scheduler.min_budget_tokens = 3;
  s.threads = threads;
  s.Validate("t");
  return s;
}

std::string Outputs(const TempDir& dir, const std::string& name, const ServingScenario& s) {
  const ServingResult r = RunServing(s);
  for (const ServingCell& cell : r.cells) {
    for (const PoolSample& x : cell.schedule.timeline) EXPECT_GE(x.free_bytes, 0);
    for (const RequestRecord& q : cell.schedule.requests) EXPECT_GE(q.finish_s, 0.0);
  }
  const auto out = dir.path() / name;
  WriteServingOutputs(out, s, r);
  return ReadFileToString(out / "serve_requests.csv") + ReadFileToString(out / "serve_pool.csv") +
         ReadFileToString(out / "serve_summary.csv");
}

TEST(GlobalShare, ScenarioOutputsIdenticalForAnyThreadCountAndDifferFromEqual) {
  TempDir dir;
  const std::string one = Outputs(dir, "g1", Scenario(dir, "h2o", BudgetShare::kGlobal, 1));
  EXPECT_EQ(one, Outputs(dir, "g3", Scenario(dir, "h2o", BudgetShare::kGlobal, 3)));
  EXPECT_NE(one, Outputs(dir, "e1", Scenario(dir, "h2o", BudgetShare::kEqual, 1)));
}

// RunServing's metrics for a global cell are the sweep engine's under the recorded budgets,
// computing q . k per replay as the live replays did.
TEST(GlobalShare, QualityIsTheSweepUnderTheRecordedBudgets) {
  TempDir dir;
  ServingScenario s = Scenario(dir, "h2o", BudgetShare::kGlobal, 1);
  s.rates = {400.0};
  s.capacities_bytes = {12 * 512};
  const ServingResult r = RunServing(s);
  ASSERT_EQ(r.cells.size(), 1u);
  int varied = 0;
  for (size_t i = 0; i < r.cells[0].schedule.requests.size() && varied < 3; ++i) {
    const RequestRecord& q = r.cells[0].schedule.requests[i];
    const auto [lo, hi] = std::minmax_element(q.decode_budgets.begin(), q.decode_budgets.end());
    if (*lo == *hi) continue;
    ++varied;
    analysis::SweepPlan plan;
    plan.traces = {s.traces[static_cast<size_t>(q.trace)]};
    plan.policies = s.policies;
    sim::Budget budget = sim::Budget::Parse("40", "t");
    std::vector<int64_t> schedule;
    for (const int64_t b : q.decode_budgets) schedule.push_back(std::clamp<int64_t>(b, 1, 40));
    budget.schedule = std::make_shared<const std::vector<int64_t>>(schedule);
    plan.budgets = {budget};
    plan.threads = 1;
    plan.share_logits = false;
    const analysis::ResultRow row = analysis::RunSweep(plan).table.rows().back();
    EXPECT_EQ(r.cells[0].quality[i].mass_recall_mean, row.mass_recall.mean) << i;
  }
  EXPECT_EQ(varied, 3);
}

// streaming ranks nothing (a positional window): global is the equal share, file for file.
TEST(GlobalShare, PolicyWithoutAScoreSharesEqually) {
  TempDir dir;
  EXPECT_EQ(Outputs(dir, "g", Scenario(dir, "streaming", BudgetShare::kGlobal, 1)),
            Outputs(dir, "e", Scenario(dir, "streaming", BudgetShare::kEqual, 1)));
}

}  // namespace
}  // namespace kvsim::serving
