#include "sim/serving/scheduler.h"

#include <algorithm>
#include <deque>

#include "common/error.h"
#include "policies/eviction_policy.h"

namespace kvsim::serving {

const char* OnFullName(OnFull on_full) {
  switch (on_full) {
    case OnFull::kQueue:
      return "queue";
    case OnFull::kPreemptRecompute:
      return "preempt-recompute";
    case OnFull::kPreemptSwap:
      return "preempt-swap";
    case OnFull::kEvict:
      return "evict";
  }
  return "?";
}

OnFull ParseOnFull(const std::string& text, const std::string& context) {
  for (OnFull v :
       {OnFull::kQueue, OnFull::kPreemptRecompute, OnFull::kPreemptSwap, OnFull::kEvict}) {
    if (text == OnFullName(v)) return v;
  }
  ThrowInputError("{}: '{}': expected queue, preempt-recompute, preempt-swap or evict", context,
                  text);
}

const char* BudgetShareName(BudgetShare share) {
  switch (share) {
    case BudgetShare::kEqual:
      return "equal";
    case BudgetShare::kProportional:
      return "proportional";
    case BudgetShare::kGlobal:
      return "global";
  }
  return "?";
}

BudgetShare ParseBudgetShare(const std::string& text, const std::string& context) {
  for (BudgetShare v : {BudgetShare::kEqual, BudgetShare::kProportional, BudgetShare::kGlobal}) {
    if (text == BudgetShareName(v)) return v;
  }
  ThrowInputError("{}: '{}': expected equal, proportional or global", context, text);
}

void SchedulerConfig::Validate(const std::string& context) const {
  if (iteration_tokens < 1 || iteration_tokens > 1'000'000) {
    ThrowInputError("{}: iteration_tokens {} must be in [1, 1000000]", context, iteration_tokens);
  }
  if (max_running < 1 || max_running > 1'000'000) {
    ThrowInputError("{}: max_running {} must be in [1, 1000000]", context, max_running);
  }
  if (min_budget_tokens < 1) {
    ThrowInputError("{}: min_budget_tokens {} must be >= 1", context, min_budget_tokens);
  }
}

namespace {

enum class State { kPending, kWaiting, kRunning, kSwapped, kDone };

struct Seq {
  int64_t prompt_len = 0;
  int64_t decode_len = 0;
  int64_t policy_allowance = 0;  // policy budget + 1 (kUnlimitedTokens for an unbounded policy)
  int64_t allowance = 0;         // current: the pool's share may be smaller (kEvict)
  State state = State::kPending;
  bool in_prefill = true;
  int64_t prefilled = 0;
  int64_t prefill_target = 0;  // the prompt, or prompt + decoded after a recompute preemption
  int64_t decoded = 0;
  int64_t swapped_tokens = 0;
  int64_t reserved_rows = 0;  // kQueue
};

struct Planned {
  int64_t seq = 0;
  int64_t chunk = 0;  // prefill tokens; 0 = one decode step
  int64_t from = 0;   // context before this iteration
};

// sum over i in (from, to] of min(i, cap): attended positions of prefill queries from..to-1.
double AttendedPairs(int64_t from, int64_t to, int64_t cap) {
  const auto tri = [](double n) { return n * (n + 1.0) / 2.0; };
  const auto upto = [&](int64_t n) {  // sum_{i=1..n} min(i, cap)
    if (n <= cap) return tri(static_cast<double>(n));
    return tri(static_cast<double>(cap)) + static_cast<double>(cap) * static_cast<double>(n - cap);
  };
  return upto(to) - upto(from);
}

class Run {
 public:
  Run(const SchedulerConfig& config,
      const PoolGeometry& geometry,
      const CostModel& cost,
      const models::ModelShape& shape,
      const std::vector<SequenceShape>& shapes,
      const std::vector<ServingRequest>& requests,
      SequenceScorer* scorer)
      : config_(config),
        cost_(cost),
        shape_(shape),
        requests_(requests),
        pool_(geometry, static_cast<int64_t>(requests.size())),
        seqs_(requests.size()) {
    result_.requests.resize(requests.size());
    for (size_t i = 0; i < requests.size(); ++i) {
      const SequenceShape& s = shapes.at(static_cast<size_t>(requests[i].trace));
      Seq& q = seqs_[i];
      q.prompt_len = s.prompt_len;
      q.decode_len = s.decode_len;
      q.policy_allowance =
          s.policy_budget_tokens >= policies::kUnlimitedTokens || s.keeps_every_token
              ? policies::kUnlimitedTokens
              : s.policy_budget_tokens + 1;
      q.allowance = q.policy_allowance;
      q.prefill_target = s.prompt_len;
      RequestRecord& r = result_.requests[i];
      r.id = requests[i].id;
      r.trace = requests[i].trace;
      r.arrival_s = requests[i].arrival_s;
      r.min_budget_tokens = s.policy_budget_tokens;
      pool_.SetStreamBytes(static_cast<int64_t>(i), s.stream_bytes.get());
    }
    evict_ = config.on_full == OnFull::kEvict;
    scorer_ = evict_ && config.share == BudgetShare::kGlobal ? scorer : nullptr;
  }

