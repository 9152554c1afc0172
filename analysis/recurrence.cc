#include "analysis/recurrence.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>
#include <numeric>

#include "common/error.h"
#include "policies/registry.h"
#include "sim/prefill_attention.h"
#include "sim/replay.h"

namespace kvsim::analysis {
namespace {

// Positions of `weights` by decreasing weight, ties by lower position.
std::vector<int64_t> ByWeight(std::span<const float> weights) {
  std::vector<int64_t> order(weights.size());
  std::iota(order.begin(), order.end(), int64_t{0});
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return weights[static_cast<size_t>(a)] > weights[static_cast<size_t>(b)];
  });
  return order;
}

// Forwards every hook to the wrapped policy and records what left each stream at which step.
class EvictionRecorder final : public policies::OraclePolicy {
 public:
  struct Eviction {
    int stream = 0;
    int64_t position = 0;
    int64_t step = 0;  // the evict phase's step (prompt_len - 1 right after prefill)
    bool after_prefill = false;
  };

  explicit EvictionRecorder(policies::EvictionPolicy& inner) : inner_(inner) {}

  std::string_view Name() const override { return inner_.Name(); }
  int64_t BudgetSlackTokens() const override { return inner_.BudgetSlackTokens(); }
  void AttachFuture(const policies::FutureView& future) override {
    if (auto* oracle = dynamic_cast<policies::OraclePolicy*>(&inner_)) oracle->AttachFuture(future);
  }
  void OnPrefill(const policies::PrefillView& prefill) override { inner_.OnPrefill(prefill); }
  void OnStep(const policies::StepView& step) override { inner_.OnStep(step); }
  void SelectVictims(const policies::EvictionRequest& request,
                     std::span<sim::EvictionDecision> decisions) override {
    step_ = request.step;
    after_prefill_ = request.after_prefill;
    inner_.SelectVictims(request, decisions);
  }
  void OnEvicted(int stream, std::span<const int64_t> positions) override {
    for (int64_t p : positions) evictions_.push_back({stream, p, step_, after_prefill_});
    inner_.OnEvicted(stream, positions);
  }
  int64_t StateBytes() const override { return inner_.StateBytes(); }

  const std::vector<Eviction>& evictions() const { return evictions_; }

 private:
  policies::EvictionPolicy& inner_;
  int64_t step_ = 0;
  bool after_prefill_ = false;
  std::vector<Eviction> evictions_;
};

}  // namespace

ImportanceRule ImportanceRule::Parse(std::string_view text, std::string_view context) {
  const auto fail = [&]() {
    ThrowInputError(
        "{}: '{}' is not an importance rule: expected topk:K (integer K >= 1), mass:P (0 < P "
        "<= 1) or weight:A (0 < A <= 1)",
        context, text);
  };
  const size_t colon = text.find(':');
  if (colon == std::string_view::npos) fail();
  const std::string_view kind = text.substr(0, colon);
  const std::string value_text(text.substr(colon + 1));
  double value = 0;
  const auto [end, ec] =
      std::from_chars(value_text.data(), value_text.data() + value_text.size(), value);
  if (ec != std::errc() || end != value_text.data() + value_text.size() || !std::isfinite(value)) {
    fail();
  }
  ImportanceRule rule;
  rule.value = value;
  rule.text = std::string(text);
  if (kind == "topk") {
    rule.kind = Kind::kTopRank;
    if (value < 1 || value != std::floor(value)) fail();
  } else if (kind == "mass") {
    rule.kind = Kind::kMass;
    if (!(value > 0 && value <= 1)) fail();
  } else if (kind == "weight") {
    rule.kind = Kind::kWeight;
    if (!(value > 0 && value <= 1)) fail();
  } else {
    fail();
  }
  return rule;
}

std::vector<int64_t> ImportantPositions(std::span<const float> weights,
                                        const ImportanceRule& rule) {
  std::vector<int64_t> important;
  switch (rule.kind) {
    case ImportanceRule::Kind::kWeight:
      for (size_t j = 0; j < weights.size(); ++j) {
        if (static_cast<double>(weights[j]) >= rule.value) {
          important.push_back(static_cast<int64_t>(j));
        }
      }
      return important;
    case ImportanceRule::Kind::kTopRank: {
      std::vector<int64_t> order = ByWeight(weights);
      order.resize(std::min(order.size(), static_cast<size_t>(rule.value)));
      std::sort(order.begin(), order.end());
      return order;
    }
    case ImportanceRule::Kind::kMass: {
      const std::vector<int64_t> order = ByWeight(weights);
      double mass = 0;
      for (int64_t j : order) {
        important.push_back(j);
        mass += static_cast<double>(weights[static_cast<size_t>(j)]);
        if (mass >= rule.value) break;
      }
      std::sort(important.begin(), important.end());
      return important;
    }
  }
  return important;
}

LayerImportance::LayerImportance(const FullCacheAttention& full, const ImportanceRule& rule)
    : num_q_heads_(full.num_q_heads()),
      total_len_(full.total_len()),
      steps_(static_cast<size_t>(num_q_heads_) * static_cast<size_t>(total_len_)) {
  for (int h = 0; h < num_q_heads_; ++h) {
    for (int64_t t = full.prompt_len(); t < total_len_; ++t) {
      for (int64_t j : ImportantPositions(full.FullAttention(h, t), rule)) {
        steps_[static_cast<size_t>(h * total_len_ + j)].push_back(t);
      }
    }
  }
}

