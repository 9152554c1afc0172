// Token importance recurrence (analysis/recurrence.h) and the comparison LazyEviction is built
// for (arXiv 2506.15969, card 10): on recurring tokens it should lose fewer than H2O.
#include "analysis/recurrence.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <vector>

#include "policies/registry.h"
#include "sim/random_trace.h"
#include "sim/replay.h"
#include "traces/synthetic/synthetic.h"

namespace kvsim::analysis {
namespace {

using Positions = std::vector<int64_t>;

TEST(ImportanceRule, ParsesTheThreeKinds) {
  EXPECT_EQ(ImportanceRule::Parse("topk:8", "--importance").kind, ImportanceRule::Kind::kTopRank);
  const ImportanceRule mass = ImportanceRule::Parse("mass:0.9", "--importance");
  EXPECT_EQ(mass.kind, ImportanceRule::Kind::kMass);
  EXPECT_DOUBLE_EQ(mass.value, 0.9);
  EXPECT_EQ(ImportanceRule::Parse("weight:1e-4", "--importance").text, "weight:1e-4");
  for (const char* bad :
       {"topk", "topk:0", "topk:2.5", "mass:1.5", "weight:0", "size:3", "mass:x"}) {
    try {
      ImportanceRule::Parse(bad, "--importance");
      ADD_FAILURE() << bad << " was accepted";
    } catch (const InputError& e) {
      EXPECT_NE(std::string(e.what()).find("--importance"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(bad), std::string::npos) << e.what();
    }
  }
}

TEST(ImportanceRule, SelectsByRankMassOrWeight) {
  const std::vector<float> w = {0.1f, 0.4f, 0.05f, 0.3f, 0.1f, 0.05f};
  EXPECT_EQ(ImportantPositions(w, ImportanceRule::Parse("topk:2", "")), (Positions{1, 3}));
  // Ties (0 and 4 at 0.1) break toward the lower position.
  EXPECT_EQ(ImportantPositions(w, ImportanceRule::Parse("topk:3", "")), (Positions{0, 1, 3}));
  EXPECT_EQ(ImportantPositions(w, ImportanceRule::Parse("topk:99", "")).size(), 6u);
  // Largest first: 0.4 + 0.3 reaches 0.69; 0.75 needs the next (0.1, the lower of a tie).
  EXPECT_EQ(ImportantPositions(w, ImportanceRule::Parse("mass:0.69", "")), (Positions{1, 3}));
  EXPECT_EQ(ImportantPositions(w, ImportanceRule::Parse("mass:0.75", "")), (Positions{0, 1, 3}));
  EXPECT_EQ(ImportantPositions(w, ImportanceRule::Parse("weight:0.1", "")),
            (Positions{0, 1, 3, 4}));
}

// One head, d = 16, prompt of 4 orthogonal keys 4 e_j, decode keys 0. Decode query i aims at
// prompt key targets[i] (20 e_j: weight > 0.999), so with topk:1 exactly the target is important.
traces::Trace TargetTrace(const std::vector<int>& targets) {
  constexpr int kDim = 16;
  constexpr int64_t kPrompt = 4;
  const auto total = kPrompt + static_cast<int64_t>(targets.size());
  traces::TraceMeta meta;
  meta.shape = {.name = "hand", .layers = 1, .q_heads = 1, .kv_heads = 1, .head_dim = kDim};
  meta.prompt_len = kPrompt;
  meta.total_len = total;
  meta.token_ids.assign(static_cast<size_t>(total), 0);
  traces::LayerTensors layer;
  layer.queries = HeadTensor(1, total, kDim);
  layer.keys = HeadTensor(1, total, kDim);
  layer.values = HeadTensor(1, total, kDim);
  for (int64_t j = 0; j < kPrompt; ++j) layer.keys.Row(0, j)[j] = 4.0f;
  for (size_t i = 0; i < targets.size(); ++i) {
    layer.queries.Row(0, kPrompt + static_cast<int64_t>(i))[targets[i]] = 20.0f;
  }
  std::vector<traces::LayerTensors> layers;
  layers.push_back(std::move(layer));
  return traces::Trace(meta, std::move(layers));
}

// Targets by decode step 0..9: 0 0 1 0 2 2 0 1 3 0. Token 0 at steps 0,1,3,6,9: intervals
// 1,2,3,3; token 1 at 2,7: 5; token 2 at 4,5: 1; token 3 once. Histogram {1:2, 2:1, 3:2, 5:1};
// 4 important tokens, 2 recurring (a gap >= 2: tokens 0 and 1), and with W = 3 one long
// recurrence (interval - 1 >= 3: token 1).
TEST(Recurrence, CountsIntervalsOfHandBuiltPattern) {
  const traces::Trace trace = TargetTrace({0, 0, 1, 0, 2, 2, 0, 1, 3, 0});
  const FullCacheAttention full(trace, 0);
  const LayerImportance importance(full, ImportanceRule::Parse("topk:1", ""));
  EXPECT_EQ(std::vector<int64_t>(importance.Steps(0, 1).begin(), importance.Steps(0, 1).end()),
            (Positions{6, 11}));
  EXPECT_EQ(importance.CountAfter(0, 0, 7), 2);  // steps 10 and 13
  const RecurrenceStats stats = AnalyzeRecurrence(importance, 3);
  const std::map<int64_t, int64_t> expected = {{1, 2}, {2, 1}, {3, 2}, {5, 1}};
  EXPECT_EQ(stats.interval_counts, expected);
  EXPECT_EQ(stats.important_tokens, 4);
  EXPECT_EQ(stats.recurring_tokens, 2);
  EXPECT_EQ(stats.long_recurring_tokens, 1);
}

// Harm by hand: `streaming` with 1 sink and budget 2 (recent window 1) keeps token 0 and the
// newest. After prefill it evicts 1 and 2 (keeps 0 and 3); at decode step 4 (target 0) it
// evicts 3. Targets 0 1 0 2 3: token 1 important at step 5, token 2 at 7, token 3 at 8 -> all 3
// evicted tokens recur, 3 lost importance events.
TEST(Recurrence, HarmCountsEvictedTokensImportantLater) {
  const traces::Trace trace = TargetTrace({0, 1, 0, 2, 3});
  const FullCacheAttention full(trace, 0);
  const LayerImportance importance(full, ImportanceRule::Parse("topk:1", ""));
  const FullCacheAttention* full_ptr[] = {&full};
  const LayerImportance* importance_ptr[] = {&importance};
  policies::PolicyParams params;
  params.Set("sinks", "1");
  const std::vector<EvictionHarm> harm =
      MeasureEvictionHarm(trace, full_ptr, importance_ptr, "streaming", params,
                          sim::Budget::Parse("2", "--budget"), sim::ReplayOptions{});
  ASSERT_EQ(harm.size(), 1u);
  EXPECT_EQ(harm[0].budget_tokens, 2);
  EXPECT_EQ(harm[0].evicted_recurring, 3);
  EXPECT_EQ(harm[0].lost_important_events, 3);
  EXPECT_GE(harm[0].evicted_tokens, 3);
}

// The recorder's eviction steps agree with an independent reconstruction from the resident sets
// the replay's observer sees (a token resident at step t and gone at t + 1 was evicted at t).
class ResidentObserver final : public sim::ReplayObserver {
 public:
  void OnMeasure(const sim::MeasureView& view) override {
    std::vector<std::set<int64_t>> sets;
    for (const policies::StreamView& s : view.streams) {
      const std::vector<int64_t> p = s.cache->SortedPositions();
      sets.emplace_back(p.begin(), p.end());
    }
    resident.push_back(std::move(sets));
  }
  std::vector<std::vector<std::set<int64_t>>> resident;  // [step - n][stream]
};

TEST(Recurrence, HarmMatchesResidentSetReconstruction) {
  const models::ModelShape shape = {
      .name = "tiny", .layers = 1, .q_heads = 4, .kv_heads = 2, .head_dim = 8};
  const traces::Trace trace = sim::RandomTrace(shape, 24, 64, 11);
  const FullCacheAttention full(trace, 0);
  const LayerImportance importance(full, ImportanceRule::Parse("topk:4", ""));
  const FullCacheAttention* full_ptr[] = {&full};
  const LayerImportance* importance_ptr[] = {&importance};
  for (const std::string_view name : {"h2o", "lazy-eviction"}) {
    policies::PolicyParams params;
    if (name == "lazy-eviction") params.Set("window", "4");
    const std::vector<EvictionHarm> harm =
        MeasureEvictionHarm(trace, full_ptr, importance_ptr, name, params,
                            sim::Budget::Parse("10", "--budget"), sim::ReplayOptions{});

    policies::PolicySetup setup;
    setup.shape = shape;
    setup.prompt_len = 24;
    setup.total_len = 64;
    auto policy = policies::MakePolicy(name, params, setup);
    sim::PrefillAttention prefill(trace.layer(0), 24);
    sim::LayerReplayInput input;
    input.trace = &trace;
    input.budget_tokens = 10;
    input.prefill = &prefill;
    ResidentObserver observer;
    sim::ReplayLayer(input, *policy, &observer);
    int64_t recurring = 0, lost = 0;
    for (int s = 0; s < 2; ++s) {
      for (int64_t p = 0; p < 64; ++p) {
        // Last step measured with p resident; evicted after prefill = 23.
        int64_t kept_through = -1;
        bool seen = false;
        for (size_t i = 0; i < observer.resident.size(); ++i) {
          if (observer.resident[i][s].count(p) != 0) {
            seen = true;
            kept_through = 24 + static_cast<int64_t>(i);
          }
        }
        if (!seen && p >= 24) continue;  // decode token evicted at its own step: none with h2o here
        if (!seen) kept_through = 23;
        if (kept_through == 63) continue;  // never evicted (or only after the last step)
        int64_t events = 0;
        for (int q = 2 * s; q < 2 * s + 2; ++q) events += importance.CountAfter(q, p, kept_through);
        lost += events;
        recurring += events > 0 ? 1 : 0;
      }
    }
    EXPECT_EQ(harm[0].evicted_recurring, recurring) << name;
    EXPECT_EQ(harm[0].lost_important_events, lost) << name;
    EXPECT_GT(lost, 0);
  }
}

struct Comparison {
  double mass_recall = 0;
  EvictionHarm harm;
  int64_t recurring_lost = 0;  // (stream, ground-truth recurring token) not resident at the end
};

// Mass recall (LayerMetrics) and, at the last step, the resident sets.
class EndObserver final : public sim::ReplayObserver {
 public:
  explicit EndObserver(const FullCacheAttention& full) : metrics(full) {}
  void OnMeasure(const sim::MeasureView& view) override {
    metrics.OnMeasure(view);
    last.clear();
    for (const policies::StreamView& s : view.streams) {
      const std::vector<int64_t> p = s.cache->SortedPositions();
      last.emplace_back(p.begin(), p.end());
    }
  }
  LayerMetrics metrics;
  std::vector<std::set<int64_t>> last;
};

Comparison Measure(const traces::synthetic::SynthTrace& synth,
                   const FullCacheAttention& full,
                   const LayerImportance& importance,
                   std::string_view policy,
                   int64_t budget,
                   const policies::PolicyParams& params = {}) {
  const traces::Trace& trace = synth.trace;
  const FullCacheAttention* full_ptr[] = {&full};
  const LayerImportance* importance_ptr[] = {&importance};
  Comparison c;
  c.harm = MeasureEvictionHarm(trace, full_ptr, importance_ptr, policy, params,
                               sim::Budget::Parse(std::to_string(budget), "--budget"),
                               sim::ReplayOptions{})[0];
  policies::PolicySetup setup;
  setup.shape = trace.shape();
  setup.prompt_len = trace.meta().prompt_len;
  setup.total_len = trace.meta().total_len;
  auto instance = policies::MakePolicy(policy, params, setup);
  sim::PrefillAttention prefill(trace.layer(0), setup.prompt_len);
  sim::LayerReplayInput input;
  input.trace = &trace;
  input.budget_tokens = budget;
  input.prefill = &prefill;
  EndObserver observer(full);
  sim::ReplayLayer(input, *instance, &observer);
  c.mass_recall = Mean(observer.metrics.samples().mass_recall);
  for (const std::set<int64_t>& resident : observer.last) {
    for (const traces::synthetic::RecurringToken& token : synth.layout.recurring) {
      c.recurring_lost += resident.count(token.position) == 0 ? 1 : 0;
    }
  }
  return c;
}

traces::synthetic::SynthTrace Synthetic(traces::synthetic::Scenario scenario) {
  traces::synthetic::SynthParams params = traces::synthetic::ScenarioParams(scenario);
  params.prompt_len = 256;
  params.decode_len = 512;
  params.seed = 3;
  const models::ModelShape shape = {
      .name = "s", .layers = 1, .q_heads = 4, .kv_heads = 2, .head_dim = 64};
  return traces::synthetic::GenerateSynthetic(shape, params);
}

// Acceptance (card 10), W = 128, C = 192 and 256 (> W: at C <= W the protected window is the
// whole budget), 4 query heads, prompt 256, 512 decode steps. Recurrence scenario (16 prompt
// tokens, on 16 steps, off 128); ground truth = (stream, recurring token) pairs no longer
// resident at the end. Measured (printed):
//  - alpha = 1e-4 (default): the average weight here is ~1/400 >> alpha, so noise tokens count
//    as attended every few steps, get small MRIs and outrank the genuine long-MRI recurring
//    tokens: all 32 are lost (mass recall 0.81 vs H2O 0.97 at C = 192) - card 10 (h), alpha is
//    absolute;
//  - alpha = 0.01 (calibrated to this context length): none lost, mass recall 0.977 / 0.984 vs
//    H2O 0.968 / 0.977. H2O loses none either (their accumulated score keeps them).
// No-recurrence scenario, default alpha: mass recall within 0.05 of H2O (0.994 vs 0.992).
// LazyEviction holds up to C + W - 1 between rounds, H2O exactly C.
TEST(Recurrence, LazyEvictionVersusH2OOnRecurringTokens) {
  const ImportanceRule rule = ImportanceRule::Parse("topk:8", "");
  const auto recurrence = Synthetic(traces::synthetic::Scenario::kRecurrence);
  const FullCacheAttention recurrence_full(recurrence.trace, 0);
  const LayerImportance recurrence_importance(recurrence_full, rule);
  const auto flat = Synthetic(traces::synthetic::Scenario::kNoRecurrence);
  const FullCacheAttention flat_full(flat.trace, 0);
  const LayerImportance flat_importance(flat_full, rule);
  policies::PolicyParams calibrated;
  calibrated.Set("alpha", "0.01");
  for (const int64_t budget : {192, 256}) {
    const Comparison lazy =
        Measure(recurrence, recurrence_full, recurrence_importance, "lazy-eviction", budget);
    const Comparison lazy_calibrated = Measure(recurrence, recurrence_full, recurrence_importance,
                                               "lazy-eviction", budget, calibrated);
    const Comparison h2o =
        Measure(recurrence, recurrence_full, recurrence_importance, "h2o", budget);
    for (const auto& [name, c] :
         {std::pair{"lazy", &lazy}, std::pair{"lazy alpha=0.01", &lazy_calibrated},
          std::pair{"h2o", &h2o}}) {
      std::printf(
          "[ recurrence ] C %lld %s: recurring tokens lost %lld, evicted-then-important %lld, "
          "mass recall %.4f\n",
          static_cast<long long>(budget), name, static_cast<long long>(c->recurring_lost),
          static_cast<long long>(c->harm.evicted_recurring), c->mass_recall);
    }
    EXPECT_GT(lazy.recurring_lost, 0) << "C " << budget;
    EXPECT_LE(lazy_calibrated.recurring_lost, h2o.recurring_lost) << "C " << budget;
    EXPECT_GE(lazy_calibrated.mass_recall, h2o.mass_recall) << "C " << budget;
    const Comparison flat_lazy = Measure(flat, flat_full, flat_importance, "lazy-eviction", budget);
    const Comparison flat_h2o = Measure(flat, flat_full, flat_importance, "h2o", budget);
    std::printf("[ no-recurrence ] C %lld: mass recall lazy %.4f h2o %.4f\n",
                static_cast<long long>(budget), flat_lazy.mass_recall, flat_h2o.mass_recall);
    EXPECT_GE(flat_lazy.mass_recall, flat_h2o.mass_recall - 0.05) << "C " << budget;
  }
}

}  // namespace
}  // namespace kvsim::analysis
