#include "sim/replay.h"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "common/error.h"
#include "sim/selection_scope.h"

namespace kvsim::sim {

using policies::EvictionPolicy;
using policies::StreamView;

namespace {

// out = weights x V over the cache's resident slots, reading each V row where it lies (the
// trace's row or an owned one). A stream has few query rows (the GQA group), so one pass over
// the slots with the rows' outputs in registers beats gathering V and packing it for a GEMM.
void AccumulateWeightedValues(const RowMatrixXf& weights,
                              const KvCache& cache,
                              Eigen::Block<RowMatrixXf, Eigen::Dynamic, Eigen::Dynamic, true> out) {
  out.setZero();
  for (int64_t slot = 0; slot < cache.size(); ++slot) {
    const Eigen::Map<const Eigen::RowVectorXf> v = cache.ValueRow(slot);
    for (Eigen::Index i = 0; i < weights.rows(); ++i) out.row(i) += weights(i, slot) * v;
  }
}

}  // namespace

// State of one layer's replay: the caches, the views handed to the policy and the observer,
// and the scratch matrices they point into.
class LayerRun {
 public:
  LayerRun(const LayerReplayInput& input, EvictionPolicy& policy, ReplayObserver* observer)
      : in_(input),
        policy_(policy),
        observer_(observer),
        trace_(*input.trace),
        layer_(trace_.layer(input.layer)),
        shape_(trace_.shape()),
        prompt_len_(trace_.meta().prompt_len),
        total_len_(trace_.meta().total_len),
        query_head_mode_(input.options.gqa_mode == GqaMode::kQueryHead),
        num_streams_(query_head_mode_ ? shape_.q_heads : shape_.kv_heads),
        queries_per_stream_(query_head_mode_ ? 1 : shape_.GroupSize()),
        scale_(1.0f / std::sqrt(static_cast<float>(shape_.head_dim))) {
    result_.layer = input.layer;
    caches_.reserve(static_cast<size_t>(num_streams_));
    const int64_t slack = policy.BudgetSlackTokens();
    KVSIM_ASSERT(slack >= 0, "policy {} declares negative slack {}", policy.Name(), slack);
    for (int s = 0; s < num_streams_; ++s) {
      // Pristine entries are positions viewing the trace's rows (no copies of K/V).
      const int kv = query_head_mode_ ? s / shape_.GroupSize() : s;
      caches_.emplace_back(layer_.keys.Head(kv), layer_.values.Head(kv));
      caches_.back().set_budget_tokens(input.budget_tokens);
      caches_.back().set_slack_tokens(slack);
    }
    attention_.resize(static_cast<size_t>(num_streams_));
    views_.resize(static_cast<size_t>(num_streams_));
    for (int s = 0; s < num_streams_; ++s) {
      StreamView& v = views_[static_cast<size_t>(s)];
      v.stream = s;
      v.kv_head = query_head_mode_ ? s / shape_.GroupSize() : s;
      v.first_q_head = s * queries_per_stream_;
      v.num_q_heads = queries_per_stream_;
      v.cache = &caches_[static_cast<size_t>(s)];
    }
    budgets_.resize(static_cast<size_t>(num_streams_));
    min_victims_.resize(static_cast<size_t>(num_streams_));
    decisions_.resize(static_cast<size_t>(num_streams_));
    outputs_.resize(shape_.q_heads, shape_.head_dim);
    scratch_.resize(static_cast<size_t>(num_streams_));
    stale_.resize(static_cast<size_t>(num_streams_));
    if (trace_.has_gate_flags()) {
      for (int kv = 0; kv < shape_.kv_heads; ++kv) {
        gate_flags_.push_back(trace_.GateFlags(input.layer, kv));
      }
    }
    reports_tiers_ = policy_.TierBytes(views_).has_value();
  }

