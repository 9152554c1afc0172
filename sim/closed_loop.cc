#include "sim/closed_loop.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <optional>
#include <string>

#include "common/error.h"
#include "common/softmax.h"
#include "models/sampler.h"
#include "sim/kv_cache.h"
#include "sim/prefill_attention.h"
#include "sim/replay.h"
#include "traces/trace_io.h"

namespace kvsim::sim {
namespace {

using policies::EvictionPolicy;
using policies::StreamView;

std::span<const float> RowSpan(const RowMatrixXf& m) {
  return {m.data(), static_cast<size_t>(m.cols())};
}

// One run of the model (full when `make_policy` is null, else evicting). Records every
// position's post-RoPE q/k/v into a trace of T positions and, when evicting, mirrors the model's
// KvState in one KvCache per (layer, KV head).
class ModelRun final : public models::ForwardObserver {
 public:
  ModelRun(const models::LlamaModel& model,
           int64_t prompt_len,
           const ClosedLoopOptions& options,
           const LayerPolicyFactory* make_policy,
           bool measure_recall = false)
      : model_(model),
        options_(options),
        make_policy_(make_policy),
        measure_recall_(measure_recall),
        shape_(model.config().Shape("closed-loop")),
        prompt_len_(prompt_len),
        total_len_(prompt_len + options.new_tokens),
        state_(model.NewState()) {
    traces::TraceMeta meta;
    meta.shape = shape_;
    meta.prompt_len = prompt_len_;
    meta.total_len = total_len_;
    meta.storage = traces::StorageType::kFloat32;
    meta.source = "closed-loop";
    std::vector<traces::LayerTensors> layers(static_cast<size_t>(shape_.layers));
    for (traces::LayerTensors& l : layers) {
      l.queries = HeadTensor(shape_.q_heads, total_len_, shape_.head_dim);
      l.keys = HeadTensor(shape_.kv_heads, total_len_, shape_.head_dim);
      l.values = HeadTensor(shape_.kv_heads, total_len_, shape_.head_dim);
    }
    trace_ = traces::Trace(std::move(meta), std::move(layers));
  }

  void OnLayer(const models::LayerActivations& act) override {
    traces::LayerTensors& layer = trace_.mutable_layer(act.layer);
    const int d = shape_.head_dim;
    for (size_t r = 0; r < act.positions.size(); ++r) {
      const auto row = static_cast<Eigen::Index>(r);
      const int64_t pos = act.positions[r];
      for (int h = 0; h < shape_.q_heads; ++h) {
        std::copy_n(act.q.row(row).data() + h * d, d, layer.queries.Row(h, pos));
      }
      for (int h = 0; h < shape_.kv_heads; ++h) {
        std::copy_n(act.k.row(row).data() + h * d, d, layer.keys.Row(h, pos));
        std::copy_n(act.v.row(row).data() + h * d, d, layer.values.Row(h, pos));
        if (!layers_.empty()) {
          layers_[static_cast<size_t>(act.layer)].caches[static_cast<size_t>(h)].Append(
              pos, layer.keys.Row(h, pos), layer.values.Row(h, pos));
        }
      }
    }
    if (act.positions.size() == 1) PrepareMasks(act.layer, act.positions[0]);
  }

  // The policy's sparse-attention mask of this decode step (MPCache's dynamic stage), in the
  // model's entry order: the model attends as the open-loop replay does (sim/replay.cc).
  std::span<const uint8_t> AttendMask(int layer, int kv_head) override {
    if (layers_.empty() || layers_[static_cast<size_t>(layer)].policy == nullptr) return {};
    const LayerState& ls = layers_[static_cast<size_t>(layer)];
    if (!ls.masked[static_cast<size_t>(kv_head)]) return {};
    return ls.model_masks[static_cast<size_t>(kv_head)];
  }

  // Runs the prompt; returns the logits of its last position. When evicting, then runs the
  // planning hooks and the after-prefill evict phase.
  RowMatrixXf Prefill(std::span<const int32_t> prompt) {
    if (make_policy_ != nullptr) CreateCaches();
    RowMatrixXf logits = model_.Forward(prompt, state_, this);
    if (make_policy_ != nullptr) StartPolicies(models::Argmax(RowSpan(logits)));
    return logits;
  }

