// The sweep engine: RunSweep / RunSweepOnTrace (analysis/sweep.h explains the schedule).
#include <fmt/format.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>
#include <tbb/task_group.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>

#include "analysis/full_attention_stream.h"
#include "analysis/metrics.h"
#include "analysis/sweep.h"
#include "common/error.h"
#include "common/progress.h"
#include "common/spill_file.h"
#include "policies/registry.h"
#include "sim/prefill_attention.h"
#include "sim/replay.h"
#include "traces/prompt_stats.h"
#include "traces/trace_io.h"

namespace kvsim::analysis {
namespace {

// One (cell, layer) replay's outcome.
struct LayerOutcome {
  sim::LayerReplayResult replay;
  MetricSamples samples;
};

// Where a spilled outcome's bulky vectors wait (SweepPlan::spill_threshold_bytes).
struct SpilledOutcome {
  SpillFile::Extent mass_recall, rel_l2_error, cosine, ledger;
};

// Moves `out`'s per-sample vectors into `spill`, leaving its scalars.
SpilledOutcome Spill(SpillFile& spill, LayerOutcome& out) {
  SpilledOutcome where;
  where.mass_recall = spill.Write<float>(out.samples.mass_recall);
  where.rel_l2_error = spill.Write<float>(out.samples.rel_l2_error);
  where.cosine = spill.Write<float>(out.samples.cosine);
  where.ledger = spill.Write<sim::LedgerSample>(out.replay.ledger.samples());
  std::vector<float>().swap(out.samples.mass_recall);
  std::vector<float>().swap(out.samples.rel_l2_error);
  std::vector<float>().swap(out.samples.cosine);
  out.replay.ledger = sim::MemoryLedger();
  return where;
}

// `kept` (scalars) with its vectors read back from `spill`.
LayerOutcome Unspill(const SpillFile& spill,
                     const LayerOutcome& kept,
                     const SpilledOutcome& where) {
  LayerOutcome out = kept;
  out.samples.mass_recall = spill.Read<float>(where.mass_recall);
  out.samples.rel_l2_error = spill.Read<float>(where.rel_l2_error);
  out.samples.cosine = spill.Read<float>(where.cosine);
  out.replay.ledger = sim::MemoryLedger(spill.Read<sim::LedgerSample>(where.ledger));
  return out;
}

// Where a sweep gets a layer's tensors: a trace already in memory, or a file read one layer at a
// time. trace() has every layer's place; a layer's tensors are there between Load and Release.
class LayerSource {
 public:
  virtual ~LayerSource() = default;
  virtual const traces::Trace& trace() const = 0;
  virtual void Load(int layer) = 0;
  virtual void Release(int layer) = 0;
  // The loaded layer's prompt column sums kept beside the trace (`kvsim stats`), if current.
  virtual std::optional<std::vector<Eigen::VectorXf>> StoredColumnSums(int /*layer*/) {
    return std::nullopt;
  }
};

class InMemoryLayers final : public LayerSource {
 public:
  explicit InMemoryLayers(const traces::Trace& trace) : trace_(trace) {}
  const traces::Trace& trace() const override { return trace_; }
  void Load(int /*layer*/) override {}
  void Release(int /*layer*/) override {}

 private:
  const traces::Trace& trace_;
};

class FileLayers final : public LayerSource {
 public:
  explicit FileLayers(const std::string& path) : path_(path), reader_(path) {
    trace_ = traces::Trace(reader_.meta(), std::vector<traces::LayerTensors>(
                                               static_cast<size_t>(reader_.meta().shape.layers)));
    if (reader_.has_gate_flags()) {
      std::vector<uint8_t> flags;
      for (int l = 0; l < reader_.meta().shape.layers; ++l) {
        for (int h = 0; h < reader_.meta().shape.kv_heads; ++h) {
          const std::vector<uint8_t> head = reader_.ReadGateFlags(l, h);
          flags.insert(flags.end(), head.begin(), head.end());
        }
      }
      trace_.set_gate_flags(std::move(flags));
    }
  }
  const traces::Trace& trace() const override { return trace_; }
  // One layer's buffers are reused from layer to layer: first-touching fresh memory costs more
  // than reading a float16 layer.
  void Load(int layer) override {
    traces::LayerTensors& slot = trace_.mutable_layer(layer);
    slot = std::move(spare_);
    reader_.ReadLayer(layer, &slot);
  }
  void Release(int layer) override { spare_ = std::move(trace_.mutable_layer(layer)); }
  std::optional<std::vector<Eigen::VectorXf>> StoredColumnSums(int layer) override {
    std::optional<traces::LayerPromptStats> stats =
        traces::LoadPromptStats(path_, layer, trace_.layer(layer), trace_.meta().prompt_len);
    if (!stats) return std::nullopt;
    return std::move(stats->column_sums);
  }

