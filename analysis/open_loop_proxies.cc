#include "analysis/open_loop_proxies.h"

#include <memory>

#include "sim/prefill_attention.h"
#include "sim/replay.h"

namespace kvsim::analysis {

OpenLoopProxies ReplayOpenLoop(const models::LlamaModel& model,
                               const sim::ClosedLoopResult& run,
                               const sim::ClosedLoopOptions& options,
                               const sim::LayerPolicyFactory& make_policy) {
  const traces::Trace& trace = run.full_trace;
  const int layers = trace.num_layers();
  const int64_t n = trace.meta().prompt_len;
  const int64_t steps = trace.meta().decode_len();
  const int q_heads = trace.shape().q_heads;
  std::vector<std::unique_ptr<policies::EvictionPolicy>> owned;
  std::vector<policies::EvictionPolicy*> raw;
  std::vector<std::unique_ptr<sim::PrefillAttention>> prefill_owned;
  std::vector<const sim::PrefillAttention*> prefill;
  sim::ModelContext context{.model = &model,
                            .prompt_state = &run.prompt_state,
                            .prompt_queries = {},
                            .prompt_len = n,
                            .first_token = run.full_tokens[static_cast<size_t>(n)],
                            .budget_tokens = options.budget_tokens,
                            .eos_token = options.eos_token};
  for (int l = 0; l < layers; ++l) context.prompt_queries.push_back(&trace.layer(l).queries);
  for (int l = 0; l < layers; ++l) {
    const policies::PolicySetup setup{.shape = trace.shape(),
                                      .layer = l,
                                      .options = options.replay,
                                      .prompt_len = n,
                                      .total_len = trace.meta().total_len,
                                      .seed = sim::LayerSeed(options.replay.seed, l)};
    owned.push_back(make_policy(setup));
    raw.push_back(owned.back().get());
    if (auto* in_loop = dynamic_cast<sim::ModelInLoopPolicy*>(raw.back())) {
      in_loop->AttachModel(context);
    }
    prefill_owned.push_back(std::make_unique<sim::PrefillAttention>(trace.layer(l), n));
    prefill.push_back(prefill_owned.back().get());
  }
  const std::vector<int64_t> budgets =
      sim::PlanLayerBudgets(trace, raw, prefill, options.budget_tokens);
  OpenLoopProxies out;
  out.step_mass_recall.assign(static_cast<size_t>(steps), 0.0);
  out.step_rel_l2_error.assign(static_cast<size_t>(steps), 0.0);
  out.step_cosine.assign(static_cast<size_t>(steps), 0.0);
  for (int l = 0; l < layers; ++l) {
    const FullCacheAttention full(trace, l);
    LayerMetrics metrics(full);
    const sim::LayerReplayInput input{.trace = &trace,
                                      .layer = l,
                                      .options = options.replay,
                                      .budget_tokens = budgets[static_cast<size_t>(l)],
                                      .prefill = prefill[static_cast<size_t>(l)],
                                      .future = &full};
    sim::ReplayLayer(input, *raw[static_cast<size_t>(l)], &metrics);
    const MetricSamples& s = metrics.samples();
    for (int64_t k = 0; k < steps; ++k) {
      for (int h = 0; h < q_heads; ++h) {
        const auto i = static_cast<size_t>(k * q_heads + h);
        out.step_mass_recall[static_cast<size_t>(k)] += s.mass_recall[i];
        out.step_rel_l2_error[static_cast<size_t>(k)] += s.rel_l2_error[i];
        out.step_cosine[static_cast<size_t>(k)] += s.cosine[i];
      }
    }
    out.layer_mass_recall.push_back(Mean(s.mass_recall));
    out.all.Append(s);
  }
  const double per_step = static_cast<double>(layers * q_heads);
  for (int64_t k = 0; k < steps; ++k) {
    out.step_mass_recall[static_cast<size_t>(k)] /= per_step;
    out.step_rel_l2_error[static_cast<size_t>(k)] /= per_step;
    out.step_cosine[static_cast<size_t>(k)] /= per_step;
  }
  return out;
}

}  // namespace kvsim::analysis