  // Runs token `token` at position t = state's next position; returns its logits.
  RowMatrixXf Step(int32_t token) {
    const int64_t t = state_.next_position();
    if (make_policy_ != nullptr && options_.replay.regime == Regime::kPrefill) {
      for (LayerState& ls : layers_) {
        for (KvCache& c : ls.caches) {
          if (c.budget_tokens() < policies::kUnlimitedTokens) {
            c.set_budget_tokens(c.budget_tokens() + 1);
          }
        }
      }
    }
    const int32_t tokens[] = {token};
    RowMatrixXf logits = model_.Forward(tokens, state_, this);
    last_resident_mean_ = 0.0;
    if (make_policy_ == nullptr) return logits;
    if (measure_recall_) MeasureRecall(t);
    int64_t resident = 0;
    for (int l = 0; l < shape_.layers; ++l) {
      LayerState& ls = layers_[static_cast<size_t>(l)];
      for (int s = 0; s < shape_.kv_heads; ++s) {
        ComputeAttention(l, s, t);
        resident += ls.caches[static_cast<size_t>(s)].size();
      }
      const policies::StepView view{.layer = l,
                                    .step = t,
                                    .prompt_len = prompt_len_,
                                    .streams = ls.views,
                                    .queries = policies::QueryHistory(trace_.layer(l).queries, t)};
      ls.policy->OnStep(view);
      // KIVI quantizes at every step in both regimes (EvictionPolicy::ActsEveryStep).
      if (options_.replay.regime == Regime::kBounded || ls.policy->ActsEveryStep()) {
        Evict(l, t, /*after_prefill=*/false);
      }
    }
    last_resident_mean_ =
        static_cast<double>(resident) / static_cast<double>(shape_.layers * shape_.kv_heads);
    return logits;
  }

  double last_resident_mean() const { return last_resident_mean_; }
  double last_mass_recall() const { return last_mass_recall_; }
  const std::array<double, 3>& last_top_recall() const { return last_top_recall_; }
  const models::KvState& state() const { return state_; }
  traces::Trace TakeTrace(std::vector<int32_t> tokens) {
    tokens.resize(static_cast<size_t>(total_len_));
    trace_.mutable_meta().token_ids = std::move(tokens);
    return std::move(trace_);
  }

 private:
  struct LayerState {
    std::unique_ptr<EvictionPolicy> policy;
    std::unique_ptr<PrefillAttention> prefill;
    std::vector<KvCache> caches;
    std::vector<StreamView> views;
    std::vector<RowMatrixXf> attention;
    std::vector<int64_t> budgets;
    std::vector<int64_t> min_victims;
    std::vector<EvictionDecision> decisions;
    // This step's AttendMask per stream: whether the policy masked, the flags in cache slot
    // order (for the policy's view) and in the model's entry order (positions ascending).
    std::vector<uint8_t> masked;
    std::vector<std::vector<uint8_t>> slot_masks;
    std::vector<std::vector<uint8_t>> model_masks;
    std::vector<std::span<const uint8_t>> gate_flags;  // per KV head, into the options' flags
  };

  // Asks the layer's policy for each stream's mask of step t (once per step, as the replay does:
  // AttendMask may update policy state).
  void PrepareMasks(int l, int64_t t) {
    if (layers_.empty()) return;
    LayerState& ls = layers_[static_cast<size_t>(l)];
    if (ls.policy == nullptr) return;
    for (int s = 0; s < shape_.kv_heads; ++s) {
      const auto i = static_cast<size_t>(s);
      const KvCache& cache = ls.caches[i];
      std::vector<uint8_t>& mask = ls.slot_masks[i];
      mask.assign(static_cast<size_t>(cache.size()), 1);
      ls.views[i].attention = nullptr;
      ls.masked[i] = ls.policy->AttendMask(
          ls.views[i], t, policies::QueryHistory(trace_.layer(l).queries, t), mask);
      if (!ls.masked[i]) continue;
      KVSIM_ASSERT(std::find(mask.begin(), mask.end(), 1) != mask.end(),
                   "policy {} masked every resident entry at step {}", ls.policy->Name(), t);
      std::vector<std::pair<int64_t, uint8_t>> by_position;
      for (int64_t slot = 0; slot < cache.size(); ++slot) {
        by_position.emplace_back(cache.Position(slot), mask[static_cast<size_t>(slot)]);
      }
      std::sort(by_position.begin(), by_position.end());
      ls.model_masks[i].clear();
      for (const auto& [position, flag] : by_position) ls.model_masks[i].push_back(flag);
    }
  }

