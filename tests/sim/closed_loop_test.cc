#include "sim/closed_loop.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <numeric>
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

// Keeps the `budget` most recent positions like KeepRecent, and rewrites the newest resident
// entry's key and value to half their values at every evict phase (a stand-in for a merge or a
// quantization: the model must attend to the halved rows from then on).
class Halver final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "halver"; }
  void SelectVictims(const policies::EvictionRequest& request,
                     std::span<EvictionDecision> decisions) override {
    keep_.SelectVictims(request, decisions);
    for (const policies::StreamView& s : request.streams) {
      const std::vector<int64_t> sorted = s.cache->SortedPositions();
      const int64_t slot = s.cache->SlotOf(sorted.back());
      decisions[static_cast<size_t>(s.stream)].rewrites.push_back(
          EntryRewrite{.position = sorted.back(),
                       .key = 0.5f * s.cache->KeyRow(slot).transpose(),
                       .value = 0.5f * s.cache->ValueRow(slot).transpose(),
                       .merged_tokens = 0});
    }
  }

 private:
  KeepRecent keep_;
};

// Keeps the `budget` most recent positions like KeepRecent, and masks the oldest resident entry
// out of each decode step's attention (it is then evicted after the step): the model must attend
// as if that entry were already gone.
class MaskOldest final : public EvictionPolicy {
 public:
  std::string_view Name() const override { return "mask-oldest"; }
  bool AttendMask(const policies::StreamView& stream,
                  int64_t /*step*/,
                  const policies::QueryHistory& /*queries*/,
                  std::vector<uint8_t>& attend) override {
    const std::vector<int64_t> sorted = stream.cache->SortedPositions();
    attend[static_cast<size_t>(stream.cache->SlotOf(sorted.front()))] = 0;
    return true;
  }
  void SelectVictims(const policies::EvictionRequest& request,
                     std::span<EvictionDecision> decisions) override {
    keep_.SelectVictims(request, decisions);
  }

