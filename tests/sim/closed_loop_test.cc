#include "sim/closed_loop.h"

#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "models/generate.h"
#include "models/model_loader.h"
#include "models/sampler.h"

namespace kvsim::sim {
namespace {

using policies::EvictionPolicy;

const models::LoadedModel& Stories() {
  static const models::LoadedModel loaded = models::LoadModel(models::BundledModelPath());
  return loaded;
}

std::vector<int32_t> Prompt() {
  return Stories().RequireTokenizer().Encode("Once upon a time there was a little girl", true,
                                             false);
}

// Keeps the `budget` most recent positions of every stream (a sliding window, no sinks).
class KeepRecent final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "keep-recent"; }
  void SelectVictims(const policies::EvictionRequest& request,
                     std::span<EvictionDecision> decisions) override {
    for (const policies::StreamView& s : request.streams) {
      const std::vector<int64_t> sorted = s.cache->SortedPositions();
      const int64_t count = request.min_victims[static_cast<size_t>(s.stream)];
      decisions[static_cast<size_t>(s.stream)].victims.assign(sorted.begin(),
                                                              sorted.begin() + count);
    }
  }
};

// Merges nothing useful but asks for a rewrite, which closed loop cannot apply.
class Rewriter final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "rewriter"; }
  void SelectVictims(const policies::EvictionRequest& request,
                     std::span<EvictionDecision> decisions) override {
    for (const policies::StreamView& s : request.streams) {
      if (request.min_victims[static_cast<size_t>(s.stream)] == 0) continue;
      const std::vector<int64_t> sorted = s.cache->SortedPositions();
      EvictionDecision& d = decisions[static_cast<size_t>(s.stream)];
      d.victims.assign(sorted.begin(),
                       sorted.begin() + request.min_victims[static_cast<size_t>(s.stream)]);
      d.rewrites.push_back(EntryRewrite{.position = sorted.back(),
                                        .key = Eigen::VectorXf::Zero(s.cache->head_dim()),
                                        .value = Eigen::VectorXf::Zero(s.cache->head_dim())});
    }
  }
};

// Records layer 0's hooks; evicts like KeepRecent.
class Spy final : public EvictionPolicy {
 public:
  explicit Spy(std::vector<std::string>* log) : log_(log) {}
  std::string_view Name() const override { return "spy"; }
  std::vector<double> PrefillLayerStats(const policies::PrefillView&) override {
    log_->push_back("stats");
    return {};
  }
  int64_t LayerBudget(const policies::BudgetPlanView& plan) override {
    log_->push_back("budget");
    return plan.uniform_budget_tokens;
  }
  void OnPrefill(const policies::PrefillView& v) override {
    log_->push_back("prefill:" + std::to_string(v.end));
  }
  void OnStep(const policies::StepView& v) override {
    EXPECT_NE(v.streams[0].attention, nullptr);
    log_->push_back("step:" + std::to_string(v.step));
  }
  void SelectVictims(const policies::EvictionRequest& request,
                     std::span<EvictionDecision> decisions) override {
    log_->push_back(std::string(request.after_prefill ? "select-prefill:" : "select:") +
                    std::to_string(request.step));
    keep_.SelectVictims(request, decisions);
  }
  void OnEvicted(int stream, std::span<const int64_t> positions) override {
    if (stream == 0) log_->push_back("evicted:" + std::to_string(positions.size()));
  }

 private:
  std::vector<std::string>* log_;
  KeepRecent keep_;
};

LayerPolicyFactory Factory() {
  return [](const policies::PolicySetup&) { return std::make_unique<KeepRecent>(); };
}

ClosedLoopOptions Options(int64_t budget, int64_t new_tokens = 32) {
  ClosedLoopOptions o;
  o.new_tokens = new_tokens;
  o.budget_tokens = budget;
  return o;
}

TEST(ClosedLoopMath, KlAndNllMatchHandComputedValues) {
  const std::vector<float> p = {0.0f, std::log(3.0f)};  // probabilities 1/4, 3/4
  const std::vector<float> q = {5.0f, 5.0f};            // 1/2, 1/2
  EXPECT_NEAR(KlDivergence(p, q), 0.25 * std::log(0.5) + 0.75 * std::log(1.5), 1e-7);
  EXPECT_EQ(KlDivergence(p, p), 0.0);
  EXPECT_NEAR(NegLogLikelihood(p, 1), -std::log(0.75), 1e-7);
}

TEST(ClosedLoop, FullRunIsGreedyGeneration) {
  const std::vector<int32_t> prompt = Prompt();
  const ClosedLoopResult r = RunClosedLoop(Stories().model, prompt, Options(1000), Factory());
  models::GenerateOptions g;
  g.new_tokens = 33;
  models::KvState state = Stories().model.NewState();
  const models::Generation gen = models::Generate(Stories().model, prompt, g, state);
  EXPECT_EQ(r.full_tokens, gen.tokens);
  ASSERT_EQ(r.full_trace.meta().total_len, static_cast<int64_t>(prompt.size()) + 32);
  // The trace's keys are those the full model attended with.
  const int64_t last = r.full_trace.meta().total_len - 1;
  for (int d = 0; d < state.head_dim(); ++d) {
    EXPECT_EQ(r.full_trace.layer(4).keys.Row(0, last)[d], state.keys(4, 0)(last, d));
  }
}