  // ClosedLoopStep::mass_recall and top_recall of step t, before the step's eviction (the
  // resident set the query attended over). Ties in the top-k order: lower position first, as
  // analysis::FullCacheAttention.
  void MeasureRecall(int64_t t) {
    const int d = shape_.head_dim;
    const int g = shape_.GroupSize();
    const float scale = 1.0f / std::sqrt(static_cast<float>(d));
    const auto visible = static_cast<size_t>(t + 1);
    std::vector<uint8_t> resident;
    std::vector<int64_t> order(visible);
    double mass_sum = 0.0;
    std::array<double, 3> top_sum{};
    for (int l = 0; l < shape_.layers; ++l) {
      const traces::LayerTensors& layer = trace_.layer(l);
      for (int s = 0; s < shape_.kv_heads; ++s) {
        const KvCache& cache = layers_[static_cast<size_t>(l)].caches[static_cast<size_t>(s)];
        resident.assign(visible, 0);
        for (int64_t slot = 0; slot < cache.size(); ++slot) {
          resident[static_cast<size_t>(cache.Position(slot))] = 1;
        }
        const Eigen::Map<const RowMatrixXf> keys(layer.keys.Row(s, 0),
                                                 static_cast<Eigen::Index>(visible), d);
        for (int h = s * g; h < (s + 1) * g; ++h) {
          const Eigen::Map<const Eigen::RowVectorXf> q(layer.queries.Row(h, t), d);
          Eigen::VectorXf w = (keys * q.transpose()) * scale;
          w = (w.array() - w.maxCoeff()).exp();
          double total = 0.0;
          double kept = 0.0;
          for (size_t j = 0; j < visible; ++j) {
            total += static_cast<double>(w[static_cast<Eigen::Index>(j)]);
            if (resident[j] != 0) kept += static_cast<double>(w[static_cast<Eigen::Index>(j)]);
          }
          mass_sum += kept / total;
          std::iota(order.begin(), order.end(), int64_t{0});
          const auto top = std::min(visible, static_cast<size_t>(kClosedLoopTopK.back()));
          std::partial_sort(
              order.begin(), order.begin() + static_cast<std::ptrdiff_t>(top), order.end(),
              [&](int64_t a, int64_t b) { return w[a] != w[b] ? w[a] > w[b] : a < b; });
          for (size_t i = 0; i < kClosedLoopTopK.size(); ++i) {
            const size_t k = std::min(visible, static_cast<size_t>(kClosedLoopTopK[i]));
            int64_t hits = 0;
            for (size_t r = 0; r < k; ++r) hits += resident[static_cast<size_t>(order[r])];
            top_sum[i] += static_cast<double>(hits) / static_cast<double>(k);
          }
        }
      }
    }
    const auto samples = static_cast<double>(shape_.layers * shape_.q_heads);
    last_mass_recall_ = mass_sum / samples;
    for (size_t i = 0; i < top_sum.size(); ++i) last_top_recall_[i] = top_sum[i] / samples;
  }

  void CreateCaches() {
    layers_.resize(static_cast<size_t>(shape_.layers));
    for (LayerState& ls : layers_) {
      for (int s = 0; s < shape_.kv_heads; ++s) ls.caches.emplace_back(shape_.head_dim, total_len_);
    }
  }