  // Attaches the future and schedules the prompt's events; decode steps are scheduled per block.
  void Start() {
    if (auto* oracle = dynamic_cast<policies::OraclePolicy*>(&policy_)) {
      KVSIM_ASSERT(in_.future != nullptr, "policy {} needs a FutureView and none was given",
                   policy_.Name());
      oracle->AttachFuture(*in_.future);
    }
    std::vector<int64_t> cuts = {0, prompt_len_};  // prefill block boundaries
    // A turn arrives at the first position of its earliest segment.
    for (const traces::Segment& segment : trace_.meta().segments) {
      const auto [it, inserted] =
          arrival_roles_.try_emplace(segment.turn, segment.begin, segment.role);
      if (!inserted && segment.begin < it->second.first) {
        it->second = {segment.begin, segment.role};
      }
    }
    for (const auto& [turn, arrival] : arrival_roles_) {
      queue_.Push(Event{.step = arrival.first,
                        .phase = Phase::kArrival,
                        .type = EventType::kTurnArrival,
                        .begin = arrival.first,
                        .end = turn});
      if (in_.options.prefill_block > 0 && arrival.first < prompt_len_) {
        cuts.push_back(arrival.first);
      }
    }
    for (int64_t p = in_.options.prefill_block; in_.options.prefill_block > 0 && p < prompt_len_;
         p += in_.options.prefill_block) {
      cuts.push_back(p);
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());
    for (size_t i = 0; i + 1 < cuts.size(); ++i) {
      queue_.Push(Event{.step = cuts[i + 1] - 1,
                        .phase = Phase::kPrefill,
                        .type = EventType::kPrefillBlock,
                        .begin = cuts[i],
                        .end = cuts[i + 1]});
    }
    scheduled_through_ = prompt_len_ - 1;
  }

  void AdvanceThrough(int64_t last_step) {
    last_step = std::min(last_step, total_len_ - 1);
    const bool bounded = in_.options.regime == Regime::kBounded;
    const bool evict_each_step = bounded || policy_.ActsEveryStep();
    const Phase evict_phase =
        in_.options.timing == EvictTiming::kAfterAttend ? Phase::kEvict : Phase::kEvictEarly;
    for (int64_t t = scheduled_through_ + 1; t <= last_step; ++t) {
      queue_.Push(Event{.step = t, .phase = Phase::kAppend, .type = EventType::kDecodeAppend});
      queue_.Push(Event{.step = t, .phase = Phase::kAttend, .type = EventType::kAttend});
      if (evict_each_step) {
        queue_.Push(Event{.step = t, .phase = evict_phase, .type = EventType::kEvict});
      }
      queue_.Push(Event{.step = t, .phase = Phase::kMeasure, .type = EventType::kMeasure});
      queue_.Push(Event{.step = t, .phase = Phase::kLedger, .type = EventType::kLedgerSample});
    }
    scheduled_through_ = std::max(scheduled_through_, last_step);
    while (!queue_.empty() && queue_.Top().step <= scheduled_through_) Dispatch(queue_.Pop());
  }

  std::span<const StreamView> streams() const { return views_; }

  LayerReplayResult Finish() {
    AdvanceThrough(total_len_ - 1);
    while (!queue_.empty()) Dispatch(queue_.Pop());
    const int64_t samples = result_.steps * num_streams_;
    result_.resident_tokens_mean =
        samples == 0 ? 0.0 : resident_sum_ / static_cast<double>(samples);
    result_.ranked_victims = tally_.victims;
    result_.tie_victims = tally_.tie_victims;
    return std::move(result_);
  }

 private:
  void Dispatch(const Event& e) {
    switch (e.type) {
      case EventType::kPrefillBlock:
        return Prefill(e.begin, e.end);
      case EventType::kDecodeAppend:
        return Append(e.step);
      case EventType::kAttend:
        return Attend(e.step);
      case EventType::kEvict:
        return Evict(e.step, /*after_prefill=*/false);
      case EventType::kMeasure:
        return Measure(e.step);
      case EventType::kLedgerSample:
        return Ledger(e.step);
      case EventType::kTurnArrival:
        return result_.turn_arrivals.push_back(
            TurnArrival{.position = e.begin,
                        .turn = static_cast<int32_t>(e.end),
                        .role = arrival_roles_.at(static_cast<int32_t>(e.end)).second});
    }
  }

  void Prefill(int64_t begin, int64_t end) {
    for (int s = 0; s < num_streams_; ++s) {
      for (int64_t pos = begin; pos < end; ++pos)
        caches_[static_cast<size_t>(s)].AppendFromSource(pos);
      views_[static_cast<size_t>(s)].attention = nullptr;
    }
    const policies::PrefillView view{.layer = in_.layer,
                                     .begin = begin,
                                     .end = end,
                                     .prompt_len = prompt_len_,
                                     .streams = views_,
                                     .attention = in_.prefill,
                                     .queries = policies::QueryHistory(layer_.queries, end - 1),
                                     .gate_flags = gate_flags_,
                                     .segments = trace_.meta().segments};
    policy_.OnPrefill(view);
    const int64_t admitted_bytes = KvBytes().total();
    Evict(end - 1, /*after_prefill=*/true);
    const KvTierBytes kept = KvBytes();
    RecordKv(end - 1, LedgerPhase::kPrefill, kept);
    result_.ledger.Record(end - 1, LedgerPhase::kPrefill, in_.layer,
                          MemoryCategory::kPrefillTransient, admitted_bytes - kept.total());
    result_.ledger.Record(end - 1, LedgerPhase::kPrefill, in_.layer, MemoryCategory::kPolicyState,
                          policy_.StateBytes());
  }

