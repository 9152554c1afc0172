#include "sim/serving/serve.h"

#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <tuple>

#include "common/error.h"
#include "policies/eviction_policy.h"
#include "policies/registry.h"
#include "sim/budget.h"
#include "sim/serving/live_scores.h"
#include "traces/trace_io.h"

namespace kvsim::serving {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Policies that keep every token: `evict` cannot squeeze them (full; kivi, charged its real
// bytes by StreamBytes below).
bool KeepsEveryToken(const std::string& policy) { return policy == "full" || policy == "kivi"; }

// One (layer, KV head)'s bytes by token count for a policy that keeps every token in a cheaper
// form (KIVI), from the policy itself; null for full precision.
std::shared_ptr<const StreamBytesTable> StreamBytes(const analysis::PolicySpec& spec,
                                                    const traces::TraceMeta& meta) {
  policies::PolicySetup setup;
  setup.shape = meta.shape;
  setup.prompt_len = meta.prompt_len;
  setup.total_len = meta.total_len;
  const std::unique_ptr<policies::EvictionPolicy> policy =
      policies::MakePolicy(spec.name, spec.params, setup);
  if (!policy->KeepAllStreamBytes(0).has_value()) return nullptr;
  auto table = std::make_shared<StreamBytesTable>();
  for (int64_t t = 0; t <= meta.total_len; ++t) table->push_back(*policy->KeepAllStreamBytes(t));
  return table;
}

// numpy's default percentile (linear between order statistics); NaN for no values.
std::array<double, 3> Percentiles(std::vector<double> values) {
  std::array<double, 3> out{kNaN, kNaN, kNaN};
  if (values.empty()) return out;
  std::sort(values.begin(), values.end());
  const std::array<double, 3> qs = {0.50, 0.95, 0.99};
  for (size_t i = 0; i < qs.size(); ++i) {
    const double h = static_cast<double>(values.size() - 1) * qs[i];
    const auto lo = static_cast<size_t>(std::floor(h));
    const size_t hi = std::min(lo + 1, values.size() - 1);
    out[i] = values[lo] + (h - static_cast<double>(lo)) * (values[hi] - values[lo]);
  }
  return out;
}

CellSummary Summarize(const ServingCell& cell) {
  CellSummary s;
  const ScheduleResult& r = cell.schedule;
  std::vector<double> latency, ttft, tpot, queue;
  double recall_sum = 0.0, recall_at_min_sum = 0.0, time_in_system = 0.0;
  int64_t recall_n = 0, tokens = 0;
  for (size_t i = 0; i < r.requests.size(); ++i) {
    const RequestRecord& q = r.requests[i];
    ++s.requests;
    s.preemptions += q.preemptions;
    if (q.rejected) {
      ++s.rejected;
      continue;
    }
    if (q.finish_s < 0.0) continue;
    ++s.completed;
    tokens += q.decode_tokens;
    latency.push_back(q.finish_s - q.arrival_s);
    ttft.push_back(q.first_token_s - q.arrival_s);
    queue.push_back(q.first_scheduled_s - q.arrival_s);
    if (q.decode_tokens > 0) {
      tpot.push_back((q.finish_s - q.first_token_s) / static_cast<double>(q.decode_tokens));
    }
    time_in_system += q.finish_s - q.arrival_s;
    if (!std::isnan(cell.quality[i].mass_recall_mean)) {
      recall_sum += cell.quality[i].mass_recall_mean;
      recall_at_min_sum += cell.quality_at_min[i].mass_recall_mean;
      ++recall_n;
    }
  }
  s.end_s = r.end_s;
  if (r.end_s > 0.0) {
    s.output_tokens_per_s = static_cast<double>(tokens) / r.end_s;
    s.requests_per_s = static_cast<double>(s.completed) / r.end_s;
  }
  s.latency_s = Percentiles(latency);
  s.ttft_s = Percentiles(ttft);
  s.tpot_s = Percentiles(tpot);
  s.queue_s = Percentiles(queue);
  s.peak_bytes = r.peak_allocated_bytes;
  s.peak_time_s = r.peak_time_s;
  s.mean_recall = recall_n > 0 ? recall_sum / static_cast<double>(recall_n) : kNaN;
  s.mean_recall_at_min_budget =
      recall_n > 0 ? recall_at_min_sum / static_cast<double>(recall_n) : kNaN;
  double frag = 0.0, in_system = 0.0;
  for (const PoolSample& x : r.timeline) {
    frag += static_cast<double>(x.fragmentation_bytes) * x.iteration_s;
    in_system += static_cast<double>(x.in_system) * x.iteration_s;
  }
  if (r.end_s > 0.0) {
    s.mean_fragmentation_bytes = frag / r.end_s;
    s.little_l = in_system / r.end_s;
    // lambda = completed / end, W = mean time in system: lambda W = total time in system / end.
    s.little_lambda_w = time_in_system / r.end_s;
  }
  return s;
}

}  // namespace

ServingResult RunServing(const ServingScenario& scenario) {
  const auto start = std::chrono::steady_clock::now();
  ServingResult result;
  std::vector<traces::TraceMeta> metas;
  for (const std::string& path : scenario.traces) {
    metas.push_back(traces::TraceReader(path).meta());
    result.trace_names.push_back(std::filesystem::path(path).stem().string());
    if (!(metas.back().shape == metas.front().shape)) {
      ThrowInputError("{}: model shape differs from {}'s: one pool serves one model", path,
                      scenario.traces.front());
    }
  }
  const models::ModelShape& shape = metas.front().shape;
  for (int64_t capacity : scenario.capacities_bytes) {  // errors before any work
    (void)PoolGeometry::Make(shape, scenario.block_tokens, capacity, "pool.capacity");
  }

  // Per policy: what each trace costs the scheduler.
  std::vector<std::vector<SequenceShape>> shapes(scenario.policies.size());
  for (size_t p = 0; p < scenario.policies.size(); ++p) {
    for (const traces::TraceMeta& meta : metas) {
      SequenceShape s;
      s.prompt_len = meta.prompt_len;
      s.decode_len = meta.decode_len();
      s.policy_budget_tokens = policies::kUnlimitedTokens;
      s.keeps_every_token = KeepsEveryToken(scenario.policies[p].name);
      s.stream_bytes = StreamBytes(scenario.policies[p], meta);
      if (scenario.budget && !s.keeps_every_token) {
        s.policy_budget_tokens = sim::Budget::Parse(*scenario.budget, "budget")
                                     .ResolveTokens(meta.prompt_len, shape.KvBytesPerToken());
      }
      shapes[p].push_back(s);
    }
  }
  std::vector<std::vector<ServingRequest>> requests;  // per rate
  for (double rate : scenario.rates) {
    WorkloadSpec w = scenario.workload;
    w.rate_per_s = rate;
    requests.push_back(MakeRequests(w, result.trace_names));
  }
  for (size_t p = 0; p < scenario.policies.size(); ++p) {
    for (double rate : scenario.rates) {
      for (int64_t capacity : scenario.capacities_bytes) {
        ServingCell cell;
        cell.policy = scenario.policies[p];
        cell.rate_per_s = rate;
        cell.capacity_bytes = capacity;
        result.cells.push_back(std::move(cell));
      }
    }
  }
  // share = global: policies with a token score are replayed live inside the schedule, which
  // needs every trace whole in memory (read once, shared read-only by the cells).
  std::vector<bool> live(scenario.policies.size(), false);
  std::vector<traces::Trace> whole;
  std::vector<const traces::Trace*> whole_ptrs;
  if (scenario.scheduler.on_full == OnFull::kEvict &&
      scenario.scheduler.share == BudgetShare::kGlobal) {
    for (size_t p = 0; p < scenario.policies.size(); ++p) {
      live[p] = !KeepsEveryToken(scenario.policies[p].name) &&
                PolicyHasScores(scenario.policies[p], metas.front());
    }
    if (std::find(live.begin(), live.end(), true) != live.end()) {
      // Refused before reading when the traces cannot fit 3/4 of the machine's memory.
      const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
      if (pages > 0 && page > 0) {
        CheckTracesFitInMemory(
            scenario.traces, metas,
            static_cast<int64_t>(0.75 * static_cast<double>(pages) * static_cast<double>(page)));
      }
      for (const std::string& path : scenario.traces) whole.push_back(traces::ReadTrace(path));
      for (const traces::Trace& t : whole) whole_ptrs.push_back(&t);
    }
  }
  const size_t per_policy = scenario.rates.size() * scenario.capacities_bytes.size();
  // More arena slots than cores only makes TBB warn; the result is the same for any count.
  const int threads = std::min(scenario.threads > 0 ? scenario.threads : 4096,
                               tbb::this_task_arena::max_concurrency());
  tbb::task_arena arena(threads);
  arena.execute([&] {
    tbb::parallel_for(size_t{0}, result.cells.size(), [&](size_t c) {
      ServingCell& cell = result.cells[c];
      const size_t p = c / per_policy;
      const size_t rate = (c % per_policy) / scenario.capacities_bytes.size();
      const PoolGeometry geometry =
          PoolGeometry::Make(shape, scenario.block_tokens, cell.capacity_bytes, "pool.capacity");
      cell.on_full = scenario.scheduler.on_full;
      if (cell.on_full == OnFull::kEvict && KeepsEveryToken(cell.policy.name)) {
        cell.on_full = OnFull::kPreemptRecompute;
      }
      std::unique_ptr<SequenceScorer> scorer;
      if (live[p]) {
        LiveScoresInput in;
        in.traces = whole_ptrs;
        for (const SequenceShape& t : shapes[p])
          in.own_budget_tokens.push_back(t.policy_budget_tokens);
        in.policy = cell.policy;
        in.options.seed = scenario.seed;
        for (const ServingRequest& q : requests[rate]) in.request_trace.push_back(q.trace);
        scorer = MakeLiveScorer(std::move(in));
      }
      cell.schedule = Schedule(scenario.scheduler, geometry, scenario.cost, shape, shapes[p],
                               requests[rate], scorer.get());
    });
  });

  // Open-loop quality through the sweep engine: each request under the budgets it had at each
  // decode step (its decode_budgets as a sim::Budget::schedule), and at the smallest of them (a
  // conservative bound). Distinct replays run once per (policy, trace): a replay is its planned
  // budget (the policy's own, at most the trace length) and its schedule (empty: fixed).
  using ReplayKey = std::pair<int64_t, std::vector<int64_t>>;
  std::vector<std::vector<std::map<ReplayKey, ReplayQuality>>> quality(
      scenario.policies.size(), std::vector<std::map<ReplayKey, ReplayQuality>>(metas.size()));
  const auto total_len = [&](const RequestRecord& q) {
    return metas[static_cast<size_t>(q.trace)].total_len;
  };
  const auto planned = [&](size_t p, const RequestRecord& q) {
    const int64_t own = shapes[p][static_cast<size_t>(q.trace)].policy_budget_tokens;
    return std::clamp<int64_t>(own, 1, total_len(q));
  };
  const auto exact_key = [&](size_t p, const RequestRecord& q) {
    const int64_t base = planned(p, q);
    std::vector<int64_t> schedule;
    for (const int64_t b : q.decode_budgets) schedule.push_back(std::clamp<int64_t>(b, 1, base));
    if (std::all_of(schedule.begin(), schedule.end(), [&](int64_t b) { return b == base; })) {
      schedule.clear();
    }
    return ReplayKey{base, std::move(schedule)};
  };
  const auto bound_key = [&](const RequestRecord& q) {
    return ReplayKey{std::clamp<int64_t>(q.min_budget_tokens, 1, total_len(q)), {}};
  };
  for (size_t c = 0; c < result.cells.size(); ++c) {
    const size_t p = c / per_policy;
    for (const RequestRecord& q : result.cells[c].schedule.requests) {
      if (q.rejected) continue;
      quality[p][static_cast<size_t>(q.trace)][exact_key(p, q)] = {};
      quality[p][static_cast<size_t>(q.trace)][bound_key(q)] = {};
    }
  }
  for (size_t p = 0; p < scenario.policies.size(); ++p) {
    for (size_t t = 0; t < metas.size(); ++t) {
      std::map<ReplayKey, ReplayQuality>& replays = quality[p][t];
      if (replays.empty()) continue;
      analysis::SweepPlan plan;
      plan.traces = {scenario.traces[t]};
      plan.policies = {scenario.policies[p]};
      std::vector<ReplayQuality*> slots;  // by budget label
      for (auto& [key, value] : replays) {
        sim::Budget budget;
        budget.kind = sim::Budget::Kind::kTokens;
        budget.value = static_cast<double>(key.first);
        budget.text = std::to_string(slots.size());  // a label: rows come back by it
        if (!key.second.empty()) {
          budget.schedule = std::make_shared<const std::vector<int64_t>>(key.second);
        }
        plan.budgets.push_back(std::move(budget));
        value.budget_tokens = key.second.empty() ? key.first : -1;
        slots.push_back(&value);
      }
      plan.options.seed = scenario.seed;
      plan.threads = scenario.threads;
      plan.keep_ledgers = false;
      // A live-scored policy's replays compute q . k themselves, as its live replays did: shared
      // full-cache logits differ in float rounding, which could flip a tie between the two.
      plan.share_logits = !live[p];
      const analysis::SweepResult sweep = analysis::RunSweep(plan);
      for (const analysis::ResultRow& row : sweep.table.rows()) {
        if (row.layer != "all") continue;
        ReplayQuality& q = *slots.at(static_cast<size_t>(std::stoll(row.budget)));
        q.mass_recall_mean = row.mass_recall.mean;
        q.mass_recall_p5 = row.mass_recall.p5;
        q.cosine_mean = row.cosine.mean;
        q.top8_recall = row.top_recall_mean[1];
      }
    }
  }
  for (size_t c = 0; c < result.cells.size(); ++c) {
    ServingCell& cell = result.cells[c];
    const size_t p = c / per_policy;
    for (const RequestRecord& q : cell.schedule.requests) {
      const ReplayQuality none{-1, kNaN, kNaN, kNaN, kNaN};
      const auto& replays = quality[p][static_cast<size_t>(q.trace)];
      cell.quality.push_back(q.rejected ? none : replays.at(exact_key(p, q)));
      cell.quality_at_min.push_back(q.rejected ? none : replays.at(bound_key(q)));
    }
    cell.summary = Summarize(cell);
  }
  result.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace kvsim::serving
