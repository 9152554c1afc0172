#include "sim/serving/live_scores.h"

#include <algorithm>
#include <functional>
#include <map>

#include "common/error.h"
#include "policies/registry.h"
#include "sim/kv_cache.h"
#include "sim/prefill_attention.h"

namespace kvsim::serving {
namespace {

policies::PolicySetup SetupFor(const traces::TraceMeta& meta,
                               const sim::ReplayOptions& options,
                               int layer) {
  policies::PolicySetup setup;
  setup.shape = meta.shape;
  setup.layer = layer;
  setup.options = options;
  setup.prompt_len = meta.prompt_len;
  setup.total_len = meta.total_len;
  setup.seed = sim::LayerSeed(options.seed, layer);
  return setup;
}

// One running sequence: its policy instances and replays, one per layer.
struct LiveSequence {
  int trace = 0;
  // The pool's budgets so far (entry k for decode position prompt_len + k). Sized once: the
  // replays hold a span of it.
  std::vector<int64_t> schedule;
  int64_t base = 0;  // the policy's own budget, clamped to [1, total_len] (serve.cc's `planned`)
  std::vector<std::unique_ptr<policies::EvictionPolicy>> policies;
  std::vector<std::unique_ptr<sim::LayerReplay>> replays;
};

class LiveScorer final : public SequenceScorer {
 public:
  explicit LiveScorer(LiveScoresInput input) : in_(std::move(input)) {}

  bool Value(int64_t id, std::vector<double>& value) override {
    const auto it = live_.find(id);
    if (it == live_.end()) return false;
    // Per (layer, stream): resident scores normalised to sum 1, sorted descending; the curve is
    // their mean, position by position.
    value.clear();
    int64_t curves = 0;
    for (size_t l = 0; l < it->second.replays.size(); ++l) {
      for (const policies::StreamView& stream : it->second.replays[l]->streams()) {
        const bool scored =
            it->second.policies[l]->ResidentScores(stream.stream, *stream.cache, scores_);
        KVSIM_ASSERT(scored, "policy {} has no resident scores", in_.policy.name);
        double sum = 0.0;
        for (const double s : scores_) sum += s;
        std::sort(scores_.begin(), scores_.end(), std::greater<>());
        if (value.size() < scores_.size()) value.resize(scores_.size(), 0.0);
        for (size_t j = 0; j < scores_.size(); ++j) {
          value[j] += sum > 0.0 ? scores_[j] / sum : 0.0;
        }
        ++curves;
      }
    }
    for (double& v : value) v /= static_cast<double>(curves);
    return true;
  }

  void Decode(int64_t id, int64_t k, int64_t budget) override {
    auto it = live_.find(id);
    if (it == live_.end()) {
      // Built in place: the replays hold spans of the node's schedule.
      it = live_.try_emplace(id).first;
      Start(id, it->second);
    }
    LiveSequence& s = it->second;
    KVSIM_ASSERT(k >= 0 && k < static_cast<int64_t>(s.schedule.size()),
                 "request {}: decode step {} outside its trace", id, k);
    s.schedule[static_cast<size_t>(k)] = std::clamp<int64_t>(budget, 1, s.base);
    const int64_t prompt_len = in_.traces[static_cast<size_t>(s.trace)]->meta().prompt_len;
    for (const auto& replay : s.replays) replay->AdvanceThrough(prompt_len - 1 + k);
  }

  void Done(int64_t id) override { live_.erase(id); }

 private:
  void Start(int64_t id, LiveSequence& s) {
    s.trace = in_.request_trace.at(static_cast<size_t>(id));
    const traces::Trace& trace = *in_.traces.at(static_cast<size_t>(s.trace));
    const traces::TraceMeta& meta = trace.meta();
    s.schedule.assign(static_cast<size_t>(meta.decode_len()), 0);
    s.base = std::clamp<int64_t>(in_.own_budget_tokens.at(static_cast<size_t>(s.trace)), 1,
                                 meta.total_len);
    const int layers = trace.num_layers();
    std::vector<policies::EvictionPolicy*> ptrs;
    std::vector<const sim::PrefillAttention*> prefill;
    for (int l = 0; l < layers; ++l) {
      s.policies.push_back(
          policies::MakePolicy(in_.policy.name, in_.policy.params, SetupFor(meta, in_.options, l)));
      ptrs.push_back(s.policies.back().get());
      prefill.push_back(&Prefill(s.trace, l));
    }
    const std::vector<int64_t> budgets = sim::PlanLayerBudgets(trace, ptrs, prefill, s.base);
    for (int l = 0; l < layers; ++l) {
      sim::LayerReplayInput input;
      input.trace = &trace;
      input.layer = l;
      input.options = in_.options;
      input.budget_tokens = budgets[static_cast<size_t>(l)];
      input.prefill = prefill[static_cast<size_t>(l)];
      input.budget_schedule = s.schedule;
      input.schedule_base = s.base;
      sim::ReplayObserver* observer = in_.observe ? in_.observe(id, l) : nullptr;
      s.replays.push_back(
          std::make_unique<sim::LayerReplay>(input, *ptrs[static_cast<size_t>(l)], observer));
    }
  }

  // Prompt statistics are shared by every request of a trace (computed on first use).
  const sim::PrefillAttention& Prefill(int trace, int layer) {
    std::unique_ptr<sim::PrefillAttention>& p = prefill_[{trace, layer}];
    if (!p) {
      p = std::make_unique<sim::PrefillAttention>(
          in_.traces[static_cast<size_t>(trace)]->layer(layer),
          in_.traces[static_cast<size_t>(trace)]->meta().prompt_len);
    }
    return *p;
  }

  LiveScoresInput in_;
  std::map<int64_t, LiveSequence> live_;
  std::map<std::pair<int, int>, std::unique_ptr<sim::PrefillAttention>> prefill_;
  std::vector<double> scores_;  // scratch
};

}  // namespace

void CheckTracesFitInMemory(const std::vector<std::string>& paths,
                            const std::vector<traces::TraceMeta>& metas,
                            int64_t limit_bytes) {
  double bytes = 0.0;
  for (const traces::TraceMeta& m : metas) {
    bytes += 4.0 * static_cast<double>(m.shape.layers) *
             static_cast<double>(m.shape.q_heads + 2 * m.shape.kv_heads) *
             static_cast<double>(m.shape.head_dim) * static_cast<double>(m.total_len);
  }
  if (bytes > static_cast<double>(limit_bytes)) {
    constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;
    ThrowInputError(
        "share = global replays the running sequences alongside the schedule and holds every "
        "trace whole in memory: {} trace(s) ({} first) need {:.3f} GiB as float32, more than "
        "the {:.3f} GiB allowed (3/4 of this machine's memory); use share = equal or "
        "proportional, or shorter traces",
        paths.size(), paths.empty() ? std::string("none") : paths.front(), bytes / kGiB,
        static_cast<double>(limit_bytes) / kGiB);
  }
}

bool PolicyHasScores(const analysis::PolicySpec& policy, const traces::TraceMeta& meta) {
  const std::unique_ptr<policies::EvictionPolicy> instance =
      policies::MakePolicy(policy.name, policy.params, SetupFor(meta, {}, 0));
  const sim::KvCache empty(meta.shape.head_dim, meta.total_len);
  std::vector<double> scores;
  return instance->ResidentScores(0, empty, scores);
}

std::unique_ptr<SequenceScorer> MakeLiveScorer(LiveScoresInput input) {
  return std::make_unique<LiveScorer>(std::move(input));
}

}  // namespace kvsim::serving