  void StartPolicies(int32_t first_token) {
    const int g = shape_.GroupSize();
    std::vector<EvictionPolicy*> raw;
    std::vector<const PrefillAttention*> prefill;
    for (int l = 0; l < shape_.layers; ++l) {
      LayerState& ls = layers_[static_cast<size_t>(l)];
      const policies::PolicySetup setup{.shape = shape_,
                                        .layer = l,
                                        .options = options_.replay,
                                        .prompt_len = prompt_len_,
                                        .total_len = total_len_,
                                        .seed = LayerSeed(options_.replay.seed, l)};
      ls.policy = (*make_policy_)(setup);
      if (dynamic_cast<policies::OraclePolicy*>(ls.policy.get()) != nullptr) {
        ThrowInputError(
            "--policy {}: needs the future (an oracle), which a closed loop does not have; "
            "expected a deployable policy",
            ls.policy->Name());
      }
      ls.prefill = std::make_unique<PrefillAttention>(trace_.layer(l), prompt_len_);
      raw.push_back(ls.policy.get());
      prefill.push_back(ls.prefill.get());
    }
    for (EvictionPolicy* p : raw) {
      auto* in_loop = dynamic_cast<ModelInLoopPolicy*>(p);
      if (in_loop == nullptr) continue;
      if (!model_context_) {
        prompt_state_copy_ = state_;
        model_context_ = ModelContext{.model = &model_,
                                      .prompt_state = &*prompt_state_copy_,
                                      .prompt_queries = {},
                                      .prompt_len = prompt_len_,
                                      .first_token = first_token,
                                      .budget_tokens = options_.budget_tokens,
                                      .eos_token = options_.eos_token};
        for (int l = 0; l < shape_.layers; ++l) {
          model_context_->prompt_queries.push_back(&trace_.layer(l).queries);
        }
      }
      in_loop->AttachModel(*model_context_);
    }
    const std::vector<int64_t> budgets =
        PlanLayerBudgets(trace_, raw, prefill, options_.budget_tokens);
    for (int l = 0; l < shape_.layers; ++l) {
      LayerState& ls = layers_[static_cast<size_t>(l)];
      const int64_t slack = ls.policy->BudgetSlackTokens();
      for (KvCache& c : ls.caches) {
        c.set_budget_tokens(budgets[static_cast<size_t>(l)]);
        c.set_slack_tokens(slack);
      }
      const auto streams = static_cast<size_t>(shape_.kv_heads);
      ls.views.resize(streams);
      ls.attention.resize(streams);
      ls.budgets.resize(streams);
      ls.min_victims.resize(streams);
      ls.decisions.resize(streams);
      ls.masked.assign(streams, 0);
      ls.slot_masks.resize(streams);
      ls.model_masks.resize(streams);
      for (int s = 0; s < shape_.kv_heads; ++s) {
        StreamView& v = ls.views[static_cast<size_t>(s)];
        v.stream = s;
        v.kv_head = s;
        v.first_q_head = s * g;
        v.num_q_heads = g;
        v.cache = &ls.caches[static_cast<size_t>(s)];
      }
      if (!options_.gate_flags.empty()) {
        for (const std::vector<uint8_t>& flags : options_.gate_flags[static_cast<size_t>(l)]) {
          ls.gate_flags.emplace_back(flags);
        }
      }
      const policies::PrefillView view{
          .layer = l,
          .begin = 0,
          .end = prompt_len_,
          .prompt_len = prompt_len_,
          .streams = ls.views,
          .attention = ls.prefill.get(),
          .queries = policies::QueryHistory(trace_.layer(l).queries, prompt_len_ - 1),
          .gate_flags = ls.gate_flags};
      ls.policy->OnPrefill(view);
      Evict(l, prompt_len_ - 1, /*after_prefill=*/true);
    }
  }

  // Attention of stream s's query heads at step t over its resident set (as sim/replay.cc).
  void ComputeAttention(int l, int s, int64_t t) {
    LayerState& ls = layers_[static_cast<size_t>(l)];
    StreamView& v = ls.views[static_cast<size_t>(s)];
    const KvCache& cache = ls.caches[static_cast<size_t>(s)];
    RowMatrixXf& a = ls.attention[static_cast<size_t>(s)];
    a.resize(v.num_q_heads, cache.size());
    const HeadTensor& queries = trace_.layer(l).queries;
    const bool masked = ls.masked[static_cast<size_t>(s)] != 0;
    const std::vector<uint8_t>& mask = ls.slot_masks[static_cast<size_t>(s)];
    const float scale = 1.0f / std::sqrt(static_cast<float>(shape_.head_dim));
    const RowMatrixXf keys = cache.Keys();
    for (int i = 0; i < v.num_q_heads; ++i) {
      const Eigen::Map<const Eigen::RowVectorXf> q(queries.Row(v.first_q_head + i, t),
                                                   shape_.head_dim);
      if (!masked) {
        a.row(i) = AttentionWeights(keys, q).transpose();
        continue;
      }
      // Masked entries leave the softmax (as sim/replay.cc and the model's attention).
      a.row(i) = (q * keys.transpose()) * scale;
      for (int64_t slot = 0; slot < cache.size(); ++slot) {
        if (mask[static_cast<size_t>(slot)] == 0) {
          a(i, slot) = -std::numeric_limits<float>::infinity();
        }
      }
      auto row = a.row(i);
      row = (row.array() - row.maxCoeff()).exp();
      row /= row.sum();
    }
    ls.masked[static_cast<size_t>(s)] = 0;
    v.attention = &a;
  }