 private:
  KeepRecent keep_;
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

// Drops every position older than the `budget` most recent ones, in every layer and KV head (the
// sliding window of KeepRecent, applied by hand).
void KeepWindow(models::KvState& s, int64_t budget) {
  for (int l = 0; l < s.layers(); ++l) {
    for (int h = 0; h < s.kv_heads(); ++h) {
      std::vector<int64_t> old;
      for (const int64_t p : s.positions(l, h)) {
        if (p < s.next_position() - budget) old.push_back(p);
      }
      s.Drop(l, h, old);
    }
  }
}

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
  EXPECT_EQ(r.mass_recall_mean, 1.0);
  for (const double top : r.top_recall_mean) EXPECT_EQ(top, 1.0);
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
  KeepWindow(evicted, budget);
  for (int64_t k = 0; k < steps; ++k) {
    const int32_t token[] = {r.full_tokens[static_cast<size_t>(n + k)]};
    const RowMatrixXf lf = model.Forward(token, full);
    const RowMatrixXf le = model.Forward(token, evicted);
    KeepWindow(evicted, budget);
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

// Records every position's post-RoPE q and k of every layer (a run's own history).
class History final : public models::ForwardObserver {
 public:
  void OnLayer(const models::LayerActivations& act) override {
    if (static_cast<size_t>(act.layer) >= q_.size()) {
      q_.resize(static_cast<size_t>(act.layer) + 1);
      k_.resize(static_cast<size_t>(act.layer) + 1);
    }
    for (Eigen::Index r = 0; r < act.q.rows(); ++r) {
      q_[static_cast<size_t>(act.layer)].emplace_back(act.q.row(r));
      k_[static_cast<size_t>(act.layer)].emplace_back(act.k.row(r));
    }
  }
  const Eigen::RowVectorXf& q(int layer, int64_t pos) const {
    return q_[static_cast<size_t>(layer)][static_cast<size_t>(pos)];
  }
  const Eigen::RowVectorXf& k(int layer, int64_t pos) const {
    return k_[static_cast<size_t>(layer)][static_cast<size_t>(pos)];
  }

 private:
  std::vector<std::vector<Eigen::RowVectorXf>> q_, k_;  // [layer][position]
};

// Recall in the loop, recomputed from a hand-driven sliding-window state: at step t the teacher
// run's query attends (in the full-history sense) over every key it produced, and the window
// [t - budget, t] is what is resident when it attends.
TEST(ClosedLoop, InLoopRecallMatchesHandComputedAttention) {
  const std::vector<int32_t> prompt = Prompt();
  const int64_t budget = 6;
  const int64_t steps = 10;
  const ClosedLoopResult r =
      RunClosedLoop(Stories().model, prompt, Options(budget, steps), Factory());
  const models::LlamaModel& model = Stories().model;
  const models::ModelShape shape = model.config().Shape("test");
  const int d = shape.head_dim;
  const int g = shape.GroupSize();
  models::KvState evicted = model.NewState();
  History history;
  model.Forward(prompt, evicted, &history);
  KeepWindow(evicted, budget);
  const int64_t n = static_cast<int64_t>(prompt.size());
  double mass_sum = 0.0;
  for (int64_t k = 0; k < steps; ++k) {
    const int64_t t = n + k;
    const int32_t token[] = {r.full_tokens[static_cast<size_t>(t)]};
    model.Forward(token, evicted, &history);
    KeepWindow(evicted, budget);
    double mass = 0.0;
    std::array<double, 3> top{};
    for (int l = 0; l < shape.layers; ++l) {
      for (int h = 0; h < shape.q_heads; ++h) {
        const int kv = h / g;
        std::vector<double> w(static_cast<size_t>(t + 1));
        double max = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          const double logit =
              history.q(l, t).segment(h * d, d).dot(history.k(l, j).segment(kv * d, d)) /
              std::sqrt(static_cast<double>(d));
          w[static_cast<size_t>(j)] = logit;
          max = std::max(max, logit);
        }
        double total = 0.0;
        for (double& x : w) total += (x = std::exp(x - max));
        double kept = 0.0;
        for (int64_t j = t - budget; j <= t; ++j) kept += w[static_cast<size_t>(j)];
        mass += kept / total;
        std::vector<int64_t> order(static_cast<size_t>(t + 1));
        std::iota(order.begin(), order.end(), int64_t{0});
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
          return w[static_cast<size_t>(a)] > w[static_cast<size_t>(b)];
        });
        for (size_t i = 0; i < kClosedLoopTopK.size(); ++i) {
          const auto kk = std::min<int64_t>(kClosedLoopTopK[i], t + 1);
          int64_t hits = 0;
          for (int64_t rnk = 0; rnk < kk; ++rnk) hits += order[rnk] >= t - budget ? 1 : 0;
          top[i] += static_cast<double>(hits) / static_cast<double>(kk);
        }
      }
    }
    const double samples = shape.layers * shape.q_heads;
    const ClosedLoopStep& row = r.steps[static_cast<size_t>(k)];
    EXPECT_NEAR(row.mass_recall, mass / samples, 1e-5) << k;
    EXPECT_LT(row.mass_recall, 1.0) << k;  // the window really lost mass
    for (size_t i = 0; i < top.size(); ++i) {
      EXPECT_NEAR(row.top_recall[i], top[i] / samples, 1e-9) << k << " k=" << i;
    }
    mass_sum += row.mass_recall;
  }
  EXPECT_NEAR(r.mass_recall_mean, mass_sum / static_cast<double>(steps), 1e-12);
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

