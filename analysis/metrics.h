#pragma once
// What a policy loses, measured against the full cache (semantics in sim/README.md, "Metrics").
//
// FullCacheReference is what metrics compare against: the full-cache attention, output, total mass
// and top positions of a decode step. FullCacheAttention holds them for every decode step of a
// layer (small traces, recurrence analysis); a sweep streams them a block of steps at a time
// (analysis/full_attention_stream.h) so memory does not grow with the decode length. LayerMetrics
// observes one layer's replay and keeps every (step, query head) sample; Summarize turns samples
// into mean and percentiles.
#include <Eigen/Dense>
#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "common/tensor.h"
#include "policies/eviction_policy.h"
#include "sim/replay.h"
#include "traces/trace.h"

namespace kvsim::analysis {

// Top-k recall is reported for these k (sweep.csv top{1,8,32}_recall_mean).
inline constexpr std::array<int, 3> kTopK = {1, 8, 32};
inline constexpr int kMaxTopK = 32;

// The full-cache reference of one layer's decode steps (also a FutureView for oracles).
// Implementations say which steps are available at a time.
class FullCacheReference : public policies::FutureView {
 public:
  // Sum of FullAttention(q_head, step) in position order, in double (1 up to float rounding).
  virtual double TotalMass(int q_head, int64_t step) const = 0;
  // Full-cache attention output (head_dim).
  virtual Eigen::Map<const Eigen::RowVectorXf> Output(int q_head, int64_t step) const = 0;
  // The min(32, step + 1) positions of largest weight, by decreasing weight (ties: lower
  // position first).
  virtual std::span<const int64_t> TopPositions(int q_head, int64_t step) const = 0;
};

// Every decode step's full-cache reference of one layer, in memory: O(Hq * steps * T) floats.
class FullCacheAttention final : public FullCacheReference {
 public:
  // Computes softmax(q_t . k_j / sqrt(d)) over j <= t for every decode step t and query head of
  // `layer`, the outputs and the top-32 positions. O(Hq * steps * T * d). Uses the calling
  // thread plus TBB workers (parallel over query heads; deterministic). Keeps no reference to
  // the trace.
  FullCacheAttention(const traces::Trace& trace, int layer);

  int layer() const { return layer_; }
  int64_t prompt_len() const override { return prompt_len_; }
  int64_t total_len() const override { return total_len_; }
  int num_q_heads() const { return num_q_heads_; }
  // Weights over positions [0, step].
  std::span<const float> FullAttention(int q_head, int64_t step) const override;
  double TotalMass(int q_head, int64_t step) const override;
  Eigen::Map<const Eigen::RowVectorXf> Output(int q_head, int64_t step) const override;
  std::span<const int64_t> TopPositions(int q_head, int64_t step) const override;

 private:
  size_t Index(int q_head, int64_t step) const;

  int layer_;
  int64_t prompt_len_;
  int64_t total_len_;
  int num_q_heads_;
  int head_dim_;
  std::vector<RowMatrixXf> weights_;  // [q_head]: steps x T, zero past the step's position
  std::vector<RowMatrixXf> outputs_;  // [q_head]: steps x d
  std::vector<int64_t> top_;          // [q_head][step][kMaxTopK], -1 padded
  std::vector<double> total_mass_;    // [q_head][step]
};

// Samples of one layer (or of several, concatenated in layer order), one per (decode step,
// query head), step-major.
struct MetricSamples {
  std::vector<float> mass_recall;
  std::vector<float> rel_l2_error;
  std::vector<float> cosine;
  // Top-k recall enters results only as a mean: a running sum (in double, in sample order) and a
  // count instead of samples halves the memory of a long sweep's samples.
  std::array<double, kTopK.size()> top_recall_sum{};
  int64_t top_recall_count = 0;

  // NaN when there are no samples (as Mean).
  double TopRecallMean(size_t k) const;
  void Append(const MetricSamples& other);
};

struct Summary {
  double mean = 0.0;
  double p5 = 0.0;
  double p50 = 0.0;
  double p95 = 0.0;
};

// Percentile q in [0, 1] of `values` by linear interpolation between order statistics (numpy's
// default, Hyndman-Fan type 7): sorted x, h = (N-1) q, x[floor h] + (h - floor h)(x[ceil h] -
// x[floor h]). REQUIRES !values.empty().
double Percentile(std::span<const float> values, double q);
// Mean (summed in order, in double) and p5/p50/p95; NaN ("does not apply") for no samples.
Summary Summarize(std::span<const float> values);
double Mean(std::span<const float> values);

// Observer of one layer's replay: compares every measured step with `full`.
// mass recall = (resident mass, summed in slot order) / TotalMass; a stream that never evicted
// has slots in position order, so `full` gets exactly 1. When a stream holds every position
// <= t with pristine entries, its output IS the full output: error 0 and cosine 1 exactly,
// rather than the ~1e-7 the two float summation paths would differ by.
class LayerMetrics final : public sim::ReplayObserver {
 public:
  explicit LayerMetrics(const FullCacheReference& full) : full_(full) {}
  void OnMeasure(const sim::MeasureView& view) override;
  const MetricSamples& samples() const { return samples_; }
  MetricSamples TakeSamples() { return std::move(samples_); }

 private:
  const FullCacheReference& full_;
  MetricSamples samples_;
};

}  // namespace kvsim::analysis