  void Evict(int l, int64_t step, bool after_prefill) {
    LayerState& ls = layers_[static_cast<size_t>(l)];
    for (int s = 0; s < shape_.kv_heads; ++s) {
      const auto i = static_cast<size_t>(s);
      const KvCache& cache = ls.caches[i];
      ls.budgets[i] = cache.budget_tokens();
      ls.min_victims[i] =
          std::max<int64_t>(0, cache.size() - cache.budget_tokens() - cache.slack_tokens());
      ls.decisions[i].Clear();
      if (after_prefill) ls.views[i].attention = nullptr;
    }
    const policies::EvictionRequest request{
        .layer = l,
        .step = step,
        .after_prefill = after_prefill,
        .streams = ls.views,
        .budget_tokens = ls.budgets,
        .min_victims = ls.min_victims,
        .queries = policies::QueryHistory(trace_.layer(l).queries, step),
        .prefill = ls.prefill.get()};
    ls.policy->SelectVictims(request, ls.decisions);
    for (int s = 0; s < shape_.kv_heads; ++s) {
      const auto i = static_cast<size_t>(s);
      const EvictionDecision& d = ls.decisions[i];
      KVSIM_ASSERT(
          static_cast<int64_t>(d.victims.size()) >= ls.min_victims[i],
          "policy {} chose {} victims in layer {} stream {} at step {}, at least {} needed",
          ls.policy->Name(), d.victims.size(), l, s, step, ls.min_victims[i]);
      if (d.victims.empty() && d.rewrites.empty()) continue;
      ls.caches[i].Apply(d);
      // Rewritten entries (D2O merges, KIVI / MiKV quantized values) go into the model's own
      // cache as the policy's cache now holds them (decoded, for an encoded entry), so the model
      // attends to them as stored from the next step on.
      const KvCache& cache = ls.caches[i];
      for (const EntryRewrite& rewrite : d.rewrites) {
        const int64_t slot = cache.SlotOf(rewrite.position);
        if (slot < 0) continue;  // rewritten, then evicted in the same decision
        state_.Overwrite(l, s, rewrite.position, cache.KeyRow(slot).data(),
                         cache.ValueRow(slot).data());
      }
      if (d.victims.empty()) continue;
      state_.Drop(l, s, d.victims);
      ls.views[i].attention = nullptr;
      ls.policy->OnEvicted(s, d.victims);
    }
  }

  const models::LlamaModel& model_;
  const ClosedLoopOptions& options_;
  const LayerPolicyFactory* make_policy_;
  bool measure_recall_;  // ClosedLoopStep's in-loop recall: the teacher-forced run only
  models::ModelShape shape_;
  int64_t prompt_len_;
  int64_t total_len_;
  models::KvState state_;
  std::optional<models::KvState> prompt_state_copy_;  // what model_context_ points at
  std::optional<ModelContext> model_context_;         // built when a ModelInLoopPolicy is present
  traces::Trace trace_;
  std::vector<LayerState> layers_;  // empty for the full run
  double last_resident_mean_ = 0.0;
  double last_mass_recall_ = 1.0;
  std::array<double, 3> last_top_recall_ = {1.0, 1.0, 1.0};
};

double LogSumExp(std::span<const float> logits) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (const float x : logits) sum += std::exp(static_cast<double>(x) - max);
  return static_cast<double>(max) + std::log(sum);
}

}  // namespace

