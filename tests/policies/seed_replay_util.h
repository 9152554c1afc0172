#pragma once
// Test helpers for the seed policies (lagkv, cake, d2o): hand-built traces and a full replay
// (planning hooks + every layer through the real engine) that records what each stream holds at
// every measured decode step.
#include <Eigen/Dense>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "models/model_shape.h"
#include "policies/registry.h"
#include "sim/prefill_attention.h"
#include "sim/replay.h"
#include "traces/trace.h"

namespace kvsim::policies::seed_testing {

inline models::ModelShape Shape(int layers, int q_heads, int kv_heads, int head_dim) {
  models::ModelShape shape;
  shape.name = "seed-test";
  shape.layers = layers;
  shape.q_heads = q_heads;
  shape.kv_heads = kv_heads;
  shape.head_dim = head_dim;
  return shape;
}

// A zero-filled trace; tests set the rows they need.
inline traces::Trace ZeroTrace(const models::ModelShape& shape,
                               int64_t prompt_len,
                               int64_t total_len) {
  traces::TraceMeta meta;
  meta.shape = shape;
  meta.prompt_len = prompt_len;
  meta.total_len = total_len;
  meta.storage = traces::StorageType::kFloat32;
  meta.token_ids.assign(static_cast<size_t>(total_len), 0);
  std::vector<traces::LayerTensors> layers(static_cast<size_t>(shape.layers));
  for (traces::LayerTensors& l : layers) {
    l.queries = HeadTensor(shape.q_heads, total_len, shape.head_dim);
    l.keys = HeadTensor(shape.kv_heads, total_len, shape.head_dim);
    l.values = HeadTensor(shape.kv_heads, total_len, shape.head_dim);
  }
  return traces::Trace(std::move(meta), std::move(layers));
}

inline void SetRow(HeadTensor& tensor, int head, int64_t pos, std::initializer_list<float> row) {
  float* out = tensor.Row(head, pos);
  for (float x : row) *out++ = x;
}

// What one stream held at one measured step (evict-after-attend: before that step's eviction).
struct StreamSnapshot {
  std::vector<int64_t> positions;  // sorted
  RowMatrixXf keys;                // rows in `positions` order
  RowMatrixXf values;
  std::vector<int32_t> merge_counts;
};

struct ReplayRecord {
  std::vector<int64_t> layer_budgets;
  int64_t slack = 0;  // layer 0's declared slack
  // snapshots[layer][step - prompt_len][stream]
  std::vector<std::vector<std::vector<StreamSnapshot>>> snapshots;
  std::vector<sim::LayerReplayResult> results;
};

class Recorder : public sim::ReplayObserver {
 public:
  void OnMeasure(const sim::MeasureView& view) override {
    std::vector<StreamSnapshot>& step = steps.emplace_back();
    for (const StreamView& stream : view.streams) {
      StreamSnapshot snap;
      snap.positions = stream.cache->SortedPositions();
      const int d = stream.cache->head_dim();
      snap.keys.resize(static_cast<Eigen::Index>(snap.positions.size()), d);
      snap.values.resize(static_cast<Eigen::Index>(snap.positions.size()), d);
      for (size_t i = 0; i < snap.positions.size(); ++i) {
        const int64_t slot = stream.cache->SlotOf(snap.positions[i]);
        snap.keys.row(static_cast<Eigen::Index>(i)) = stream.cache->KeyRow(slot);
        snap.values.row(static_cast<Eigen::Index>(i)) = stream.cache->ValueRow(slot);
        snap.merge_counts.push_back(stream.cache->entries()[static_cast<size_t>(slot)].merge_count);
      }
      step.push_back(std::move(snap));
    }
  }
  std::vector<std::vector<StreamSnapshot>> steps;
};

inline ReplayRecord ReplayAll(const traces::Trace& trace,
                              const std::string& name,
                              std::map<std::string, std::string, std::less<>> params,
                              int64_t budget,
                              sim::ReplayOptions options = {}) {
  const int layers = trace.num_layers();
  const int64_t n = trace.meta().prompt_len;
  std::vector<std::unique_ptr<sim::PrefillAttention>> prefill;
  std::vector<std::unique_ptr<EvictionPolicy>> policies;
  std::vector<EvictionPolicy*> raw;
  std::vector<const sim::PrefillAttention*> raw_prefill;
  for (int l = 0; l < layers; ++l) {
    prefill.push_back(std::make_unique<sim::PrefillAttention>(trace.layer(l), n));
    PolicySetup setup;
    setup.shape = trace.shape();
    setup.layer = l;
    setup.options = options;
    setup.prompt_len = n;
    setup.total_len = trace.meta().total_len;
    setup.seed = sim::LayerSeed(options.seed, l);
    policies.push_back(MakePolicy(name, PolicyParams(params), setup));
    raw.push_back(policies.back().get());
    raw_prefill.push_back(prefill.back().get());
  }
  ReplayRecord record;
  record.layer_budgets = sim::PlanLayerBudgets(trace, raw, raw_prefill, budget);
  record.slack = raw[0]->BudgetSlackTokens();
  for (int l = 0; l < layers; ++l) {
    sim::LayerReplayInput input;
    input.trace = &trace;
    input.layer = l;
    input.options = options;
    input.budget_tokens = record.layer_budgets[static_cast<size_t>(l)];
    input.prefill = raw_prefill[static_cast<size_t>(l)];
    Recorder recorder;
    record.results.push_back(sim::ReplayLayer(input, *raw[static_cast<size_t>(l)], &recorder));
    record.snapshots.push_back(std::move(recorder.steps));
  }
  return record;
}

// Positions below the prompt length held at the first decode step (the prefill selection).
inline std::vector<int64_t> PromptKept(const StreamSnapshot& snap, int64_t prompt_len) {
  std::vector<int64_t> kept;
  for (int64_t p : snap.positions) {
    if (p < prompt_len) kept.push_back(p);
  }
  return kept;
}

}  // namespace kvsim::policies::seed_testing