  void Append(int64_t t) {
    const bool grow = in_.options.regime == Regime::kPrefill;
    for (int s = 0; s < num_streams_; ++s) {
      KvCache& cache = caches_[static_cast<size_t>(s)];
      cache.AppendFromSource(t);
      if (grow && cache.budget_tokens() < policies::kUnlimitedTokens) {
        cache.set_budget_tokens(cache.budget_tokens() + 1);
      }
    }
    step_high_water_bytes_ = KvBytes();
  }

  // The policy's sparse-attention mask for stream s at step t (MPCache's dynamic stage), into
  // the stream's scratch. Serial: AttendMask may update policy state.
  void PrepareMask(int s, int64_t t) {
    StreamScratch& scratch = scratch_[static_cast<size_t>(s)];
    const KvCache& cache = caches_[static_cast<size_t>(s)];
    scratch.mask.assign(static_cast<size_t>(cache.size()), 1);
    scratch.masked = policy_.AttendMask(views_[static_cast<size_t>(s)], t,
                                        policies::QueryHistory(layer_.queries, t), scratch.mask);
    KVSIM_ASSERT(!scratch.masked ||
                     std::find(scratch.mask.begin(), scratch.mask.end(), 1) != scratch.mask.end(),
                 "policy {} masked every resident entry at step {}", policy_.Name(), t);
  }

  // Attention of stream s's query heads at step t over its resident set (after PrepareMask).
  // Logits of pristine entries come from the shared full-cache pass when there is one (the same
  // q . k, computed once per layer); rewritten entries (merged, quantized) are scored against
  // their own keys. Touches only stream s's state: streams run in parallel.
  void ComputeAttention(int s, int64_t t) {
    const StreamView& v = views_[static_cast<size_t>(s)];
    const KvCache& cache = caches_[static_cast<size_t>(s)];
    KVSIM_ASSERT(cache.size() > 0, "policy {} left stream {} of layer {} empty at step {}",
                 policy_.Name(), s, in_.layer, t);
    StreamScratch& scratch = scratch_[static_cast<size_t>(s)];
    RowMatrixXf& a = attention_[static_cast<size_t>(s)];
    scratch.full_row =
        in_.logits != nullptr && !scratch.masked && cache.IsSourcePrefix() && cache.size() == t + 1;
    if (scratch.full_row) {  // the full cache itself: its weights as they are
      a.resize(queries_per_stream_, cache.size());
      for (int i = 0; i < queries_per_stream_; ++i) {
        const std::span<const float> w = in_.logits->FullWeights(v.first_q_head + i, t);
        std::copy(w.begin(), w.end(), a.row(i).data());
      }
      return;
    }
    if (in_.logits != nullptr && cache.IsSourcePrefix()) {
      a.resize(queries_per_stream_, cache.size());
      for (int i = 0; i < queries_per_stream_; ++i) {  // slot j = position j: the rows as they are
        const float* logits = in_.logits->Logits(v.first_q_head + i, t).data();
        std::copy(logits, logits + cache.size(), a.row(i).data());
      }
    } else if (in_.logits != nullptr) {
      a.resize(queries_per_stream_, cache.size());
      const std::span<const CacheEntry> entries = cache.entries();
      std::vector<const float*>& logits = scratch.logit_rows;
      logits.resize(static_cast<size_t>(queries_per_stream_));
      scratch.query_rows.resize(queries_per_stream_, shape_.head_dim);
      for (int i = 0; i < queries_per_stream_; ++i) {
        logits[static_cast<size_t>(i)] = in_.logits->Logits(v.first_q_head + i, t).data();
        scratch.query_rows.row(i) = Eigen::Map<const Eigen::RowVectorXf>(
            layer_.queries.Row(v.first_q_head + i, t), shape_.head_dim);
      }
      // Slot-major, so a rewritten entry's key row is read once for the whole GQA group.
      for (int64_t slot = 0; slot < cache.size(); ++slot) {
        if (cache.IsSourceView(slot)) {
          const auto position = static_cast<size_t>(entries[static_cast<size_t>(slot)].position);
          for (int i = 0; i < queries_per_stream_; ++i) {
            a(i, slot) = logits[static_cast<size_t>(i)][position];
          }
        } else {
          const Eigen::Map<const Eigen::RowVectorXf> key = cache.KeyRow(slot);
          for (int i = 0; i < queries_per_stream_; ++i) {
            a(i, slot) = key.dot(scratch.query_rows.row(i)) * scale_;
          }
        }
      }
    } else {
      scratch.query_rows.resize(queries_per_stream_, shape_.head_dim);
      for (int i = 0; i < queries_per_stream_; ++i) {
        scratch.query_rows.row(i) = Eigen::Map<const Eigen::RowVectorXf>(
            layer_.queries.Row(v.first_q_head + i, t), shape_.head_dim);
      }
      a.noalias() = (scratch.query_rows * cache.Keys().transpose()) * scale_;
    }
    if (scratch.masked) {
      for (int64_t slot = 0; slot < cache.size(); ++slot) {
        if (scratch.mask[static_cast<size_t>(slot)] == 0) {
          a.col(slot).setConstant(-std::numeric_limits<float>::infinity());
        }
      }
    }
    for (int i = 0; i < queries_per_stream_; ++i) {
      auto row = a.row(i);
      const float max = row.maxCoeff();
      row = (row.array() - max).exp();
      row /= row.sum();
    }
  }