  ScheduleResult Go() {
    size_t next = 0;
    double now = 0.0;
    while (true) {
      for (; next < requests_.size() && requests_[next].arrival_s <= now; ++next) Arrive(next);
      if (running_.empty() && waiting_.empty() && swapped_.empty()) {
        if (next == requests_.size()) break;
        now = std::max(now, requests_[next].arrival_s);
        continue;
      }
      now_ = now;
      batch_.clear();
      swap_bytes_ = 0;
      transient_bytes_ = 0;
      Plan();
      KVSIM_ASSERT(!batch_.empty(), "scheduler made no progress at t={}", now);
      IterationWork work;
      work.swap_bytes = swap_bytes_;
      for (const Planned& p : batch_) {
        const Seq& s = seqs_[static_cast<size_t>(p.seq)];
        const int64_t held = pool_.tokens(p.seq);
        work.attended_kv_bytes += pool_.BytesFor(p.seq, held).total();
        if (p.chunk == 0) {
          work.tokens += 1;
          work.attended_pairs += static_cast<double>(held);
        } else {
          work.tokens += p.chunk;
          work.attended_pairs += AttendedPairs(p.from, p.from + p.chunk, s.allowance);
          // The chunk's K/V beside what was kept before it, down to what is kept after it.
          const int64_t transient = std::min(p.from, s.allowance) + p.chunk - held;
          transient_bytes_ += std::max<int64_t>(0, transient) * pool_.geometry().TokenBytes();
        }
        RequestRecord& r = result_.requests[static_cast<size_t>(p.seq)];
        if (s.allowance < policies::kUnlimitedTokens) {
          r.min_budget_tokens = std::min(r.min_budget_tokens, s.allowance - 1);
        }
        r.peak_tokens = std::max(r.peak_tokens, held);
        if (p.chunk == 0) {
          const int64_t budget = std::min(s.allowance - 1, s.prompt_len + s.decode_len);
          r.mean_budget_tokens += static_cast<double>(budget);
          r.decode_budgets.push_back(budget);
        }
      }
      const double dt = IterationSeconds(cost_, shape_, work);
      now += dt;
      for (const Planned& p : batch_) Complete(p, now);
      Sample(now, dt, work.tokens);
      ++result_.iterations;
    }
    result_.end_s = now;
    return std::move(result_);
  }

 private:
  Seq& seq(int64_t i) { return seqs_[static_cast<size_t>(i)]; }
  RequestRecord& record(int64_t i) { return result_.requests[static_cast<size_t>(i)]; }
  int64_t Context(const Seq& s) const {
    return s.in_prefill ? s.prefilled : s.prompt_len + s.decoded;
  }
  int64_t Held(const Seq& s, int64_t context) const { return std::min(context, s.allowance); }
  int64_t PeakRows(int64_t id) const {
    const Seq& s = seqs_[static_cast<size_t>(id)];
    return pool_.RowsFor(id, std::min(s.prompt_len + s.decode_len, s.policy_allowance));
  }
  static void InsertSorted(std::deque<int64_t>& q, int64_t id) {
    q.insert(std::upper_bound(q.begin(), q.end(), id), id);
  }