 private:
  std::string path_;
  traces::TraceReader reader_;
  traces::Trace trace_;
  traces::LayerTensors spare_;
};

ResultRow LayerRow(
    const ResultRow& base, int layer, int64_t budget, int64_t total_len, const LayerOutcome& out) {
  ResultRow row = base;
  row.layer = std::to_string(layer);
  // A policy that never evicts is bounded only by the trace: report T.
  row.budget_tokens =
      static_cast<double>(budget >= policies::kUnlimitedTokens ? total_len : budget);
  row.steps = out.replay.steps;
  row.mass_recall = Summarize(out.samples.mass_recall);
  row.rel_l2_error = Summarize(out.samples.rel_l2_error);
  row.cosine = Summarize(out.samples.cosine);
  for (size_t k = 0; k < kTopK.size(); ++k) {
    row.top_recall_mean[k] = out.samples.TopRecallMean(k);
  }
  row.resident_tokens_mean = out.replay.resident_tokens_mean;
  row.resident_tokens_peak = out.replay.resident_tokens_peak;
  row.kv_bytes_mean = out.replay.ledger.MeanDecodeBytes(layer, sim::MemoryLedger::kKvCategories);
  row.kv_bytes_peak = out.replay.ledger.PeakBytes(layer, sim::MemoryLedger::kKvCategories).bytes;
  row.mass_recall_worst_layer_mean = row.mass_recall.mean;
  row.worst_layer = row.layer;
  row.rel_l2_error_worst_layer_mean = row.rel_l2_error.mean;
  row.cosine_worst_layer_mean = row.cosine.mean;
  row.top_recall_worst_layer_mean = row.top_recall_mean;
  row.ranked_victims = out.replay.ranked_victims;
  row.tie_victims = out.replay.tie_victims;
  return row;
}

// Replays the plan's cells [first_cell, first_cell + num_cells) (PlanCells order) on one trace.
// A cell's rows do not depend on which other cells run beside it (the shared full-cache pass and
// prompt statistics are the same for all), so any split of the cells gives the same rows.
SweepResult RunSweepOnLayers(const SweepPlan& plan,
                             LayerSource& source,
                             std::string_view trace_name,
                             int first_cell,
                             int num_cells) {
  const auto start = std::chrono::steady_clock::now();
  const traces::Trace& trace = source.trace();
  const int num_layers = trace.num_layers();
  const int64_t prompt_len = trace.meta().prompt_len;
  const int64_t total_len = trace.meta().total_len;

  SweepResult result;
  const std::vector<CellKey> plan_cells = PlanCells(plan);
  KVSIM_ASSERT(first_cell >= 0 && num_cells >= 0 &&
                   first_cell + num_cells <= static_cast<int>(plan_cells.size()),
               "cells [{}, +{}) outside the plan's {}", first_cell, num_cells, plan_cells.size());
  result.cells.assign(plan_cells.begin() + first_cell, plan_cells.begin() + first_cell + num_cells);
  // Full-precision K/V bytes of one token over every layer and stream (bytes budgets).
  const int64_t bytes_per_token =
      trace.shape().KvBytesPerTokenPerHead() * num_layers *
      (plan.options.gqa_mode == sim::GqaMode::kQueryHead ? trace.shape().q_heads
                                                         : trace.shape().kv_heads);
  const auto spec_of = [&](int cell) -> const PolicySpec& {
    return plan.policies[static_cast<size_t>(first_cell + cell) / plan.budgets.size()];
  };

  // instances[cell][layer], budgets[cell][layer], outcomes[cell][layer]: preassigned slots.
  std::vector<std::vector<std::unique_ptr<policies::EvictionPolicy>>> instances(
      static_cast<size_t>(num_cells));
  std::vector<std::vector<int64_t>> budgets(static_cast<size_t>(num_cells));
  std::vector<std::vector<LayerOutcome>> outcomes(
      static_cast<size_t>(num_cells), std::vector<LayerOutcome>(static_cast<size_t>(num_layers)));
  std::vector<std::vector<std::vector<double>>> plan_stats(
      static_cast<size_t>(num_cells),
      std::vector<std::vector<double>>(static_cast<size_t>(num_layers)));

  // replayed_by[c]: the cell whose replay gives c's rows (c itself, or an earlier cell of the same
  // budget-ignoring policy and parameters); `replayed`: the cells that replay.
  std::vector<int> replayed_by(static_cast<size_t>(num_cells));
  for (int c = 0; c < num_cells; ++c) replayed_by[static_cast<size_t>(c)] = c;
  std::vector<int> replayed;
  // Finished layers' samples wait in `spill` when keeping every cell's in memory would be large.
  const int64_t decode_steps = total_len - prompt_len;
  const double samples_bytes = 3.0 * sizeof(float) * static_cast<double>(num_cells) * num_layers *
                               static_cast<double>(decode_steps) * trace.shape().q_heads;
  const bool spilling = plan.spill_threshold_bytes >= 0 && num_layers > 1 &&
                        samples_bytes > static_cast<double>(plan.spill_threshold_bytes);
  std::optional<SpillFile> spill;
  if (spilling) spill.emplace();
  std::vector<std::vector<SpilledOutcome>> spilled(
      spilling ? static_cast<size_t>(num_cells) : 0,
      std::vector<SpilledOutcome>(static_cast<size_t>(num_layers)));

  const int threads = plan.EffectiveThreads();
  ProgressBar progress(fmt::format("{}", trace_name), int64_t{num_cells} * num_layers,
                       plan.progress);
  tbb::task_arena arena(threads);
  arena.execute([&] {
    tbb::parallel_for(0, num_cells, [&](int c) {
      for (int l = 0; l < num_layers; ++l) {
        policies::PolicySetup setup;
        setup.shape = trace.shape();
        setup.layer = l;
        setup.options = plan.options;
        setup.prompt_len = prompt_len;
        setup.total_len = total_len;
        setup.seed = sim::LayerSeed(plan.options.seed, l);
        instances[static_cast<size_t>(c)].push_back(
            policies::MakePolicy(spec_of(c).name, spec_of(c).params, setup));
      }
    });
    const auto layer_policy = [&](int c, int l) -> policies::EvictionPolicy& {
      return *instances[static_cast<size_t>(c)][static_cast<size_t>(l)];
    };
    // A policy that ignores the budget gives the same rows under every budget: replay the first
    // cell of each parameter set and let the others take its outcome.
    for (int c = 0; c < num_cells; ++c) {
      const CellKey& key = result.cells[static_cast<size_t>(c)];
      if (!layer_policy(c, 0).IgnoresBudget()) continue;
      for (int first = 0; first < c; ++first) {
        const CellKey& other = result.cells[static_cast<size_t>(first)];
        if (replayed_by[static_cast<size_t>(first)] == first && other.policy == key.policy &&
            other.params == key.params) {
          replayed_by[static_cast<size_t>(c)] = first;
          break;
        }
      }
    }
    for (int c = 0; c < num_cells; ++c) {
      if (replayed_by[static_cast<size_t>(c)] == c) replayed.push_back(c);
    }
    const int num_replayed = static_cast<int>(replayed.size());

    // Planning pass: only cells whose policy splits the budget from prompt statistics need every
    // layer's prompt before any layer replays.
    std::vector<int> planning_cells;
    for (const int c : replayed) {
      if (layer_policy(c, 0).UsesPrefillLayerStats()) planning_cells.push_back(c);
    }
    // Column sums (the quadratic prompt statistic): from the trace's sidecar when it is current,
    // else computed on first use; sums computed in the planning pass are kept for the replay.
    std::vector<std::optional<std::vector<Eigen::VectorXf>>> kept_sums(
        static_cast<size_t>(num_layers));
    const auto make_prefill = [&](int l) {
      auto prefill = std::make_unique<sim::PrefillAttention>(trace.layer(l), prompt_len);
      std::optional<std::vector<Eigen::VectorXf>>& kept = kept_sums[static_cast<size_t>(l)];
      if (!kept) kept = source.StoredColumnSums(l);
      if (kept) prefill->SetColumnSums(std::move(*kept));
      kept.reset();
      return prefill;
    };
    const auto keep_sums = [&](int l, const sim::PrefillAttention& prefill) {
      if (!prefill.has_column_sums()) return;
      std::vector<Eigen::VectorXf> sums;
      for (int h = 0; h < prefill.num_q_heads(); ++h) sums.push_back(prefill.ColumnSums(h));
      kept_sums[static_cast<size_t>(l)] = std::move(sums);
    };
    for (int l = 0; !planning_cells.empty() && l < num_layers; ++l) {
      source.Load(l);
      const std::unique_ptr<sim::PrefillAttention> prefill = make_prefill(l);
      tbb::parallel_for(0, static_cast<int>(planning_cells.size()), [&](int i) {
        const int c = planning_cells[static_cast<size_t>(i)];
        plan_stats[static_cast<size_t>(c)][static_cast<size_t>(l)] =
            sim::LayerPlanStats(trace, l, layer_policy(c, l), *prefill);
      });
      keep_sums(l, *prefill);
      source.Release(l);
    }
    for (int c = 0; c < num_cells; ++c) {
      std::vector<policies::EvictionPolicy*> layer_policies;
      for (int l = 0; l < num_layers; ++l) layer_policies.push_back(&layer_policy(c, l));
      budgets[static_cast<size_t>(c)] = sim::AssignLayerBudgets(
          layer_policies, plan_stats[static_cast<size_t>(c)], prompt_len,
          result.cells[static_cast<size_t>(c)].budget.ResolveTokens(prompt_len, bytes_per_token));
    }

    // Oracles read the whole future: one extra pass per layer, only when a cell needs it.
    bool any_oracle = false;
    for (const int c : replayed) {
      any_oracle |= dynamic_cast<policies::OraclePolicy*>(&layer_policy(c, 0)) != nullptr;
    }
    FullAttentionStream::Options stream_options;
    stream_options.block_steps = plan.block_steps;
    stream_options.future_mass_group =
        any_oracle
            ? (plan.options.gqa_mode == sim::GqaMode::kQueryHead ? 1 : trace.shape().GroupSize())
            : 0;

    FullAttentionStream::Workspace stream_workspace;
    for (int l = 0; l < num_layers; ++l) {
      source.Load(l);
      const std::unique_ptr<sim::PrefillAttention> prefill = make_prefill(l);
      FullAttentionStream full(trace.layer(l), prompt_len, stream_options, &stream_workspace);
      std::vector<std::unique_ptr<LayerMetrics>> metrics(static_cast<size_t>(num_cells));
      std::vector<std::unique_ptr<sim::LayerReplay>> replays(static_cast<size_t>(num_cells));
      // The first block is current before any cell starts: policies may read the first decode
      // steps while compressing the prompt (LAQ oracle).
      if (full.num_blocks() > 0) full.ComputeBlock(0);
      tbb::parallel_for(0, num_replayed, [&](int i) {
        const int c = replayed[static_cast<size_t>(i)];
        const auto cell = static_cast<size_t>(c);
        sim::LayerReplayInput input;
        input.trace = &trace;
        input.layer = l;
        input.options = plan.options;
        input.budget_tokens = budgets[cell][static_cast<size_t>(l)];
        if (const auto& schedule = result.cells[cell].budget.schedule) {
          input.budget_schedule = *schedule;
          input.schedule_base = static_cast<int64_t>(result.cells[cell].budget.value);
        }
        input.prefill = prefill.get();
        input.future = &full;
        input.logits = plan.share_logits ? &full : nullptr;
        metrics[cell] = std::make_unique<LayerMetrics>(full);
        replays[cell] =
            std::make_unique<sim::LayerReplay>(input, layer_policy(c, l), metrics[cell].get());
      });
      // Block b + 1 is computed while the cells replay block b (the stream holds both): the
      // cells' per-step work fills the cores between the stream's GEMMs.
      for (int64_t b = 0; b < full.num_blocks(); ++b) {
        const int64_t last_step = full.BlockEnd(b) - 1;
        tbb::task_group pipeline;
        if (b + 1 < full.num_blocks()) pipeline.run([&full, b] { full.ComputeBlock(b + 1); });
        tbb::parallel_for(0, num_replayed, [&](int i) {
          replays[static_cast<size_t>(replayed[static_cast<size_t>(i)])]->AdvanceThrough(last_step);
        });
        pipeline.wait();
      }
      tbb::parallel_for(0, num_replayed, [&](int i) {
        const auto cell = static_cast<size_t>(replayed[static_cast<size_t>(i)]);
        LayerOutcome& out = outcomes[cell][static_cast<size_t>(l)];
        out.replay = replays[cell]->Finish();
        out.samples = metrics[cell]->TakeSamples();
        replays[cell].reset();
        if (spilling) spilled[cell][static_cast<size_t>(l)] = Spill(*spill, out);
      });
      for (int c = 0; c < num_cells; ++c) {
        instances[static_cast<size_t>(c)][static_cast<size_t>(l)].reset();
        progress.Advance();
      }
      source.Release(l);
    }
  });
  progress.Finish();

  // Rows in plan order: per cell, layers 0..L-1 then `all`.
  const std::string regime = sim::RegimeName(plan.options.regime);
  for (int c = 0; c < num_cells; ++c) {
    const auto cell = static_cast<size_t>(c);
    const CellKey& key = result.cells[cell];
    const auto source_cell = static_cast<size_t>(replayed_by[cell]);
    std::vector<LayerOutcome> unspilled;
    if (spilling) {
      for (int l = 0; l < num_layers; ++l) {
        unspilled.push_back(Unspill(*spill, outcomes[source_cell][static_cast<size_t>(l)],
                                    spilled[source_cell][static_cast<size_t>(l)]));
      }
    }
    const std::vector<LayerOutcome>& cell_outcomes = spilling ? unspilled : outcomes[source_cell];
    sim::MemoryLedger ledger;
    MetricSamples all_samples;
    ResultRow all;
    all.trace = std::string(trace_name);
    all.policy = key.policy;
    all.params = key.params;
    all.budget = key.budget.text;
    all.regime = regime;
    all.layer = "all";
    // Equal memory (issue 13): the KV bytes the asked budget allows one layer at its peak. Every
    // policy legitimately holds the step's own token above B while it attends (evict-after-attend)
    // and, in the prefill regime, every decode token; more than that (a lazy window, protected
    // layers, a budget-ignoring method) is reported as kv_bytes_over_budget_peak.
    const int64_t asked = key.budget.ResolveTokens(prompt_len, bytes_per_token);
    const int64_t above = plan.options.regime == sim::Regime::kPrefill            ? decode_steps
                          : plan.options.timing == sim::EvictTiming::kAfterAttend ? 1
                                                                                  : 0;
    const int64_t allowed_layer_bytes =
        std::min(asked + above, total_len) * (bytes_per_token / num_layers);
    double budget_sum = 0.0;
    double resident_sum = 0.0;
    for (int l = 0; l < num_layers; ++l) {
      const LayerOutcome& out = cell_outcomes[static_cast<size_t>(l)];
      ResultRow row = LayerRow(all, l, budgets[cell][static_cast<size_t>(l)], total_len, out);
      row.kv_bytes_over_budget_peak = std::max<int64_t>(0, row.kv_bytes_peak - allowed_layer_bytes);
      result.table.Add(row);
      ledger.Merge(out.replay.ledger);
      all_samples.Append(out.samples);
      budget_sum += row.budget_tokens;
      resident_sum += row.resident_tokens_mean;
      all.steps = row.steps;
      all.resident_tokens_peak = std::max(all.resident_tokens_peak, row.resident_tokens_peak);
      all.ranked_victims += row.ranked_victims;
      all.tie_victims += row.tie_victims;
      if (l == 0 || row.mass_recall.mean < all.mass_recall_worst_layer_mean) {
        all.mass_recall_worst_layer_mean = row.mass_recall.mean;  // ties: the lowest layer
        all.worst_layer = row.layer;
      }
      if (l == 0) {
        all.rel_l2_error_worst_layer_mean = row.rel_l2_error.mean;
        all.cosine_worst_layer_mean = row.cosine.mean;
        all.top_recall_worst_layer_mean = row.top_recall_mean;
      } else {  // every layer has the same steps, so a NaN mean (no steps) is in every layer
        all.rel_l2_error_worst_layer_mean =
            std::max(all.rel_l2_error_worst_layer_mean, row.rel_l2_error.mean);
        all.cosine_worst_layer_mean = std::min(all.cosine_worst_layer_mean, row.cosine.mean);
        for (size_t k = 0; k < kTopK.size(); ++k) {
          all.top_recall_worst_layer_mean[k] =
              std::min(all.top_recall_worst_layer_mean[k], row.top_recall_mean[k]);
        }
      }
    }
    all.budget_tokens = budget_sum / num_layers;
    all.mass_recall = Summarize(all_samples.mass_recall);
    all.rel_l2_error = Summarize(all_samples.rel_l2_error);
    all.cosine = Summarize(all_samples.cosine);
    for (size_t k = 0; k < kTopK.size(); ++k) {
      all.top_recall_mean[k] = all_samples.TopRecallMean(k);
    }
    all.resident_tokens_mean = resident_sum / num_layers;
    all.kv_bytes_mean =
        ledger.MeanDecodeBytes(sim::MemoryLedger::kAllLayers, sim::MemoryLedger::kKvCategories);
    all.kv_bytes_peak =
        ledger.PeakBytes(sim::MemoryLedger::kAllLayers, sim::MemoryLedger::kKvCategories).bytes;
    all.kv_bytes_over_budget_peak =
        std::max<int64_t>(0, all.kv_bytes_peak - num_layers * allowed_layer_bytes);
    result.table.Add(all);
    if (plan.keep_ledgers) result.ledgers.push_back(std::move(ledger));
  }
  result.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace

std::vector<CellKey> PlanCells(const SweepPlan& plan) {
  std::vector<CellKey> cells;
  for (const PolicySpec& spec : plan.policies) {
    const std::string params = policies::CheckPolicy(spec.name, spec.params);
    for (const sim::Budget& budget : plan.budgets) {
      cells.push_back(CellKey{spec.name, params, budget});
    }
  }
  return cells;
}

SweepResult RunSweepOnTrace(const SweepPlan& plan,
                            const traces::Trace& trace,
                            std::string_view trace_name) {
  InMemoryLayers source(trace);
  return RunSweepOnLayers(plan, source, trace_name, 0, static_cast<int>(PlanCells(plan).size()));
}

SweepResult RunSweepCells(const SweepPlan& plan,
                          const std::string& trace_path,
                          int first_cell,
                          int num_cells) {
  FileLayers source(trace_path);
  return RunSweepOnLayers(plan, source, std::filesystem::path(trace_path).filename().string(),
                          first_cell, num_cells);
}

SweepResult RunSweep(const SweepPlan& plan) {
  plan.Validate();
  const auto start = std::chrono::steady_clock::now();
  SweepResult result;
  for (const std::string& path : plan.traces) {
    SweepResult one = RunSweepCells(plan, path, 0, static_cast<int>(PlanCells(plan).size()));
    result.table.Append(one.table);
    result.cells = one.cells;
    for (sim::MemoryLedger& ledger : one.ledgers) result.ledgers.push_back(std::move(ledger));
  }
  result.wall_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

}  // namespace kvsim::analysis