// Hand-driven: the same eviction, and the newest entry of every (layer, head) halved after each
// evict phase, written straight into a KvState.
TEST(ClosedLoop, ModelAttendsToRewrittenEntriesAsStored) {
  const std::vector<int32_t> prompt = Prompt();
  const int64_t budget = 6, steps = 10;
  const LayerPolicyFactory halver = [](const policies::PolicySetup&) {
    return std::make_unique<Halver>();
  };
  const ClosedLoopResult r = RunClosedLoop(Stories().model, prompt, Options(budget, steps), halver);
  const models::LlamaModel& model = Stories().model;
  models::KvState full = model.NewState();
  models::KvState evicted = model.NewState();
  model.Forward(prompt, full);
  model.Forward(prompt, evicted);
  auto evict_and_halve = [&](models::KvState& s) {
    for (int l = 0; l < s.layers(); ++l) {
      for (int h = 0; h < s.kv_heads(); ++h) {
        std::vector<int64_t> old;
        for (const int64_t p : s.positions(l, h)) {
          if (p < s.next_position() - budget) old.push_back(p);
        }
        const int64_t newest = s.positions(l, h).back();
        const auto last = s.size(l, h) - 1;
        const Eigen::VectorXf k = 0.5f * s.keys(l, h).row(last).transpose();
        const Eigen::VectorXf v = 0.5f * s.values(l, h).row(last).transpose();
        s.Overwrite(l, h, newest, k.data(), v.data());
        s.Drop(l, h, old);
      }
    }
  };
  evict_and_halve(evicted);
  const int64_t n = static_cast<int64_t>(prompt.size());
  double kl_sum = 0.0;
  for (int64_t k = 0; k < steps; ++k) {
    const int32_t token[] = {r.full_tokens[static_cast<size_t>(n + k)]};
    const RowMatrixXf lf = model.Forward(token, full);
    const RowMatrixXf le = model.Forward(token, evicted);
    evict_and_halve(evicted);
    const std::span<const float> f(lf.data(), static_cast<size_t>(lf.cols()));
    const std::span<const float> e(le.data(), static_cast<size_t>(le.cols()));
    const ClosedLoopStep& row = r.steps[static_cast<size_t>(k)];
    EXPECT_EQ(row.teacher_next, models::Argmax(e)) << k;
    EXPECT_NEAR(row.kl, KlDivergence(f, e), 1e-6) << k;
    kl_sum += row.kl;
  }
  // Halving differs from plain eviction: the rewrites really reached the model.
  const ClosedLoopResult plain =
      RunClosedLoop(Stories().model, prompt, Options(budget, steps), Factory());
  EXPECT_NE(kl_sum / steps, plain.kl_mean);
}

// Hand-driven: masking the oldest entry at a step, then evicting it, is evicting it before the
// step attends.
TEST(ClosedLoop, ModelAppliesThePolicysAttendMask) {
  const std::vector<int32_t> prompt = Prompt();
  const int64_t budget = 6, steps = 10;
  const LayerPolicyFactory masker = [](const policies::PolicySetup&) {
    return std::make_unique<MaskOldest>();
  };
  const ClosedLoopResult r = RunClosedLoop(Stories().model, prompt, Options(budget, steps), masker);
  const models::LlamaModel& model = Stories().model;
  models::KvState full = model.NewState();
  models::KvState evicted = model.NewState();
  model.Forward(prompt, full);
  model.Forward(prompt, evicted);
  auto keep_newest = [&](models::KvState& s, int64_t keep) {
    for (int l = 0; l < s.layers(); ++l) {
      for (int h = 0; h < s.kv_heads(); ++h) {
        std::vector<int64_t> old;
        for (const int64_t p : s.positions(l, h)) {
          if (p < s.next_position() - keep) old.push_back(p);
        }
        s.Drop(l, h, old);
      }
    }
  };
  keep_newest(evicted, budget);
  const int64_t n = static_cast<int64_t>(prompt.size());
  for (int64_t k = 0; k < steps; ++k) {
    const int32_t token[] = {r.full_tokens[static_cast<size_t>(n + k)]};
    const RowMatrixXf lf = model.Forward(token, full);
    keep_newest(evicted, budget - 1);  // the entry the mask hides at this step
    const RowMatrixXf le = model.Forward(token, evicted);
    const std::span<const float> f(lf.data(), static_cast<size_t>(lf.cols()));
    const std::span<const float> e(le.data(), static_cast<size_t>(le.cols()));
    const ClosedLoopStep& row = r.steps[static_cast<size_t>(k)];
    EXPECT_EQ(row.teacher_next, models::Argmax(e)) << k;
    EXPECT_NEAR(row.kl, KlDivergence(f, e), 1e-6) << k;
  }
}

TEST(ClosedLoop, RefusesUnsupportedModes) {
  const std::vector<int32_t> prompt = Prompt();
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