  void Arrive(size_t i) {
    Seq& s = seqs_[i];
    const int64_t rows = pool_.geometry().capacity_rows;
    const bool never_fits =
        evict_ ? rows * pool_.geometry().block_tokens < config_.min_budget_tokens + 1
               : PeakRows(static_cast<int64_t>(i)) > rows;
    if (never_fits) {
      s.state = State::kDone;
      result_.requests[i].rejected = true;
      ++finished_;
      return;
    }
    s.state = State::kWaiting;
    waiting_.push_back(static_cast<int64_t>(i));
  }

  // Forms this iteration's batch (batch_), changing the pool as it goes.
  void Plan() {
    int64_t left = config_.iteration_tokens;
    if (evict_) {
      // Admission first: the shares depend on how many run.
      for (int64_t id : running_) {
        const Seq& s = seq(id);
        left -= s.in_prefill ? s.prefill_target - s.prefilled : 1;
      }
      const int64_t rows = pool_.geometry().capacity_rows;
      while (!waiting_.empty() && left > 0 &&
             static_cast<int64_t>(running_.size()) < config_.max_running) {
        const int64_t n = static_cast<int64_t>(running_.size()) + 1;
        if (rows / n * pool_.geometry().block_tokens < config_.min_budget_tokens + 1) break;
        const int64_t id = waiting_.front();
        waiting_.pop_front();
        StartRunning(id);
        left -= seq(id).prefill_target;
      }
      Reshare();
      left = config_.iteration_tokens;
    }
    // 1. Decodes, oldest first; the pool makes room by preempting the latest arrived.
    const std::vector<int64_t> order(running_.begin(), running_.end());
    for (int64_t id : order) {
      Seq& s = seq(id);
      if (s.state != State::kRunning || s.in_prefill) continue;
      if (!MakeRoom(id, Held(s, Context(s) + 1))) continue;
      pool_.Set(id, Held(s, Context(s) + 1));
      batch_.push_back({id, 0, Context(s)});
      --left;
    }
    // 2. Swapped sequences come back, oldest first, before any new admission (vLLM).
    while (!swapped_.empty() && static_cast<int64_t>(running_.size()) < config_.max_running) {
      const int64_t id = swapped_.front();
      Seq& s = seq(id);
      const int64_t need = s.in_prefill ? s.swapped_tokens : Held(s, Context(s) + 1);
      if (pool_.FreeRowsIf(id, need) < 0) break;
      swapped_.pop_front();
      const int64_t bytes = pool_.BytesFor(id, s.swapped_tokens).total();
      swap_bytes_ += bytes;
      swapped_bytes_total_ -= bytes;
      s.swapped_tokens = 0;
      s.state = State::kRunning;
      InsertSorted(running_, id);
      pool_.Set(id, need);
      if (!s.in_prefill) {
        batch_.push_back({id, 0, Context(s)});
        --left;
      }
    }
    // 3. Prefill chunks: running sequences in their prompt, oldest first, then admissions.
    const std::vector<int64_t> prefilling(running_.begin(), running_.end());
    for (int64_t id : prefilling) {
      if (left <= 0) break;
      Seq& s = seq(id);
      if (s.state != State::kRunning || !s.in_prefill) continue;
      GivePrefillChunk(id, left);
    }
    while (!evict_ && swapped_.empty() && !waiting_.empty() && left > 0 &&
           static_cast<int64_t>(running_.size()) < config_.max_running) {
      const int64_t id = waiting_.front();
      Seq& s = seq(id);
      const int64_t chunk = std::min(s.prefill_target, left);
      if (config_.on_full == OnFull::kQueue) {
        if (reserved_rows_ + PeakRows(id) > pool_.geometry().capacity_rows) break;
        s.reserved_rows = PeakRows(id);
        reserved_rows_ += s.reserved_rows;
      } else if (pool_.FreeRowsIf(id, Held(s, chunk)) < 0) {
        break;
      }
      waiting_.pop_front();
      StartRunning(id);
      GivePrefillChunk(id, left);
    }
  }

  void StartRunning(int64_t id) {
    seq(id).state = State::kRunning;
    InsertSorted(running_, id);
    if (record(id).first_scheduled_s < 0.0) record(id).first_scheduled_s = now_;
  }

  void GivePrefillChunk(int64_t id, int64_t& left) {
    Seq& s = seq(id);
    const int64_t chunk = std::min(s.prefill_target - s.prefilled, left);
    if (!MakeRoom(id, Held(s, s.prefilled + chunk))) return;
    pool_.Set(id, Held(s, s.prefilled + chunk));
    batch_.push_back({id, chunk, s.prefilled});
    left -= chunk;
  }