TEST(ClosedLoop, BudgetAtLeastSequenceReproducesFullRunExactly) {
  const std::vector<int32_t> prompt = Prompt();
  const ClosedLoopResult r = RunClosedLoop(
      Stories().model, prompt, Options(static_cast<int64_t>(prompt.size()) + 32), Factory());
  EXPECT_EQ(r.free_tokens, r.full_tokens);
  EXPECT_EQ(r.first_divergence, -1);
  EXPECT_EQ(r.agreement, 1.0);
  EXPECT_EQ(r.teacher_agreement, 1.0);
  EXPECT_EQ(r.kl_mean, 0.0);
  EXPECT_EQ(r.perplexity_evicted, r.perplexity_full);
  for (const ClosedLoopStep& s : r.steps) EXPECT_EQ(s.kl, 0.0) << s.step;
}

// Brute force: the same sliding window applied by hand to the model's KvState.
TEST(ClosedLoop, TeacherForcedLogitsMatchHandDrivenEviction) {
  const std::vector<int32_t> prompt = Prompt();
  const int64_t budget = 6;
  const int64_t steps = 12;
  const ClosedLoopResult r =
      RunClosedLoop(Stories().model, prompt, Options(budget, steps), Factory());
  const models::LlamaModel& model = Stories().model;
  models::KvState full = model.NewState();
  models::KvState evicted = model.NewState();
  const int64_t n = static_cast<int64_t>(prompt.size());
  model.Forward(prompt, full);
  model.Forward(prompt, evicted);
  auto keep_window = [&](models::KvState& s) {
    for (int l = 0; l < s.layers(); ++l) {
      for (int h = 0; h < s.kv_heads(); ++h) {
        std::vector<int64_t> old;
        for (const int64_t p : s.positions(l, h)) {
          if (p < s.next_position() - budget) old.push_back(p);
        }
        s.Drop(l, h, old);
      }
    }
  };
  keep_window(evicted);
  for (int64_t k = 0; k < steps; ++k) {
    const int32_t token[] = {r.full_tokens[static_cast<size_t>(n + k)]};
    const RowMatrixXf lf = model.Forward(token, full);
    const RowMatrixXf le = model.Forward(token, evicted);
    keep_window(evicted);
    const std::span<const float> f(lf.data(), static_cast<size_t>(lf.cols()));
    const std::span<const float> e(le.data(), static_cast<size_t>(le.cols()));
    const ClosedLoopStep& row = r.steps[static_cast<size_t>(k)];
    EXPECT_EQ(row.full_next, models::Argmax(f));
    EXPECT_EQ(row.teacher_next, models::Argmax(e));
    EXPECT_NEAR(row.kl, KlDivergence(f, e), 1e-6) << k;
    EXPECT_NEAR(row.nll_evicted, NegLogLikelihood(e, row.full_next), 1e-5) << k;
    EXPECT_DOUBLE_EQ(row.resident_mean, static_cast<double>(budget + 1));
  }
}

TEST(ClosedLoop, SmallerWindowsDivergeMore) {
  const std::vector<int32_t> prompt = Prompt();
  std::vector<double> kl;
  for (const int64_t budget : {4, 8, 16, 1000}) {
    kl.push_back(RunClosedLoop(Stories().model, prompt, Options(budget, 48), Factory()).kl_mean);
  }
  EXPECT_GT(kl[0], kl[1]);
  EXPECT_GT(kl[1], kl[2]);
  EXPECT_GT(kl[2], 0.0);
  EXPECT_EQ(kl[3], 0.0);
}

TEST(ClosedLoop, CallsHooksInReplayOrder) {
  std::vector<int32_t> prompt = Prompt();
  prompt.resize(5);
  std::vector<std::string> log;
  const LayerPolicyFactory spy = [&log](const policies::PolicySetup& setup) {
    static std::vector<std::string> ignored;
    return std::make_unique<Spy>(setup.layer == 0 ? &log : &ignored);
  };
  RunClosedLoop(Stories().model, prompt, Options(4, 2), spy);
  // Two evicting runs (teacher-forced, then free-running), each the same sequence.
  const std::vector<std::string> one = {"stats",     "budget",   "prefill:5", "select-prefill:4",
                                        "evicted:1", "step:5",   "select:5",  "evicted:1",
                                        "step:6",    "select:6", "evicted:1"};
  std::vector<std::string> expected = one;
  expected.insert(expected.end(), one.begin(), one.end());
  EXPECT_EQ(log, expected);
}

TEST(ClosedLoop, RefusesRewritesAndUnsupportedModes) {
  const std::vector<int32_t> prompt = Prompt();
  const LayerPolicyFactory rewriter = [](const policies::PolicySetup&) {
    return std::make_unique<Rewriter>();
  };
  try {
    RunClosedLoop(Stories().model, prompt, Options(4), rewriter);
    FAIL() << "no error";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("rewriter"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("rewrites"), std::string::npos) << e.what();
  }
  ClosedLoopOptions o = Options(4);
  o.replay.timing = EvictTiming::kBeforeAttend;
  EXPECT_THROW(RunClosedLoop(Stories().model, prompt, o, Factory()), InputError);
  o = Options(4);
  o.replay.gqa_mode = GqaMode::kQueryHead;
  EXPECT_THROW(RunClosedLoop(Stories().model, prompt, o, Factory()), InputError);
  o = Options(4, 100000);
  EXPECT_THROW(RunClosedLoop(Stories().model, prompt, o, Factory()), InputError);
}

}  // namespace
}  // namespace kvsim::sim