  // Runs fn(s) for every stream, in parallel when there are several (each touches only its own
  // stream's state, so the result does not depend on the schedule).
  template <typename Fn>
  void ForEachStream(const Fn& fn) {
    if (num_streams_ == 1) return fn(0);
    tbb::parallel_for(0, num_streams_, [&](int s) { fn(s); });
  }

  void Attend(int64_t t) {
    for (int s = 0; s < num_streams_; ++s) PrepareMask(s, t);
    ForEachStream([&](int s) { ComputeAttention(s, t); });
    for (int s = 0; s < num_streams_; ++s) {
      views_[static_cast<size_t>(s)].attention = &attention_[static_cast<size_t>(s)];
    }
    const policies::StepView view{.layer = in_.layer,
                                  .step = t,
                                  .prompt_len = prompt_len_,
                                  .streams = views_,
                                  .queries = policies::QueryHistory(layer_.queries, t)};
    policy_.OnStep(view);
  }

  // The uniform budget a schedule allows at the evict phase of `step` (kUnlimitedTokens without
  // one), and the caches' budget that follows from it.
  int64_t ScheduledCap(int64_t step) const {
    const std::span<const int64_t> schedule = in_.budget_schedule;
    if (schedule.empty()) return policies::kUnlimitedTokens;
    const int64_t k =
        std::clamp<int64_t>(step - (prompt_len_ - 1), 0, static_cast<int64_t>(schedule.size()) - 1);
    return schedule[static_cast<size_t>(k)];
  }
  int64_t ScheduledBudget(int64_t cap) const {
    if (cap >= in_.schedule_base || in_.budget_tokens >= policies::kUnlimitedTokens) {
      return in_.budget_tokens;
    }
    // b * cap / base in long double: exact for token counts below 2^32 each, which is far
    // beyond any trace; no int64 overflow for larger ones.
    const long double scaled = static_cast<long double>(in_.budget_tokens) *
                               static_cast<long double>(cap) /
                               static_cast<long double>(in_.schedule_base);
    return std::max<int64_t>(1, static_cast<int64_t>(std::floor(scaled)));
  }