  // Frees rows until `id` can hold `tokens`, preempting the latest-arrived running sequence
  // (possibly `id` itself). Returns false if `id` was preempted.
  bool MakeRoom(int64_t id, int64_t tokens) {
    while (pool_.FreeRowsIf(id, tokens) < 0) {
      KVSIM_ASSERT(config_.on_full != OnFull::kQueue, "queue reservation overflow");
      KVSIM_ASSERT(!evict_, "evict share overflow");
      const int64_t victim = running_.back();
      Preempt(victim);
      if (victim == id) return false;
    }
    return true;
  }

  void Preempt(int64_t id) {
    Seq& s = seq(id);
    running_.pop_back();
    std::erase_if(batch_, [id](const Planned& p) { return p.seq == id; });
    ++record(id).preemptions;
    if (config_.on_full == OnFull::kPreemptSwap) {
      s.swapped_tokens = pool_.tokens(id);
      const int64_t bytes = pool_.BytesFor(id, s.swapped_tokens).total();
      swapped_bytes_total_ += bytes;
      swap_bytes_ += bytes;
      pool_.Set(id, 0);
      s.state = State::kSwapped;
      InsertSorted(swapped_, id);
      return;
    }
    // Recompute: the blocks are freed; the context is prefilled again later.
    pool_.Set(id, 0);
    if (!s.in_prefill) s.prefill_target = s.prompt_len + s.decoded;
    s.in_prefill = true;
    s.prefilled = 0;
    s.state = State::kWaiting;
    InsertSorted(waiting_, id);
  }

  // kEvict: every running sequence's allowance from its share of the pool's rows; held tokens
  // above it are evicted (by the sequence's policy, in the replay).
  void Reshare() {
    const int64_t n = static_cast<int64_t>(running_.size());
    if (n == 0) return;
    if (scorer_ != nullptr) {
      ReshareGlobal();
      return;
    }
    const int64_t rows = pool_.geometry().capacity_rows;
    const int64_t b = pool_.geometry().block_tokens;
    double total_len = 0.0;
    for (int64_t id : running_) total_len += static_cast<double>(Length(seq(id)));
    for (int64_t id : running_) {
      Seq& s = seq(id);
      int64_t share = rows / n;
      if (config_.share == BudgetShare::kProportional) {
        share = 1 + static_cast<int64_t>(static_cast<double>(rows - n) *
                                         static_cast<double>(Length(s)) / total_len);
      }
      s.allowance = std::min(s.policy_allowance, share * b);
      if (pool_.tokens(id) > s.allowance) pool_.Set(id, s.allowance);
    }
  }
  // kGlobal with scores: sequences with no score yet keep the equal share, the others get at
  // least min_budget_tokens + 1 tokens and the remaining rows by value (global_share.h); then
  // each decoding sequence's live state advances under its new allowance.
  void ReshareGlobal() {
    const int64_t n = static_cast<int64_t>(running_.size());
    const int64_t rows = pool_.geometry().capacity_rows;
    const int64_t b = pool_.geometry().block_tokens;
    const auto rows_for = [b](int64_t tokens) { return (tokens + b - 1) / b; };
    claims_.resize(running_.size());
    for (size_t i = 0; i < running_.size(); ++i) {
      const Seq& s = seq(running_[i]);
      RowClaim& c = claims_[i];
      c.fixed_rows = -1;
      if (s.in_prefill || !scorer_->Value(running_[i], c.value)) {
        c.fixed_rows = rows / n;
        continue;
      }
      c.max_rows = rows_for(std::min(s.policy_allowance, Length(s)));
      c.min_rows = std::min(rows_for(config_.min_budget_tokens + 1), c.max_rows);
    }
    const std::vector<int64_t> share = AllocateRowsByValue(rows, b, claims_);
    for (size_t i = 0; i < running_.size(); ++i) {
      const int64_t id = running_[i];
      Seq& s = seq(id);
      s.allowance = std::min(s.policy_allowance, share[i] * b);
      if (pool_.tokens(id) > s.allowance) pool_.Set(id, s.allowance);
      if (!s.in_prefill) scorer_->Decode(id, s.decoded, s.allowance - 1);
    }
  }
  int64_t Length(const Seq& s) const {
    return s.in_prefill ? std::max<int64_t>(s.prefill_target, 1) : Context(s) + 1;
  }