double KlDivergence(std::span<const float> logits_p, std::span<const float> logits_q) {
  KVSIM_ASSERT(logits_p.size() == logits_q.size(), "KL of {} and {} logits", logits_p.size(),
               logits_q.size());
  const double lse_p = LogSumExp(logits_p);
  const double lse_q = LogSumExp(logits_q);
  double kl = 0.0;
  for (size_t i = 0; i < logits_p.size(); ++i) {
    const double log_p = logits_p[i] - lse_p;
    const double log_q = logits_q[i] - lse_q;
    kl += std::exp(log_p) * (log_p - log_q);
  }
  // Rounding can leave a tiny negative sum for near-identical distributions; KL >= 0.
  return std::max(0.0, kl);
}

double NegLogLikelihood(std::span<const float> logits, int32_t token) {
  KVSIM_ASSERT(token >= 0 && static_cast<size_t>(token) < logits.size(), "token {} of {} logits",
               token, logits.size());
  return LogSumExp(logits) - static_cast<double>(logits[static_cast<size_t>(token)]);
}

std::vector<std::vector<std::vector<uint8_t>>> ReadGateFlagsForModel(
    const std::string& path,
    const models::LlamaModel& model,
    int64_t total_len,
    std::string_view context) {
  const traces::TraceReader reader(path);
  if (!reader.has_gate_flags()) {
    ThrowInputError(
        "{} {}: the trace has no dataset '/gate_flags' (expected [layers, kv_heads, T] "
        "uint8 keep/evict flags, traces/FORMAT.md)",
        context, path);
  }
  const models::ModelShape shape = model.config().Shape("closed-loop");
  const traces::TraceMeta& meta = reader.meta();
  if (meta.shape.layers != shape.layers || meta.shape.kv_heads != shape.kv_heads) {
    ThrowInputError("{} {}: /gate_flags is for {} layers x {} KV heads, the model has {} x {}",
                    context, path, meta.shape.layers, meta.shape.kv_heads, shape.layers,
                    shape.kv_heads);
  }
  if (meta.total_len < total_len) {
    ThrowInputError(
        "{} {}: /gate_flags covers {} positions, the closed loop needs {} (prompt + "
        "--new-tokens)",
        context, path, meta.total_len, total_len);
  }
  std::vector<std::vector<std::vector<uint8_t>>> flags(static_cast<size_t>(shape.layers));
  for (int l = 0; l < shape.layers; ++l) {
    for (int h = 0; h < shape.kv_heads; ++h) {
      flags[static_cast<size_t>(l)].push_back(reader.ReadGateFlags(l, h));
    }
  }
  return flags;
}