  void Evict(int64_t step, bool after_prefill) {
    const int64_t cap = ScheduledCap(step);
    if (!in_.budget_schedule.empty()) {
      const int64_t budget = ScheduledBudget(cap);
      for (KvCache& cache : caches_) cache.set_budget_tokens(budget);
    }
    for (int s = 0; s < num_streams_; ++s) {
      const KvCache& cache = caches_[static_cast<size_t>(s)];
      budgets_[static_cast<size_t>(s)] = cache.budget_tokens();
      min_victims_[static_cast<size_t>(s)] =
          std::max<int64_t>(0, cache.size() - cache.budget_tokens() - cache.slack_tokens());
      decisions_[static_cast<size_t>(s)].Clear();
    }
    const policies::EvictionRequest request{.layer = in_.layer,
                                            .step = step,
                                            .after_prefill = after_prefill,
                                            .streams = views_,
                                            .budget_tokens = budgets_,
                                            .min_victims = min_victims_,
                                            .queries = policies::QueryHistory(layer_.queries, step),
                                            .prefill = in_.prefill,
                                            .budget_cap_tokens = cap};
    {
      // Ties order by the cell's rule; a random order is fixed per (seed, layer, step).
      const uint64_t tie_seed = in_.options.seed * 0x9e3779b97f4a7c15ULL ^
                                static_cast<uint64_t>(in_.layer) * 0xc2b2ae3d27d4eb4fULL ^
                                static_cast<uint64_t>(step);
      const SelectionScope scope(in_.options.ties, tie_seed, &tally_);
      policy_.SelectVictims(request, decisions_);
    }
    for (int s = 0; s < num_streams_; ++s) {
      const EvictionDecision& d = decisions_[static_cast<size_t>(s)];
      KVSIM_ASSERT(
          static_cast<int64_t>(d.victims.size()) >= min_victims_[static_cast<size_t>(s)],
          "policy {} chose {} victims in layer {} stream {} at step {}, at least {} needed",
          policy_.Name(), d.victims.size(), in_.layer, s, step,
          min_victims_[static_cast<size_t>(s)]);
      if (d.victims.empty() && d.rewrites.empty()) continue;
      caches_[static_cast<size_t>(s)].Apply(d);
      // The cache changed: attention computed before it no longer lines up with the slots.
      views_[static_cast<size_t>(s)].attention = nullptr;
      if (!d.victims.empty()) policy_.OnEvicted(s, d.victims);
    }
  }

  void Measure(int64_t t) {
    ++result_.steps;
    // Streams whose cache changed since they attended (before-attend eviction) attend again.
    for (int s = 0; s < num_streams_; ++s) {
      stale_[static_cast<size_t>(s)] = views_[static_cast<size_t>(s)].attention == nullptr;
      if (stale_[static_cast<size_t>(s)]) PrepareMask(s, t);
    }
    ForEachStream([&](int s) {
      if (stale_[static_cast<size_t>(s)]) ComputeAttention(s, t);
      const KvCache& cache = caches_[static_cast<size_t>(s)];
      const int first_q_head = views_[static_cast<size_t>(s)].first_q_head;
      auto out = outputs_.middleRows(first_q_head, queries_per_stream_);
      const RowMatrixXf& a = attention_[static_cast<size_t>(s)];
      if (scratch_[static_cast<size_t>(s)].full_row) {
        for (int i = 0; i < queries_per_stream_; ++i) {
          const std::span<const float> full = in_.logits->FullOutput(first_q_head + i, t);
          std::copy(full.begin(), full.end(), out.row(i).data());
        }
      } else if (in_.logits != nullptr) {
        AccumulateWeightedValues(a, cache, out);
      } else if (cache.IsSourcePrefix()) {  // resident V = the trace's first rows: no gather
        out.noalias() = a * cache.SourceValues(cache.size());
      } else {
        RowMatrixXf& values = scratch_[static_cast<size_t>(s)].values;
        if (values.rows() < cache.size()) {
          values.resize(std::max<int64_t>(cache.size(), 2 * values.rows()), shape_.head_dim);
        }
        for (int64_t slot = 0; slot < cache.size(); ++slot) values.row(slot) = cache.ValueRow(slot);
        out.noalias() = a * values.topRows(cache.size());
      }
    });
    for (int s = 0; s < num_streams_; ++s) {
      const KvCache& cache = caches_[static_cast<size_t>(s)];
      views_[static_cast<size_t>(s)].attention = &attention_[static_cast<size_t>(s)];
      resident_sum_ += static_cast<double>(cache.size());
      result_.resident_tokens_peak = std::max(result_.resident_tokens_peak, cache.size());
    }
    if (observer_ != nullptr) {
      observer_->OnMeasure(
          MeasureView{.layer = in_.layer, .step = t, .streams = views_, .outputs = &outputs_});
    }
  }

  void Ledger(int64_t t) {
    RecordKv(t, LedgerPhase::kDecode, step_high_water_bytes_);
    if (t == prompt_len_) {
      result_.ledger.Record(t, LedgerPhase::kDecode, in_.layer, MemoryCategory::kPrefillTransient,
                            0);
    }
    result_.ledger.Record(t, LedgerPhase::kDecode, in_.layer, MemoryCategory::kPolicyState,
                          policy_.StateBytes());
  }