  void Complete(const Planned& p, double now) {
    Seq& s = seq(p.seq);
    RequestRecord& r = record(p.seq);
    if (p.chunk > 0) {
      s.prefilled += p.chunk;
      if (s.prefilled < s.prefill_target) return;
      s.in_prefill = false;
      if (r.first_token_s < 0.0) r.first_token_s = now;
    } else {
      ++s.decoded;
      ++r.decode_tokens;
    }
    if (s.decoded < s.decode_len) return;
    if (scorer_ != nullptr) scorer_->Done(p.seq);
    if (r.decode_tokens > 0) r.mean_budget_tokens /= static_cast<double>(r.decode_tokens);
    r.finish_s = now;
    ++finished_;
    s.state = State::kDone;
    pool_.Set(p.seq, 0);
    reserved_rows_ -= s.reserved_rows;
    running_.erase(std::find(running_.begin(), running_.end(), p.seq));
  }

  void Sample(double now, double dt, int64_t tokens) {
    PoolSample x;
    x.time_s = now;
    x.used_bytes = pool_.used_bytes();
    x.kv_full_bytes = pool_.used().full;
    x.kv_quantized_bytes = pool_.used().quantized;
    x.quant_metadata_bytes = pool_.used().metadata;
    x.fragmentation_bytes = pool_.fragmentation_bytes();
    x.free_bytes = pool_.geometry().capacity_bytes - pool_.allocated_bytes();
    x.swapped_bytes = swapped_bytes_total_;
    x.prefill_transient_bytes = transient_bytes_;
    x.running = static_cast<int64_t>(running_.size());
    x.waiting = static_cast<int64_t>(waiting_.size());
    x.swapped = static_cast<int64_t>(swapped_.size());
    while (arrived_ < requests_.size() && requests_[arrived_].arrival_s <= now) ++arrived_;
    x.in_system = static_cast<int64_t>(arrived_) - finished_;
    x.batch_tokens = tokens;
    x.iteration_s = dt;
    if (pool_.allocated_bytes() > result_.peak_allocated_bytes) {
      result_.peak_allocated_bytes = pool_.allocated_bytes();
      result_.peak_time_s = now;
    }
    result_.timeline.push_back(x);
  }

  const SchedulerConfig& config_;
  const CostModel& cost_;
  const models::ModelShape& shape_;
  const std::vector<ServingRequest>& requests_;
  KvPool pool_;
  std::vector<Seq> seqs_;
  bool evict_ = false;
  SequenceScorer* scorer_ = nullptr;  // kGlobal with scores
  std::vector<RowClaim> claims_;      // scratch of ReshareGlobal
  std::deque<int64_t> running_;       // ids, ascending = arrival order
  std::deque<int64_t> waiting_;
  std::deque<int64_t> swapped_;
  std::vector<Planned> batch_;
  int64_t swap_bytes_ = 0;
  int64_t transient_bytes_ = 0;      // this iteration's prefill_transient
  int64_t swapped_bytes_total_ = 0;  // of every swapped sequence, in host memory
  int64_t reserved_rows_ = 0;
  double now_ = 0.0;
  size_t arrived_ = 0;    // requests with arrival_s <= the last sample's time
  int64_t finished_ = 0;  // finished or rejected
  ScheduleResult result_;
};

}  // namespace

ScheduleResult Schedule(const SchedulerConfig& config,
                        const PoolGeometry& pool,
                        const CostModel& cost,
                        const models::ModelShape& shape,
                        const std::vector<SequenceShape>& shapes,
                        const std::vector<ServingRequest>& requests,
                        SequenceScorer* scorer) {
  // A policy that keeps every token cannot be squeezed: kEvict falls back to recompute.
  SchedulerConfig effective = config;
  for (const SequenceShape& s : shapes) {
    if (config.on_full == OnFull::kEvict && s.keeps_every_token) {
      effective.on_full = OnFull::kPreemptRecompute;
    }
  }
  return Run(effective, pool, cost, shape, shapes, requests, scorer).Go();
}

}  // namespace kvsim::serving