ClosedLoopResult RunClosedLoop(const models::LlamaModel& model,
                               std::span<const int32_t> prompt,
                               const ClosedLoopOptions& options,
                               const LayerPolicyFactory& make_policy) {
  if (prompt.empty()) ThrowInputError("prompt: is empty, expected at least one token");
  if (options.new_tokens < 1) {
    ThrowInputError("--new-tokens: {} is not valid, expected at least 1", options.new_tokens);
  }
  const int64_t n = static_cast<int64_t>(prompt.size());
  if (n + options.new_tokens > model.config().context_length) {
    ThrowInputError(
        "--new-tokens: prompt ({} tokens) + {} new tokens exceed the model's context length {}", n,
        options.new_tokens, model.config().context_length);
  }
  if (options.replay.gqa_mode != GqaMode::kKvHead) {
    ThrowInputError("--gqa: closed-loop supports kv-head only, got {}",
                    GqaModeName(options.replay.gqa_mode));
  }
  if (options.replay.timing != EvictTiming::kAfterAttend) {
    ThrowInputError("--evict: closed-loop supports after-attend only, got {}",
                    EvictTimingName(options.replay.timing));
  }
  KVSIM_ASSERT(options.budget_tokens >= 1, "budget {} < 1", options.budget_tokens);
  if (!options.gate_flags.empty()) {
    const models::ModelShape shape = model.config().Shape("closed-loop");
    bool fits = options.gate_flags.size() == static_cast<size_t>(shape.layers);
    for (const auto& layer : options.gate_flags) {
      fits = fits && layer.size() == static_cast<size_t>(shape.kv_heads);
      for (const auto& head : layer) {
        fits = fits && static_cast<int64_t>(head.size()) >= n + options.new_tokens;
      }
    }
    if (!fits) {
      ThrowInputError("gate flags: expected {} layers x {} KV heads x >= {} positions",
                      shape.layers, shape.kv_heads, n + options.new_tokens);
    }
  }
  const int64_t steps = options.new_tokens;
  ClosedLoopResult result;
  result.prompt_len = n;

  // Full run: the reference tokens and logits.
  ModelRun full(model, n, options, nullptr);
  RowMatrixXf logits = full.Prefill(prompt);
  result.prompt_state = full.state();
  const int32_t first = models::Argmax(RowSpan(logits));
  result.full_tokens.assign(prompt.begin(), prompt.end());
  result.full_tokens.push_back(first);
  std::vector<RowMatrixXf> full_logits;
  for (int64_t k = 0; k < steps; ++k) {
    full_logits.push_back(full.Step(result.full_tokens.back()));
    result.full_tokens.push_back(models::Argmax(RowSpan(full_logits.back())));
  }
  result.full_trace = full.TakeTrace(result.full_tokens);

  // Teacher-forced evicting run.
  result.steps.resize(static_cast<size_t>(steps));
  {
    ModelRun teacher(model, n, options, &make_policy, /*measure_recall=*/true);
    teacher.Prefill(prompt);
    for (int64_t k = 0; k < steps; ++k) {
      const auto i = static_cast<size_t>(k);
      const RowMatrixXf out = teacher.Step(result.full_tokens[static_cast<size_t>(n + k)]);
      ClosedLoopStep& row = result.steps[i];
      row.step = n + k;
      row.full_next = result.full_tokens[static_cast<size_t>(n + k + 1)];
      row.teacher_next = models::Argmax(RowSpan(out));
      row.nll_full = NegLogLikelihood(RowSpan(full_logits[i]), row.full_next);
      row.nll_evicted = NegLogLikelihood(RowSpan(out), row.full_next);
      row.kl = KlDivergence(RowSpan(full_logits[i]), RowSpan(out));
      row.resident_mean = teacher.last_resident_mean();
      row.mass_recall = teacher.last_mass_recall();
      row.top_recall = teacher.last_top_recall();
    }
  }

  // Free-running evicting run.
  {
    ModelRun free_run(model, n, options, &make_policy);
    logits = free_run.Prefill(prompt);
    result.free_tokens.assign(prompt.begin(), prompt.end());
    result.free_tokens.push_back(models::Argmax(RowSpan(logits)));
    for (int64_t k = 0; k < steps; ++k) {
      logits = free_run.Step(result.free_tokens.back());
      const int32_t next = models::Argmax(RowSpan(logits));
      result.steps[static_cast<size_t>(k)].free_next = next;
      result.free_tokens.push_back(next);
    }
  }

  double nll_full = 0.0;
  double nll_evicted = 0.0;
  double kl = 0.0;
  double mass_recall = 0.0;
  std::array<double, 3> top_recall{};
  int64_t agree = 0;
  int64_t teacher_agree = 0;
  for (const ClosedLoopStep& row : result.steps) {
    nll_full += row.nll_full;
    nll_evicted += row.nll_evicted;
    kl += row.kl;
    mass_recall += row.mass_recall;
    for (size_t i = 0; i < top_recall.size(); ++i) top_recall[i] += row.top_recall[i];
    if (row.free_next == row.full_next) {
      ++agree;
    } else if (result.first_divergence < 0) {
      result.first_divergence = row.step;
    }
    if (row.teacher_next == row.full_next) ++teacher_agree;
  }
  const auto count = static_cast<double>(steps);
  result.agreement = static_cast<double>(agree) / count;
  result.teacher_agreement = static_cast<double>(teacher_agree) / count;
  result.perplexity_full = std::exp(nll_full / count);
  result.perplexity_evicted = std::exp(nll_evicted / count);
  result.kl_mean = kl / count;
  result.mass_recall_mean = mass_recall / count;
  for (size_t i = 0; i < top_recall.size(); ++i) {
    result.top_recall_mean[i] = top_recall[i] / count;
  }
  return result;
}

}  // namespace kvsim::sim