  // K/V bytes of every stream by tier (kQueryHead mode: g copies of each KV head): the policy's
  // exact accounting if it keeps quantized entries, else every resident entry at full precision.
  KvTierBytes KvBytes() const {
    if (reports_tiers_) return *policy_.TierBytes(views_);
    int64_t tokens = 0;
    for (const KvCache& cache : caches_) tokens += cache.size();
    return KvTierBytes{.full = tokens * shape_.KvBytesPerTokenPerHead()};
  }

  void RecordKv(int64_t step, LedgerPhase phase, const KvTierBytes& bytes) {
    result_.ledger.Record(step, phase, in_.layer, MemoryCategory::kKvFull, bytes.full);
    if (!reports_tiers_) return;
    result_.ledger.Record(step, phase, in_.layer, MemoryCategory::kKvQuantized, bytes.quantized);
    result_.ledger.Record(step, phase, in_.layer, MemoryCategory::kQuantMetadata, bytes.metadata);
  }

  LayerReplayInput in_;
  EvictionPolicy& policy_;
  ReplayObserver* observer_;
  const traces::Trace& trace_;
  const traces::LayerTensors& layer_;
  const models::ModelShape& shape_;
  int64_t prompt_len_;
  int64_t total_len_;
  bool query_head_mode_;
  int num_streams_;
  int queries_per_stream_;
  float scale_;

  std::vector<KvCache> caches_;
  std::vector<RowMatrixXf> attention_;
  std::vector<StreamView> views_;
  std::vector<int64_t> budgets_;
  std::vector<int64_t> min_victims_;
  std::vector<EvictionDecision> decisions_;
  RowMatrixXf outputs_;
  // Per-stream scratch, reused across steps (streams compute in parallel).
  struct StreamScratch {
    RowMatrixXf query_rows;                // the stream's queries of the step
    std::vector<const float*> logit_rows;  // per query head of the stream: its shared logits
    RowMatrixXf values;                    // resident V rows in slot order
    std::vector<uint8_t> mask;             // EvictionPolicy::AttendMask, one per resident slot
    bool masked = false;                   // the policy masked this step
    bool full_row = false;                 // attention is the shared full-cache row (SharedLogits)
  };
  std::vector<StreamScratch> scratch_;
  std::vector<uint8_t> stale_;  // per stream: attention must be recomputed at measure
  EventQueue queue_;
  int64_t scheduled_through_ = 0;  // decode events are queued up to this step
  KvTierBytes step_high_water_bytes_;
  std::vector<std::span<const uint8_t>> gate_flags_;  // per KV head; empty without flags
  bool reports_tiers_ = false;                        // the policy implements TierBytes
  std::map<int32_t, std::pair<int64_t, std::string>> arrival_roles_;  // turn -> first pos, role
  double resident_sum_ = 0.0;
  LayerReplayResult result_;
  SelectionTally tally_;
};

LayerReplay::LayerReplay(const LayerReplayInput& input,
                         policies::EvictionPolicy& policy,
                         ReplayObserver* observer) {
  KVSIM_ASSERT(input.trace != nullptr, "no trace");
  KVSIM_ASSERT(input.layer >= 0 && input.layer < input.trace->num_layers(), "layer {} out of range",
               input.layer);
  KVSIM_ASSERT(input.budget_tokens >= 0, "negative budget {}", input.budget_tokens);
  run_ = std::make_unique<LayerRun>(input, policy, observer);
  run_->Start();
}

LayerReplay::~LayerReplay() = default;
LayerReplay::LayerReplay(LayerReplay&&) noexcept = default;
LayerReplay& LayerReplay::operator=(LayerReplay&&) noexcept = default;

void LayerReplay::AdvanceThrough(int64_t last_step) { run_->AdvanceThrough(last_step); }

std::span<const policies::StreamView> LayerReplay::streams() const { return run_->streams(); }

LayerReplayResult LayerReplay::Finish() { return run_->Finish(); }

LayerReplayResult ReplayLayer(const LayerReplayInput& input,
                              policies::EvictionPolicy& policy,
                              ReplayObserver* observer) {
  return LayerReplay(input, policy, observer).Finish();
}

}  // namespace kvsim::sim