std::span<const int64_t> LayerImportance::Steps(int q_head, int64_t position) const {
  return steps_[static_cast<size_t>(q_head * total_len_ + position)];
}

int64_t LayerImportance::CountAfter(int q_head, int64_t position, int64_t step) const {
  const std::span<const int64_t> steps = Steps(q_head, position);
  return steps.end() - std::upper_bound(steps.begin(), steps.end(), step);
}

void RecurrenceStats::Merge(const RecurrenceStats& other) {
  for (const auto& [interval, count] : other.interval_counts) interval_counts[interval] += count;
  important_tokens += other.important_tokens;
  recurring_tokens += other.recurring_tokens;
  long_recurring_tokens += other.long_recurring_tokens;
}

RecurrenceStats AnalyzeRecurrence(const LayerImportance& importance, int64_t window) {
  KVSIM_ASSERT(window >= 1, "recurrence window {} < 1", window);
  RecurrenceStats stats;
  for (int h = 0; h < importance.num_q_heads(); ++h) {
    for (int64_t j = 0; j < importance.total_len(); ++j) {
      const std::span<const int64_t> steps = importance.Steps(h, j);
      if (steps.empty()) continue;
      ++stats.important_tokens;
      bool recurs = false;
      bool long_recurs = false;
      for (size_t i = 1; i < steps.size(); ++i) {
        const int64_t interval = steps[i] - steps[i - 1];
        ++stats.interval_counts[interval];
        recurs = recurs || interval >= 2;
        long_recurs = long_recurs || interval - 1 >= window;
      }
      stats.recurring_tokens += recurs ? 1 : 0;
      stats.long_recurring_tokens += long_recurs ? 1 : 0;
    }
  }
  return stats;
}

void EvictionHarm::Merge(const EvictionHarm& other) {
  evicted_tokens += other.evicted_tokens;
  evicted_recurring += other.evicted_recurring;
  lost_important_events += other.lost_important_events;
}

std::vector<EvictionHarm> MeasureEvictionHarm(const traces::Trace& trace,
                                              std::span<const FullCacheAttention* const> full,
                                              std::span<const LayerImportance* const> importance,
                                              std::string_view policy,
                                              const policies::PolicyParams& params,
                                              const sim::Budget& budget,
                                              const sim::ReplayOptions& options) {
  const int layers = trace.num_layers();
  KVSIM_ASSERT(
      static_cast<int>(full.size()) == layers && static_cast<int>(importance.size()) == layers,
      "harm needs every layer's attention and importance");
  const traces::TraceMeta& meta = trace.meta();
  std::vector<std::unique_ptr<sim::PrefillAttention>> prefill;
  std::vector<std::unique_ptr<policies::EvictionPolicy>> instances;
  std::vector<const sim::PrefillAttention*> prefill_ptrs;
  std::vector<policies::EvictionPolicy*> instance_ptrs;
  std::vector<policies::PolicySetup> setups;
  for (int l = 0; l < layers; ++l) {
    policies::PolicySetup setup;
    setup.shape = trace.shape();
    setup.layer = l;
    setup.options = options;
    setup.prompt_len = meta.prompt_len;
    setup.total_len = meta.total_len;
    setup.seed = sim::LayerSeed(options.seed, l);
    setups.push_back(setup);
    prefill.push_back(std::make_unique<sim::PrefillAttention>(trace.layer(l), meta.prompt_len));
    prefill_ptrs.push_back(prefill.back().get());
    instances.push_back(policies::MakePolicy(policy, params, setup));
    instance_ptrs.push_back(instances.back().get());
  }
  const std::vector<int64_t> budgets = sim::PlanLayerBudgets(trace, instance_ptrs, prefill_ptrs,
                                                             budget.ResolveTokens(meta.prompt_len));
  const bool before_attend = options.timing == sim::EvictTiming::kBeforeAttend;
  std::vector<EvictionHarm> harm(static_cast<size_t>(layers));
  for (int l = 0; l < layers; ++l) {
    const auto li = static_cast<size_t>(l);
    EvictionRecorder recorder(*instances[li]);
    sim::LayerReplayInput input;
    input.trace = &trace;
    input.layer = l;
    input.options = options;
    input.budget_tokens = budgets[li];
    input.prefill = prefill_ptrs[li];
    input.future = full[li];
    sim::ReplayLayer(input, recorder, nullptr);
    EvictionHarm& h = harm[li];
    h.budget_tokens = budgets[li];
    const policies::PolicySetup& setup = setups[li];
    for (const EvictionRecorder::Eviction& e : recorder.evictions()) {
      // Last step still measured with the token resident.
      const int64_t kept_through = (before_attend && !e.after_prefill) ? e.step - 1 : e.step;
      ++h.evicted_tokens;
      int64_t lost = 0;
      const int first = setup.FirstQueryHead(e.stream);
      for (int q = first; q < first + setup.queries_per_stream(); ++q) {
        lost += importance[li]->CountAfter(q, e.position, kept_through);
      }
      h.lost_important_events += lost;
      h.evicted_recurring += lost > 0 ? 1 : 0;
    }
  }
  return harm;
}

}  // namespace kvsim::analysis
