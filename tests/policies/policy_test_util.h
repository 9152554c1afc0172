#pragma once
// Helpers for policy tests: tiny shapes, a brute-force FutureView, and a replay of every layer
// that records each stream's resident positions at every measured step.
#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/model_shape.h"
#include "policies/registry.h"
#include "sim/prefill_attention.h"
#include "sim/random_trace.h"
#include "sim/replay.h"

namespace kvsim::policies::testing {

inline models::ModelShape TinyShape() {
  models::ModelShape shape;
  shape.name = "tiny";
  shape.layers = 2;
  shape.q_heads = 4;
  shape.kv_heads = 2;
  shape.head_dim = 8;
  return shape;
}

// softmax_j(q . k_j / sqrt(d)) over `keys` positions, by plain loops in double.
inline std::vector<double> NaiveSoftmax(const traces::Trace& trace,
                                        int layer,
                                        int q_head,
                                        int64_t query_pos,
                                        const std::vector<int64_t>& keys) {
  const int d = trace.shape().head_dim;
  const int kv = q_head / trace.shape().GroupSize();
  std::vector<double> logits;
  for (const int64_t j : keys) {
    double dot = 0.0;
    for (int c = 0; c < d; ++c) {
      dot += static_cast<double>(trace.layer(layer).queries.Row(q_head, query_pos)[c]) *
             static_cast<double>(trace.layer(layer).keys.Row(kv, j)[c]);
    }
    logits.push_back(dot / std::sqrt(static_cast<double>(d)));
  }
  const double max = *std::max_element(logits.begin(), logits.end());
  double sum = 0.0;
  for (double& l : logits) sum += (l = std::exp(l - max));
  for (double& l : logits) l /= sum;
  return logits;
}

inline std::vector<int64_t> Range(int64_t begin, int64_t end) {
  std::vector<int64_t> r;
  for (int64_t i = begin; i < end; ++i) r.push_back(i);
  return r;
}

// Full-cache attention of one layer by brute force.
class BruteFuture final : public FutureView {
 public:
  BruteFuture(const traces::Trace& trace, int layer) : trace_(trace) {
    for (int h = 0; h < trace.shape().q_heads; ++h) {
      for (int64_t t = trace.meta().prompt_len; t < trace.meta().total_len; ++t) {
        const std::vector<double> w = NaiveSoftmax(trace, layer, h, t, Range(0, t + 1));
        weights_[{h, t}] = std::vector<float>(w.begin(), w.end());
      }
    }
  }
  int64_t prompt_len() const override { return trace_.meta().prompt_len; }
  int64_t total_len() const override { return trace_.meta().total_len; }
  std::span<const float> FullAttention(int q_head, int64_t step) const override {
    return weights_.at({q_head, step});
  }

 private:
  const traces::Trace& trace_;
  std::map<std::pair<int, int64_t>, std::vector<float>> weights_;
};

// resident[layer][step - prompt_len][stream] = sorted resident positions at the step's measure.
using ResidentLog = std::vector<std::vector<std::vector<std::vector<int64_t>>>>;

class ResidentRecorder : public sim::ReplayObserver {
 public:
  void OnMeasure(const sim::MeasureView& view) override {
    std::vector<std::vector<int64_t>> streams;
    for (const StreamView& s : view.streams) streams.push_back(s.cache->SortedPositions());
    steps.push_back(std::move(streams));
  }
  std::vector<std::vector<std::vector<int64_t>>> steps;
};

inline PolicySetup SetupFor(const traces::Trace& trace, int layer, sim::ReplayOptions options) {
  PolicySetup setup;
  setup.shape = trace.shape();
  setup.layer = layer;
  setup.options = options;
  setup.prompt_len = trace.meta().prompt_len;
  setup.total_len = trace.meta().total_len;
  setup.seed = sim::LayerSeed(options.seed, layer);
  return setup;
}

// Replays every layer of `trace` with fresh instances of `name` and records resident sets.
inline ResidentLog ReplayAll(const traces::Trace& trace,
                             const std::string& name,
                             const PolicyParams& params,
                             int64_t budget,
                             sim::ReplayOptions options = {}) {
  const int layers = trace.num_layers();
  std::vector<std::unique_ptr<sim::PrefillAttention>> prefill;
  std::vector<const sim::PrefillAttention*> prefill_ptrs;
  std::vector<std::unique_ptr<EvictionPolicy>> instances;
  std::vector<EvictionPolicy*> ptrs;
  for (int l = 0; l < layers; ++l) {
    prefill.push_back(
        std::make_unique<sim::PrefillAttention>(trace.layer(l), trace.meta().prompt_len));
    prefill_ptrs.push_back(prefill.back().get());
    instances.push_back(MakePolicy(name, params, SetupFor(trace, l, options)));
    ptrs.push_back(instances.back().get());
  }
  const std::vector<int64_t> budgets = sim::PlanLayerBudgets(trace, ptrs, prefill_ptrs, budget);
  ResidentLog log;
  for (int l = 0; l < layers; ++l) {
    BruteFuture future(trace, l);
    sim::LayerReplayInput input;
    input.trace = &trace;
    input.layer = l;
    input.options = options;
    input.budget_tokens = budgets[static_cast<size_t>(l)];
    input.prefill = prefill_ptrs[static_cast<size_t>(l)];
    input.future = &future;
    ResidentRecorder recorder;
    sim::ReplayLayer(input, *instances[static_cast<size_t>(l)], &recorder);
    log.push_back(std::move(recorder.steps));
  }
  return log;
}

}  // namespace kvsim::policies::testing
